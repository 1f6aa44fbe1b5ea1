//! `keel models`, `keel costs` and `keel cache`: how model calls are
//! routed, what they cost and the output cache, for the operator.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::kernel::ledger::utc_day;
use crate::kernel::outbox::IntentState;
use crate::memory::now_ms;
use crate::model::cache;
use crate::model::config::TIERS;
use crate::model::costs::{Totals, micros_text};
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

/// Spend of one scope over the window, with what it bought.
#[derive(Debug, Default, Serialize)]
struct Line {
    name: String,
    #[serde(flatten)]
    totals: Totals,
    /// Executed (non-rejected, non-failed) actions, for plugins.
    #[serde(skip_serializing_if = "Option::is_none")]
    useful_actions: Option<u64>,
    /// Cost divided by useful actions, in micro-units.
    #[serde(skip_serializing_if = "Option::is_none")]
    micros_per_useful_action: Option<u64>,
}

#[derive(Debug, Serialize)]
struct CostReport {
    currency: String,
    since_day: String,
    total: Totals,
    useful_actions: u64,
    micros_per_useful_action: Option<u64>,
    days: Vec<Line>,
    plugins: Vec<Line>,
    models: Vec<Line>,
    workflows: Vec<Line>,
    runs: Vec<Line>,
}

fn per_action(micros: u64, actions: u64) -> Option<u64> {
    (actions > 0).then(|| micros.div_ceil(actions))
}

fn cost_report(ws: &Workspace, days: u64) -> anyhow::Result<CostReport> {
    let now = now_ms();
    let since_day = utc_day(now.saturating_sub((days - 1) * 86_400_000));
    let mut by_day: BTreeMap<String, Totals> = BTreeMap::new();
    let mut scoped: BTreeMap<String, Totals> = BTreeMap::new();
    for (day, scope, totals) in ws.store().model_costs_since(&since_day)? {
        if scope == crate::model::costs::WORKSPACE {
            by_day.entry(day).or_default().add(&totals);
        } else {
            scoped.entry(scope).or_default().add(&totals);
        }
    }
    let mut useful: BTreeMap<String, u64> = BTreeMap::new();
    let mut useful_by_workflow: BTreeMap<String, u64> = BTreeMap::new();
    let mut workflow_of: BTreeMap<String, Option<String>> = BTreeMap::new();
    for intent in ws.store().intents_in(IntentState::Executed, usize::MAX)? {
        if utc_day(intent.updated_at_ms) < since_day {
            continue;
        }
        *useful.entry(intent.plugin).or_default() += 1;
        // Keys of workflow steps start with their run id.
        let run = intent.key.split('/').next().unwrap_or_default().to_owned();
        let workflow = match workflow_of.get(&run) {
            Some(w) => w.clone(),
            None => {
                let w = ws.store().run(&run)?.map(|r| r.workflow);
                workflow_of.insert(run, w.clone());
                w
            }
        };
        if let Some(w) = workflow {
            *useful_by_workflow.entry(w).or_default() += 1;
        }
    }
    let mut total = Totals::default();
    by_day.values().for_each(|t| total.add(t));
    let useful_actions = useful.values().sum();
    let lines = |prefix: &str| -> Vec<Line> {
        scoped
            .iter()
            .filter_map(|(scope, t)| scope.strip_prefix(prefix).map(|name| (name, t)))
            .map(|(name, t)| Line { name: name.to_owned(), totals: *t, ..Line::default() })
            .collect()
    };
    let mut plugins = lines("plugin:");
    for line in &mut plugins {
        let actions = useful.get(&line.name).copied().unwrap_or(0);
        line.useful_actions = Some(actions);
        line.micros_per_useful_action = per_action(line.totals.micros, actions);
    }
    let mut workflows = lines("workflow:");
    for line in &mut workflows {
        let actions = useful_by_workflow.get(&line.name).copied().unwrap_or(0);
        line.useful_actions = Some(actions);
        line.micros_per_useful_action = per_action(line.totals.micros, actions);
    }
    Ok(CostReport {
        currency: ws.config().policy.currency.clone(),
        since_day,
        total,
        useful_actions,
        micros_per_useful_action: per_action(total.micros, useful_actions),
        days: by_day.into_iter().map(|(name, totals)| Line { name, totals, ..Line::default() }).collect(),
        plugins,
        models: lines("model:"),
        workflows,
        runs: lines("run:"),
    })
}

/// `keel costs`.
pub fn costs(ws: &Workspace, args: CostsArgs) -> anyhow::Result<()> {
    let report = cost_report(ws, args.days)?;
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
