//! The results of a run: one JSON object (schema [`SCHEMA_VERSION`]) or a readable table.
//!
//! ```text
//! {"version": 1,
//!  "machine": {"cores", "os", "arch"},
//!  "config": {"quick", "records", "seed", ...},
//!  "scenarios": [
//!    {"name", "scenario", "encrypted",
//!     "blazedb": Figure, "floor": Figure,
//!     "ratio": blazedb.value / floor.value,
//!     "target": {"description", "met"} | null,
//!     "details": {...}}]}
//! Figure := {"value", "unit", "higher_is_better", "what", "latency"?: {"samples", "p50_us",
//!            "p99_us", "mean_us", "min_us", "max_us"}}
//! ```
//!
//! The schema is stable: fields are only added, never renamed or removed, without bumping
//! [`SCHEMA_VERSION`]. `ratio` is always BlazeDB over the floor, so for rates below 1 is
//! slower than the floor and for latencies above 1 is slower.

use serde_json::{json, Map, Value};

use crate::stats::Summary;

/// Version of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// One measured figure (BlazeDB's or the floor's).
#[derive(Clone, Debug)]
pub struct Figure {
    /// The number.
    pub value: f64,
    /// Its unit: `rows/s`, `ops/s`, `us`, `ms`, `bytes/record`, `x`.
    pub unit: &'static str,
    /// Whether more is better (rates) or less (latencies, sizes).
    pub higher_is_better: bool,
    /// What exactly was measured, in a sentence (for the floor: the SQL a user would write).
    pub what: String,
    /// The distribution the value was taken from, for latencies.
    pub latency: Option<Summary>,
}

impl Figure {
    /// A rate (higher is better).
    pub fn rate(value: f64, unit: &'static str, what: impl Into<String>) -> Figure {
        Figure {
            value,
            unit,
            higher_is_better: true,
            what: what.into(),
            latency: None,
        }
    }

    /// A cost (lower is better).
    pub fn cost(value: f64, unit: &'static str, what: impl Into<String>) -> Figure {
        Figure {
            value,
            unit,
            higher_is_better: false,
            what: what.into(),
            latency: None,
        }
    }

    /// A latency percentile in `unit` (`us` or `ms`), with its distribution (always in µs).
    pub fn latency(
        value: f64,
        unit: &'static str,
        summary: Summary,
        what: impl Into<String>,
    ) -> Figure {
        Figure {
            value,
            unit,
            higher_is_better: false,
            what: what.into(),
            latency: Some(summary),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("value".into(), num(self.value));
        m.insert("unit".into(), json!(self.unit));
        m.insert("higher_is_better".into(), json!(self.higher_is_better));
        m.insert("what".into(), json!(self.what));
        if let Some(s) = &self.latency {
            m.insert(
                "latency".into(),
                json!({
                    "samples": s.samples,
                    "p50_us": num(s.p50_us),
                    "p99_us": num(s.p99_us),
                    "mean_us": num(s.mean_us),
                    "min_us": num(s.min_us),
                    "max_us": num(s.max_us),
                }),
            );
        }
        Value::Object(m)
    }
}

/// A speed or size target from the issue, and whether this run met it.
#[derive(Clone, Debug)]
pub struct Target {
    /// The target in words.
    pub description: String,
    /// Whether the measured figure meets it.
    pub met: bool,
}

/// One row of the report: a BlazeDB figure beside its floor, measured in the same run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The figure's name, e.g. `read_point_p50`.
    pub name: String,
    /// The scenario that produced it (what `--only` selects).
    pub scenario: &'static str,
    /// Whether both files were SQLCipher-encrypted.
    pub encrypted: bool,
    /// BlazeDB's figure.
    pub blazedb: Figure,
    /// The raw-rusqlite floor's figure.
    pub floor: Figure,
    /// The target, when the issue sets one.
    pub target: Option<Target>,
    /// Extra numbers that explain the figure (counts, byte breakdowns, method).
    pub details: Map<String, Value>,
}

impl Outcome {
    /// BlazeDB's figure over the floor's.
    pub fn ratio(&self) -> f64 {
        self.blazedb.value / self.floor.value
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("scenario".into(), json!(self.scenario));
        m.insert("encrypted".into(), json!(self.encrypted));
        m.insert("blazedb".into(), self.blazedb.to_json());
        m.insert("floor".into(), self.floor.to_json());
        m.insert("ratio".into(), num(self.ratio()));
        m.insert(
            "target".into(),
            match &self.target {
                Some(t) => json!({"description": t.description, "met": t.met}),
                None => Value::Null,
            },
        );
        m.insert("details".into(), Value::Object(self.details.clone()));
        Value::Object(m)
    }
}

/// The machine the run happened on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Logical cores available to the process.
    pub cores: usize,
    /// `linux`, `macos`, ...
    pub os: &'static str,
    /// `x86_64`, `aarch64`, ...
    pub arch: &'static str,
}

impl Machine {
    /// This machine.
    pub fn current() -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The sizes and options it ran with.
    pub config: Map<String, Value>,
    /// The rows, in run order.
    pub outcomes: Vec<Outcome>,
    /// Wall time of the whole run, in seconds.
    pub elapsed_s: f64,
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "version": SCHEMA_VERSION,
            "machine": {
                "cores": self.machine.cores,
                "os": self.machine.os,
                "arch": self.machine.arch,
            },
            "config": Value::Object(self.config.clone()),
            "elapsed_s": num(self.elapsed_s),
            "scenarios": self.outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>(),
        })
    }

    /// The report as a table, one row per outcome, then the targets.
    pub fn to_table(&self) -> String {
        let header = ["figure", "enc", "blazedb", "floor", "ratio", "target"];
        let mut rows: Vec<[String; 6]> = Vec::new();
        for o in &self.outcomes {
            rows.push([
                o.name.clone(),
                if o.encrypted { "yes" } else { "no" }.to_owned(),
                format_figure(&o.blazedb),
                format_figure(&o.floor),
                format!("{:.2}", o.ratio()),
                match &o.target {
                    Some(t) => {
                        format!("{} {}", if t.met { "MET" } else { "MISSED" }, t.description)
                    }
                    None => "-".to_owned(),
                },
            ]);
        }
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                // Text columns align left, numbers right; the last column is not padded.
                match i {
                    0 | 1 => s.push_str(&format!("{cell}{}", " ".repeat(pad))),
                    5 => s.push_str(cell),
                    _ => s.push_str(&format!("{}{cell}", " ".repeat(pad))),
                }
                if i + 1 < cells.len() {
                    s.push_str("  ");
                }
            }
            s.trim_end().to_owned() + "\n"
        };
        let mut out = format!(
            "BlazeDB benchmark (schema v{SCHEMA_VERSION}) on {} {} with {} cores, {:.1} s\n",
            self.machine.os, self.machine.arch, self.machine.cores, self.elapsed_s
        );
        out.push_str(
            "ratio = blazedb / floor (rates: < 1 is slower; latencies and sizes: > 1 is slower)\n\n",
        );
        out.push_str(&line(&header.map(str::to_owned)));
        out.push_str(&line(&widths.map(|w| "-".repeat(w))));
        for r in &rows {
            out.push_str(&line(r));
        }
        let targets: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| o.target.is_some())
            .collect();
        let met = targets
            .iter()
            .filter(|o| o.target.as_ref().is_some_and(|t| t.met))
            .count();
        out.push_str(&format!("\ntargets met: {met} of {}\n", targets.len()));
        out
    }
}

/// JSON has no NaN or infinity: those become null.
fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn format_figure(f: &Figure) -> String {
    let v = f.value;
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{} {}", group_thousands(&format!("{v:.digits$}")), f.unit)
}

/// `1234567.8` → `1,234,567.8`.
fn group_thousands(s: &str) -> String {
    let (sign, rest) = s.strip_prefix('-').map_or(("", s), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(blazedb: f64, floor: f64) -> Outcome {
        Outcome {
            name: "insert_batch".into(),
            scenario: "insert_batch",
            encrypted: true,
            blazedb: Figure::rate(blazedb, "rows/s", "blazedb"),
            floor: Figure::rate(floor, "rows/s", "floor"),
            target: Some(Target {
                description: "≥ 50% of floor".into(),
                met: blazedb >= floor / 2.0,
            }),
            details: Map::new(),
        }
    }

    #[test]
    fn json_has_the_stable_shape() {
        let report = Report {
            machine: Machine {
                cores: 2,
                os: "linux",
                arch: "x86_64",
            },
            config: Map::new(),
            outcomes: vec![outcome(50.0, 200.0)],
            elapsed_s: 1.0,
        };
        let v = report.to_json();
        assert_eq!(v["version"], 1);
        assert_eq!(v["machine"]["cores"], 2);
        let s = &v["scenarios"][0];
        assert_eq!(s["name"], "insert_batch");
        assert_eq!(s["encrypted"], true);
        assert_eq!(s["blazedb"]["value"], 50.0);
        assert_eq!(s["floor"]["unit"], "rows/s");
        assert_eq!(s["ratio"], 0.25);
        assert_eq!(s["target"]["met"], false);
        let keys: Vec<&String> = s.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "name",
                "scenario",
                "encrypted",
                "blazedb",
                "floor",
                "ratio",
                "target",
                "details"
            ]
        );
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(num(f64::NAN), Value::Null);
        assert_eq!(num(f64::INFINITY), Value::Null);
        assert_eq!(num(1.5), json!(1.5));
    }

    #[test]
    fn table_groups_digits() {
        assert_eq!(group_thousands("1234567.8"), "1,234,567.8");
        assert_eq!(group_thousands("123"), "123");
        assert_eq!(group_thousands("-1000"), "-1,000");
        let report = Report {
            machine: Machine {
                cores: 2,
                os: "linux",
                arch: "x86_64",
            },
            config: Map::new(),
            outcomes: vec![outcome(123456.0, 200000.0)],
            elapsed_s: 1.0,
        };
        let table = report.to_table();
        assert!(table.contains("123,456 rows/s"), "{table}");
        assert!(table.contains("MET ≥ 50% of floor"), "{table}");
        assert!(table.contains("targets met: 1 of 1"), "{table}");
    }
}
