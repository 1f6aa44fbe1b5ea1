//! A WASI command (`wasi:cli/run`), the most common component that is
//! not a keel plugin. Installing it must fail with "a component of another
//! world" naming what it exports.

fn main() {
    println!("I am a command, not an agent");
}
