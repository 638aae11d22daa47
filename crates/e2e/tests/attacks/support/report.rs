//! Cases and the report file.
//!
//! Every case is one attack: it runs to the end (a failed assertion inside
//! it is caught, recorded and reported, and the next case still runs), and
//! leaves one line in the report file, `class<TAB>case<TAB>outcome<TAB>detail`
//! with outcome `refused` (the attack was stopped as the contract says) or
//! `FAILED`. `scripts/test` counts those lines for its summary. Lines are
//! appended with one `write` each on an `O_APPEND` file, so the parallel
//! test processes never interleave within a line.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;

/// Longest a single case may take before it counts as failed (a hung
/// connection must not stall the class's other cases).
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the lines go: `KEEL_ATTACK_REPORT`, else `attacks-report.tsv` in
/// the target profile folder (next to the service binaries).
pub fn report_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KEEL_ATTACK_REPORT") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|profile| profile.join("attacks-report.tsv"))
        .unwrap_or_else(|| std::env::temp_dir().join("keel-attacks-report.tsv"))
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .chars()
        .take(300)
        .collect()
}

/// The cases of one attack class.
#[derive(Debug)]
pub struct Cases {
    class: &'static str,
    tried: usize,
    failed: Vec<String>,
}

impl Cases {
    pub fn new(class: &'static str) -> Self {
        Self {
            class,
            tried: 0,
            failed: Vec::new(),
        }
    }

    /// Runs one attack. `attack` asserts the refusal (status, problem type)
    /// and the absence of its effect; a panic inside it fails this case only.
    pub async fn case(&mut self, name: &str, attack: impl Future<Output = ()>) {
        self.tried += 1;
        let outcome =
            tokio::time::timeout(CASE_TIMEOUT, AssertUnwindSafe(attack).catch_unwind()).await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(panic)) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
            ),
            Err(_) => Some(format!("no answer within {CASE_TIMEOUT:?}")),
        };
        let line = match &failure {
            None => format!("{}\t{}\trefused\t\n", self.class, one_line(name)),
            Some(why) => format!(
                "{}\t{}\tFAILED\t{}\n",
                self.class,
                one_line(name),
                one_line(why)
            ),
        };
        let path = report_path();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("the attack report file opens");
        // One write per line: O_APPEND keeps it whole among parallel writers.
        file.write_all(line.as_bytes())
            .expect("the report line is written");
        match failure {
            None => eprintln!("attack refused: [{}] {name}", self.class),
            Some(why) => {
                eprintln!("ATTACK NOT REFUSED: [{}] {name}: {why}", self.class);
                self.failed.push(format!("{name}: {}", one_line(&why)));
            }
        }
    }

    /// Fails the test when any case failed, naming every one of them.
    pub fn finish(self, logs: impl FnOnce() -> String) {
        eprintln!(
            "[{}] {} cases tried, {} refused, {} failed",
            self.class,
            self.tried,
            self.tried - self.failed.len(),
            self.failed.len()
        );
        assert!(
            self.failed.is_empty(),
            "[{}] {} of {} attacks were not refused:\n  - {}\n{}",
            self.class,
            self.failed.len(),
            self.tried,
            self.failed.join("\n  - "),
            logs()
        );
    }
}
