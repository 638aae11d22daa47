//! The one screen (and its markdown twin for `--report`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::faults::Record;
use crate::ledger::Tally;
use crate::load::{Op, Outcome, Sample};

/// Resident memory of one process over the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub first_kib: u64,
    pub peak_kib: u64,
    pub last_kib: u64,
}

/// Everything the report says.
#[derive(Debug, Default)]
pub struct Findings {
    pub duration_s: u64,
    pub samples: Vec<Sample>,
    pub acknowledged: u64,
    pub gave_up: u64,
    pub tally: Tally,
    pub records: Vec<Record>,
    pub drain_s: u64,
    pub backlog: String,
    pub quiet: bool,
    pub analytics_mismatches: Vec<String>,
    pub dead_letters_expected: Vec<String>,
    pub dead_letters_missing: Vec<String>,
    pub dead_letters_unexpected: Vec<String>,
    /// (row, dropped, state)
    pub unroutable: Vec<(String, bool, String)>,
    pub memory: BTreeMap<String, Memory>,
    pub memory_cap_mib: u64,
    /// Processes that exited without being killed by the schedule.
    pub crashed: Vec<String>,
}

impl Findings {
    pub fn memory_unbounded(&self) -> Vec<String> {
        self.memory
            .iter()
            .filter(|(_, m)| m.peak_kib > self.memory_cap_mib * 1024)
            .map(|(name, m)| format!("{name}: peak {} MiB", m.peak_kib / 1024))
            .collect()
    }

    /// Invariants past lost/doubled/memory that were broken.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.tally.exports_unfinished.iter().cloned());
        out.extend(self.tally.exports_bad_checksum.iter().cloned());
        out.extend(self.tally.poison_applied.iter().cloned());
        if !self.quiet {
            out.push(format!("not quiet after the drain bound: {}", self.backlog));
        }
        out.extend(
            self.analytics_mismatches
                .iter()
                .map(|m| format!("analytics rollup != rebuild: {m}")),
        );
        out.extend(self.dead_letters_missing.iter().cloned());
        out.extend(self.crashed.iter().cloned());
        out.extend(
            self.dead_letters_unexpected
                .iter()
                .map(|d| format!("unexpected dead letter {d}")),
        );
        out.extend(
            self.unroutable
                .iter()
                .filter(|(_, dropped, _)| *dropped)
                .map(|(id, _, state)| {
                    format!("unroutable outbox row {id} marked published (dropped): {state}")
                }),
        );
        out.extend(
            self.records
                .iter()
                .filter(|r| r.recovered_ms.is_none())
                .map(|r| {
                    format!(
                        "no recovery after {} ({})",
                        r.fault.kind(),
                        r.fault.target()
                    )
                }),
        );
        out
    }

    /// The screen. `markdown` wraps it for a file.
    pub fn render(&self, markdown: bool) -> String {
        let mut s = String::new();
        let total = self.samples.len();
        let ok = count(&self.samples, None, Outcome::Ok);
        let errors = count(&self.samples, None, Outcome::Error);
        if markdown {
            let _ = writeln!(s, "# Soak report\n\n```text");
        }
        let _ = writeln!(
            s,
            "keel soak: {} s of load under {} faults",
            self.duration_s,
            self.records.len()
        );
        let _ = writeln!(
            s,
            "requests      {total}  (2xx {ok}, errors {errors}, refused {})",
            total - ok - errors
        );
        for op in Op::ALL {
            let n = self.samples.iter().filter(|x| x.op == op).count();
            if n > 0 {
                let _ = writeln!(
                    s,
                    "  {:<15} {n:>7}  2xx {:>7}  errors {:>5}",
                    op.name(),
                    count(&self.samples, Some(op), Outcome::Ok),
                    count(&self.samples, Some(op), Outcome::Error)
                );
            }
        }
        let _ = writeln!(
            s,
            "acknowledged  {}  (sender gave up after retries: {})",
            self.acknowledged, self.gave_up
        );
        let _ = writeln!(
            s,
            "LOST {}   DOUBLED {}",
            self.tally.lost.len(),
            self.tally.doubled.len()
        );
        let _ = writeln!(s, "duplicates absorbed  {}", self.tally.duplicates_absorbed);
        let _ = writeln!(s, "faults injected      {}", self.records.len());
        let _ = writeln!(s, "longest recovery per fault kind:");
        let mut longest: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for r in &self.records {
            let took = r.recovered_ms.map(|t| t.saturating_sub(r.lifted_ms));
            let slot = longest.entry(r.fault.kind()).or_insert(Some(0));
            *slot = match (*slot, took) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        for (kind, took) in &longest {
            let shown = took.map_or("NOT RECOVERED".to_owned(), |ms| {
                format!("{:.1} s", ms as f64 / 1000.0)
            });
            let _ = writeln!(s, "  {kind:<36} {shown}");
        }
        let _ = writeln!(
            s,
            "error rate inside each fault window (start -> recovered):"
        );
        for r in &self.records {
            let end = r.recovered_ms.unwrap_or(r.lifted_ms);
            let inside: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|x| x.at_ms >= r.started_ms && x.at_ms <= end)
                .collect();
            let failed = inside
                .iter()
                .filter(|x| x.outcome == Outcome::Error)
                .count();
            let rate = if inside.is_empty() {
                0.0
            } else {
                100.0 * failed as f64 / inside.len() as f64
            };
            let _ = writeln!(
                s,
                "  t+{:>4}s {:<36} {:<10} {:>5.1} s  {:>5} req  {:>5.1} % errors{}",
                r.started_ms / 1000,
                r.fault.kind(),
                r.fault.target(),
                end.saturating_sub(r.started_ms) as f64 / 1000.0,
                inside.len(),
                rate,
                if r.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", r.note)
                }
            );
        }
        let _ = writeln!(
            s,
            "quiet after {} s: {}",
            self.drain_s,
            if self.quiet {
                "yes".to_owned()
            } else {
                format!("NO, {}", self.backlog)
            }
        );
        let _ = writeln!(
            s,
            "dead letters: {} expected found, {} missing, {} unexpected",
            self.dead_letters_expected.len(),
            self.dead_letters_missing.len(),
            self.dead_letters_unexpected.len()
        );
        for (id, dropped, _) in &self.unroutable {
            let _ = writeln!(
                s,
                "unroutable outbox row {id}: {}",
                if *dropped {
                    "DROPPED (marked published)"
                } else {
                    "held, not published"
                }
            );
        }
        let _ = writeln!(
            s,
            "memory (RSS MiB first/peak/last, cap {}):",
            self.memory_cap_mib
        );
        for (name, m) in &self.memory {
            let _ = writeln!(
                s,
                "  {name:<10} {:>5} {:>5} {:>5}",
                m.first_kib / 1024,
                m.peak_kib / 1024,
                m.last_kib / 1024
            );
        }
        if !self.tally.lost.is_empty() || !self.tally.doubled.is_empty() {
            let _ = writeln!(s, "lost and doubled by cause:");
            for (cause, n) in causes(&self.tally.lost, "lost")
                .into_iter()
                .chain(causes(&self.tally.doubled, "doubled"))
            {
                let _ = writeln!(s, "  {n:>6}  {cause}");
            }
        }
        // The few invariant lines first: thousands of lost deliveries must
        // not push them off the screen.
        let mut details: Vec<String> = Vec::new();
        details.extend(
            self.memory_unbounded()
                .iter()
                .map(|m| format!("memory: {m}")),
        );
        details.extend(self.violations().iter().map(|v| format!("violated: {v}")));
        details.extend(self.tally.doubled.iter().map(|d| format!("doubled: {d}")));
        details.extend(self.tally.lost.iter().map(|l| format!("lost: {l}")));
        let shown = if markdown { 5_000 } else { 20 };
        if !details.is_empty() {
            let _ = writeln!(s, "findings ({}):", details.len());
            for line in details.iter().take(shown) {
                let _ = writeln!(s, "  {line}");
            }
            if details.len() > shown {
                let _ = writeln!(s, "  ... {} more", details.len() - shown);
            }
        }
        let verdict = if self.tally.lost.is_empty()
            && self.tally.doubled.is_empty()
            && self.memory_unbounded().is_empty()
        {
            "PASS: nothing lost, nothing doubled, memory bounded"
        } else {
            "FAIL: an acknowledged write was lost or doubled, or memory grew past its cap"
        };
        let _ = writeln!(s, "{verdict}");
        if markdown {
            let _ = writeln!(s, "```");
        }
        s
    }
}

fn count(samples: &[Sample], op: Option<Op>, outcome: Outcome) -> usize {
    samples
        .iter()
        .filter(|x| op.is_none_or(|op| x.op == op) && x.outcome == outcome)
        .count()
}

/// Findings grouped by what happened, the ids left out: "webhook github:
/// stored, never applied (status received)" with its count.
fn causes(lines: &[String], what: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lines {
        let (subject, reason) = line.split_once(": ").unwrap_or((line.as_str(), ""));
        let subject = match subject.split_once(' ') {
            // "webhook shopify/<id>" -> "webhook shopify"
            Some(("webhook", rest)) => {
                format!("webhook {}", rest.split('/').next().unwrap_or(rest))
            }
            // "order key <key>" -> "order"; "export <id>" -> "export"
            Some(("order", _)) => "order".to_owned(),
            Some(("export", _)) => "export".to_owned(),
            _ => subject.to_owned(),
        };
        // Counts inside the reason ("3 of 5") stay: they are the finding.
        let reason = if subject.starts_with("events") {
            reason.to_owned()
        } else {
            reason
                .split_whitespace()
                .filter(|w| !w.chars().any(|c| c.is_ascii_digit()) || w.starts_with('('))
                .collect::<Vec<_>>()
                .join(" ")
        };
        *out.entry(format!("{what}: {subject}: {reason}"))
            .or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_group_by_cause_without_their_ids() {
        let lost = vec![
            "webhook github/a1: stored, never applied (status received)".to_owned(),
            "webhook github/b2: stored, never applied (status received)".to_owned(),
            "order key k9: acknowledged, no order".to_owned(),
            "events order.created: 2 of 5 never reached analytics".to_owned(),
        ];
        let grouped = causes(&lost, "lost");
        assert_eq!(
            grouped.get("lost: webhook github: stored, never applied (status received)"),
            Some(&2),
            "{grouped:?}"
        );
        assert_eq!(grouped.get("lost: order: acknowledged, no order"), Some(&1));
        assert_eq!(
            grouped.get("lost: events order.created: 2 of 5 never reached analytics"),
            Some(&1)
        );
    }
}
