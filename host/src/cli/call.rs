//! `keel call`: run a plugin's `handle` once.

use anyhow::Context;
use clap::Args;

use super::progress::CompileSpinner;
use crate::workspace::Workspace;

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The plugin's name.
    pub name: String,
    /// The task input as JSON, or @FILE to read it from a file.
    #[arg(long, short, default_value = "{}")]
    pub input: String,
}

pub async fn call(ws: &Workspace, args: CallArgs) -> anyhow::Result<()> {
    let input = match args.input.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("cannot read --input file {file}"))?,
        None => args.input,
    };
    serde_json::from_str::<serde_json::Value>(&input)
        .with_context(|| "--input is not valid JSON: pass a JSON document, e.g. --input '{\"name\":\"Ada\"}'")?;
    let runtime = ws.runtime()?;
    let plugin = runtime.prepare(&args.name, &CompileSpinner::default())?;
    let outcome = runtime.call_prepared(&plugin, input).await?;
    match serde_json::from_str::<serde_json::Value>(&outcome.output) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{}", outcome.output),
    }
    super::kernel::execute_and_report(&runtime).await
}
