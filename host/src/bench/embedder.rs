//! The local sentence embedder: model load time, sentences/s one at a time
//! against batches of [`BATCH`] (the ratio against batch 1 measured in the
//! same run), peak RSS, and end-to-end `recall` latency with the query
//! embedded, at a chosen number of stored notes, against the hashed
//! embedder on the same notes and queries. Last, the same recalls while a
//! background bulk embedding runs, to show the foreground lane is not held
//! up behind it.
//!
//! Notes and queries are synthetic business sentences (company, event,
//! detail), drawn with a fixed seed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Percentiles, percentiles};
use crate::memory::Store;
use crate::memory::audit::AuditEntry;
use crate::memory::semantic::local_embedder::{BACKGROUND_BATCH, BATCH, LocalEmbedder};
use crate::memory::semantic::vector::SplitMix64;
use crate::memory::semantic::{Embedder, HashedEmbedder, NewNote, RecallFilter, SemanticIndex};

/// Sentences embedded per throughput series.
const SENTENCES: usize = 256;
/// Notes committed per batch while filling the store.
const FILL_CHUNK: usize = 1024;
/// Hits per recall.
const K: usize = 10;
const SEED: u64 = 0x6b65_656c;
/// Times each throughput series runs; the fastest counts.
const ROUNDS: usize = 3;

/// What `keel bench embedder` measured.
#[derive(Debug, Clone)]
pub struct EmbedderReport {
    pub model: String,
    pub threads: usize,
    pub load: Duration,
    /// Calls of one sentence.
    pub single_per_s: Rate,
    /// Calls of 8 sentences.
    pub eight_per_s: Rate,
    /// Calls of [`BATCH`] sentences.
    pub batched_per_s: Rate,
    /// One background call of all the sentences (sorted by length inside).
    pub background_per_s: Rate,
    pub notes: usize,
    pub queries: usize,
    pub fill: Duration,
    pub local: Percentiles,
    pub query_embed: Percentiles,
    pub hashed: Percentiles,
    pub local_under_background: Percentiles,
    pub rss_after_load_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// Runs every measurement with the model folder at `model`, `notes` stored
/// notes and `queries` recalls per series.
pub fn run(model: &Path, notes: usize, queries: usize) -> anyhow::Result<EmbedderReport> {
    let started = Instant::now();
    let embedder = Arc::new(
        LocalEmbedder::load(model)
            .map_err(|e| anyhow::anyhow!("{e}: run tests/fetch-model.sh, or pass --model FOLDER"))?,
    );
    let load = started.elapsed();
    let rss_after_load_mib = rss_mib("VmRSS");

    let mut rng = SplitMix64(SEED);
    let sentences: Vec<String> = (0..SENTENCES).map(|_| sentence(&mut rng)).collect();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    embedder.embed(&texts[..BATCH]); // warm-up
    // Best of ROUNDS, series interleaved, so other work on the machine
    // skews the ratios less.
    let (mut single_per_s, mut eight_per_s, mut batched_per_s, mut background_per_s) =
        (Rate::default(), Rate::default(), Rate::default(), Rate::default());
    for _ in 0..ROUNDS {
        single_per_s = single_per_s.best(rate(&texts, 1, |c| embedder.embed(c)));
        eight_per_s = eight_per_s.best(rate(&texts, 8, |c| embedder.embed(c)));
        batched_per_s = batched_per_s.best(rate(&texts, BATCH, |c| embedder.embed(c)));
        background_per_s = background_per_s.best(rate(&texts, texts.len(), |c| embedder.embed_background(c)));
    }

    let dir = tempfile::Builder::new().prefix("keel-bench-").tempdir()?;
    let local_store = Store::open(&dir.path().join("local.redb"))?;
    let hashed_store = Store::open(&dir.path().join("hashed.redb"))?;
    let local_index = SemanticIndex::load(&local_store, embedder.clone())?;
    let hashed_index = SemanticIndex::load(&hashed_store, Arc::new(HashedEmbedder))?;
    let t = Instant::now();
    let mut left = notes;
    while left > 0 {
        let n = left.min(FILL_CHUNK);
        left -= n;
        let batch: Vec<String> = (0..n).map(|_| sentence(&mut rng)).collect();
        for (index, store) in [(&local_index, &local_store), (&hashed_index, &hashed_store)] {
            let new =
                batch.iter().map(|text| NewNote { text: text.clone(), tags: vec![], metadata: serde_json::json!({}) });
            let prepared = index.prepare_many(new.collect(), crate::memory::now_ms())?;
            index.commit_notes(store, "bench", prepared, AuditEntry::allowed("bench", "memory.remember", "bench"))?;
        }
    }
    local_index.wait_indexed();
    hashed_index.wait_indexed();
    let fill = t.elapsed();

    let questions: Vec<String> = (0..queries.max(10)).map(|_| question(&mut rng)).collect();
    let recall = |index: &SemanticIndex| -> anyhow::Result<Percentiles> {
        let filter = RecallFilter::default();
        for q in questions.iter().take(5) {
            index.recall("bench", q, K, &filter, crate::memory::now_ms(), None)?;
        }
        let mut samples = Vec::with_capacity(questions.len());
        for q in &questions {
            let t = Instant::now();
            let hits = index.recall("bench", q, K, &filter, crate::memory::now_ms(), None)?;
            samples.push(t.elapsed());
            anyhow::ensure!(hits.len() == K.min(notes), "recall returned {} hits", hits.len());
        }
        Ok(percentiles(samples))
    };
    let local = recall(&local_index)?;
    let hashed = recall(&hashed_index)?;
    let query_embed = percentiles(
        questions
            .iter()
            .map(|q| {
                let t = Instant::now();
                embedder.embed(&[q]);
                t.elapsed()
            })
            .collect(),
    );

    // Foreground recalls while another thread embeds in the background lane.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (embedder, stop, sentences) = (embedder.clone(), stop.clone(), sentences.clone());
        std::thread::spawn(move || {
            let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
            while !stop.load(Ordering::Relaxed) {
                embedder.embed_background(&texts);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let local_under_background = recall(&local_index);
    stop.store(true, Ordering::Relaxed);
    background.join().map_err(|_| anyhow::anyhow!("the background embedding thread panicked"))?;

    Ok(EmbedderReport {
        model: format!("{} ({})", embedder.id(), model.display()),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load,
        single_per_s,
        eight_per_s,
        batched_per_s,
        background_per_s,
        notes,
        queries: questions.len(),
        fill,
        local,
        query_embed,
        hashed,
        local_under_background: local_under_background?,
        rss_after_load_mib,
        peak_rss_mib: rss_mib("VmHWM"),
    })
}

/// Sentences per wall-clock second and per CPU second (all threads of the
/// process; Linux) embedding `texts` in calls of `batch`.
fn rate(texts: &[&str], batch: usize, embed: impl Fn(&[&str]) -> Vec<Vec<f32>>) -> Rate {
    let (t, cpu) = (Instant::now(), process_cpu_time());
    for chunk in texts.chunks(batch) {
        embed(chunk);
    }
    let wall = texts.len() as f64 / t.elapsed().as_secs_f64();
    let cpu = match (cpu, process_cpu_time()) {
        (Some(a), Some(b)) if b > a => texts.len() as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    Rate { wall, cpu }
}

/// Sentences per second, by the clock and per CPU second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    pub wall: f64,
    pub cpu: f64,
}

impl Rate {
    fn best(self, other: Rate) -> Rate {
        Rate { wall: self.wall.max(other.wall), cpu: self.cpu.max(other.cpu) }
    }
}

/// CPU time of every thread of this process so far, from
/// `/proc/self/task/*/schedstat`; `None` elsewhere.
fn process_cpu_time() -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?);
    }
    Some(total)
}

/// A field of `/proc/self/status` in MiB (Linux); `None` elsewhere.
fn rss_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

const COMPANIES: [&str; 16] = [
    "Acme",
    "Globex",
    "Initech",
    "Northwind",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Oscorp",
    "Vandelay",
    "Nakatomi",
    "Prestige",
];
const EVENTS: [&str; 16] = [
    "asked for a meeting about",
    "paid the invoice for",
    "disputed the charge for",
    "wants a quote for",
    "reported a bug in",
    "renewed the contract for",
    "cancelled the order of",
    "requested a demo of",
    "complained about the delay of",
    "approved the budget for",
    "needs a refund for",
    "signed up for a trial of",
    "asked about discounts on",
    "escalated a ticket about",
    "praised the support for",
    "postponed the rollout of",
];
const THINGS: [&str; 16] = [
    "the analytics dashboard",
    "twelve extra seats",
    "the annual plan",
    "the mobile app",
    "single sign-on",
    "the data export",
    "the API integration",
    "the onboarding workshop",
    "the security review",
    "the March invoice",
    "the reporting module",
    "the translation work",
    "the hosting upgrade",
    "the calendar sync",
    "the pilot project",
    "the training sessions",
];
const WHEN: [&str; 8] = [
    "this week",
    "last Tuesday",
    "before the end of the quarter",
    "next month",
    "today",
    "in May",
    "again",
    "urgently",
];
const QUESTIONS: [&str; 8] = [
    "who wants to talk about {}",
    "which customer is unhappy with {}",
    "any news on {}",
    "money owed for {}",
    "problems reported with {}",
    "what did {} decide",
    "is anyone interested in {}",
    "follow up on {}",
];

fn pick<'a>(rng: &mut SplitMix64, list: &[&'a str]) -> &'a str {
    list[(rng.next_u64() % list.len() as u64) as usize]
}

fn sentence(rng: &mut SplitMix64) -> String {
    let (c, e, t, w) = (pick(rng, &COMPANIES), pick(rng, &EVENTS), pick(rng, &THINGS), pick(rng, &WHEN));
    format!("{c} {e} {t} {w}.")
}

fn question(rng: &mut SplitMix64) -> String {
    let subject = if rng.next_u64().is_multiple_of(2) { pick(rng, &THINGS) } else { pick(rng, &COMPANIES) };
    pick(rng, &QUESTIONS).replace("{}", subject)
}

impl std::fmt::Display for EmbedderReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let mib = |m: Option<f64>| m.map_or("n/a".to_owned(), |m| format!("{m:.0} MiB"));
        writeln!(f, "local embedder: {} on {} threads", self.model, self.threads)?;
        writeln!(f, "model load: {}", ms(self.load))?;
        writeln!(f, "sentences/s, best of {ROUNDS} ({SENTENCES} sentences per series; per CPU second in brackets):")?;
        let one = self.single_per_s;
        for (name, r) in [
            ("calls of 1".to_owned(), one),
            ("calls of 8".to_owned(), self.eight_per_s),
            (format!("calls of {BATCH}"), self.batched_per_s),
            (format!("one call, background lane (batches of {BACKGROUND_BATCH})"), self.background_per_s),
        ] {
            writeln!(
                f,
                "  {name:<46} {:>6.0}/s ({:>4.0}/cpu-s)  {:.2}x batch 1 ({:.2}x)",
                r.wall,
                r.cpu,
                r.wall / one.wall,
                r.cpu / one.cpu
            )?;
        }
        writeln!(f, "RSS after load: {}; peak RSS: {}", mib(self.rss_after_load_mib), mib(self.peak_rss_mib))?;
        writeln!(
            f,
            "recall at {} notes (filled in {:.1} s, both embedders), {} queries, top {K}, query embedding included:",
            self.notes,
            self.fill.as_secs_f64(),
            self.queries
        )?;
        writeln!(f, "{:<34} {:>10} {:>10} {:>12}", "series", "p50", "p99", "p50 vs hashed")?;
        let ratio = |p: &Percentiles| format!("{:.1}x", p.p50.as_secs_f64() / self.hashed.p50.as_secs_f64());
        for (name, p) in [
            ("hashed embedder (baseline)", &self.hashed),
            ("local model", &self.local),
            ("local, query embedding alone", &self.query_embed),
            ("local, background batch running", &self.local_under_background),
        ] {
            writeln!(f, "{name:<34} {:>10} {:>10} {:>12}", ms(p.p50), ms(p.p99), ratio(p))?;
        }
        Ok(())
    }
}
