//! `keel models`, `keel costs` and `keel cache`: how model calls are
//! routed, what they cost and the output cache, for the operator.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};

use crate::model::cache;
use crate::model::config::TIERS;
use crate::model::costs::micros_text;
use crate::model::report::{Line, cost_report};
use crate::workspace::Workspace;

#[derive(Debug, Args)]
pub struct CostsArgs {
    /// How many UTC days back, today included.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub days: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Delete every cached model answer (audited).
    Clear,
}

/// `keel costs`.
pub fn costs(ws: &Workspace, args: CostsArgs) -> anyhow::Result<()> {
    let report = cost_report(ws.store(), &ws.config().policy.currency, args.days)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let c = &report.currency;
    let t = &report.total;
    println!(
        "model spend since {} (UTC): {} {c} over {} calls ({} from the cache)",
        report.since_day,
        micros_text(t.micros),
        t.calls,
        t.cached
    );
    let per = report
        .micros_per_useful_action
        .map_or("n/a (no executed actions)".to_owned(), |m| format!("{} {c}", micros_text(m)));
    println!("executed actions: {}; cost per useful action: {per}", report.useful_actions);
    if t.calls == 0 {
        println!("no model calls recorded yet: agents call models through the `model` interface (docs/models.md)");
        return Ok(());
    }
    let table = |title: &str, lines: &[Line]| {
        if lines.is_empty() {
            return;
        }
        println!(
            "\n{title:<36} {:>14} {:>7} {:>7} {:>10} {:>10}",
            format!("cost {c}"),
            "calls",
            "cached",
            "tokens in",
            "out"
        );
        for l in lines {
            let t = &l.totals;
            println!(
                "{:<36} {:>14} {:>7} {:>7} {:>10} {:>10}",
                l.name,
                micros_text(t.micros),
                t.calls,
                t.cached,
                t.input_tokens,
                t.output_tokens
            );
        }
    };
    table("day", &report.days);
    table("model", &report.models);
    table("run", &report.runs);
    if !report.plugins.is_empty() {
        println!(
            "\n{:<36} {:>14} {:>7} {:>9} {:>22}",
            "plugin",
            format!("cost {c}"),
            "calls",
            "actions",
            "cost per useful action"
        );
        for l in &report.plugins {
            let per = l.micros_per_useful_action.map_or("n/a".to_owned(), micros_text);
            println!(
                "{:<36} {:>14} {:>7} {:>9} {:>22}",
                l.name,
                micros_text(l.totals.micros),
                l.totals.calls,
                l.useful_actions.unwrap_or(0),
                per
            );
        }
    }
    Ok(())
}

/// `keel models`: which models serve each tier, prices, budgets, cache.
pub fn models(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let config = &ws.config().model;
    let currency = &ws.config().policy.currency;
    let kernel = ws.kernel()?;
    let status = kernel.models().provider_status();
    let cached = cache::count(ws.store())?;
    if json {
        let tiers: BTreeMap<&str, Vec<String>> = TIERS
            .iter()
            .map(|t| (*t, config.chain(t).unwrap_or_default().iter().map(ToString::to_string).collect()))
            .collect();
        let value = serde_json::json!({
            "tiers": tiers,
            "providers": status,
            "prices": config.prices,
            "budget": config.budget,
            "cache": { "settings": config.cache, "entries": cached },
            "currency": currency,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("tiers (models tried in order):");
    for tier in TIERS {
        let chain = config.chain(tier).unwrap_or_default();
        let models: Vec<String> = chain
            .iter()
            .map(|m| {
                let price = config.price(m);
                if m.is_offline() {
                    format!("{m} (built in, rule-based, free)")
                } else {
                    format!(
                        "{m} ({} / {} {currency} per million tokens in / out)",
                        micros_text(price.input),
                        micros_text(price.output)
                    )
                }
            })
            .collect();
        println!("  {tier:<6} {}", models.join("  ->  "));
    }
    if let Some(e) = config.escalate {
        println!("  small answers less than {:.2} confident are asked again of `large`", e.below);
    }
    if !status.is_empty() {
        println!("providers:");
        for (name, state) in &status {
            println!("  {name:<12} {state}");
        }
    }
    let b = &config.budget;
    let money = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.2} {currency}"));
    println!("daily budgets: workspace {}, each plugin {}", money(b.daily), money(b.plugin_daily));
    for (plugin, v) in &b.plugins {
        println!("  plugin {plugin}: {v:.2} {currency}");
    }
    let c = &config.cache;
    if c.enabled {
        println!(
            "cache: {cached} answers (of at most {}), kept {} hours; `keel cache clear` empties it",
            c.max_entries, c.ttl_hours
        );
    } else {
        println!("cache: off");
    }
    Ok(())
}

/// `keel cache clear`.
pub async fn cache(ws: &Workspace, command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Clear => {
            let removed = ws.kernel()?.models().clear_cache(ws.store()).await?;
            println!("removed {removed} cached model answers");
        }
    }
    Ok(())
}
