//! Allocates 1 MiB chunks forever: the host must stop it with its memory limit.

use keel_sdk::{Error, Outcome, Task, agent};

const CHUNK: usize = 1 << 20;
const PAGE: usize = 4096;

fn handle(_task: Task) -> Result<Outcome, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Touch every page so the allocation is really used.
        for byte in chunk.iter_mut().step_by(PAGE) {
            *byte = 1;
        }
        hoard.push(core::hint::black_box(chunk));
        core::hint::black_box(&hoard);
    }
}

agent!(handle);
