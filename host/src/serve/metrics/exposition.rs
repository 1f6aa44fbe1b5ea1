//! The Prometheus text exposition format, version 0.0.4: a `# HELP` and a
//! `# TYPE` line per family, then its samples, label values escaped.

use std::fmt::Write as _;

/// What a family is, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Only `_sum` and `_count` (no quantiles).
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// Observations in buckets with fixed upper bounds (not cumulative here;
/// written cumulatively).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus one for values above the last.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// A name Prometheus accepts: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
fn value_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// Starts family `name`: its help (one line, escaped) and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name}");
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", value_text(value));
    }

    /// A whole histogram under `name`: cumulative `_bucket` samples ending
    /// in `+Inf`, then `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| value_text(*b));
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", value_text(h.sum));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// A summary without quantiles: `_sum` and `_count`.
    pub fn summary(&mut self, name: &str, labels: &[(&str, &str)], sum: f64, count: u64) {
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", value_text(sum));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (name, value)) in all.enumerate() {
            debug_assert!(valid_name(name) && !name.contains(':'), "label name {name}");
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(name);
            self.out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_histograms_are_cumulative() {
        let mut e = Exposition::default();
        e.family("keel_x_total", Kind::Counter, "Things.\nMore \\ things.");
        e.sample("keel_x_total", &[("name", "a\"b\\c\nd")], 3.0);
        let mut h = Histogram::new(&[0.5, 1.0]);
        for v in [0.25, 0.75, 1.0, 5.5] {
            h.observe(v);
        }
        e.family("keel_d_seconds", Kind::Histogram, "Durations.");
        e.histogram("keel_d_seconds", &[("w", "x")], &h);
        let text = e.finish();
        assert!(text.contains("# HELP keel_x_total Things.\\nMore \\\\ things.\n"), "{text}");
        assert!(text.contains("keel_x_total{name=\"a\\\"b\\\\c\\nd\"} 3\n"), "{text}");
        assert!(text.contains("keel_d_seconds_bucket{w=\"x\",le=\"0.5\"} 1\n"), "{text}");
        assert!(text.contains("keel_d_seconds_bucket{w=\"x\",le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("keel_d_seconds_bucket{w=\"x\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("keel_d_seconds_sum{w=\"x\"} 7.5\n"), "{text}");
        assert!(text.contains("keel_d_seconds_count{w=\"x\"} 4\n"), "{text}");
        assert_eq!(value_text(f64::NAN), "NaN");
        assert_eq!(value_text(0.25), "0.25");
    }
}
