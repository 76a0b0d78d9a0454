//! The host side of the test harness, shared by both backends.
//!
//! One interpreter instance runs the tests of a job from some index on (see `harness.py`),
//! announcing each with a `start` marker and closing it with an `end` marker carrying the
//! outcome. Markers begin with a random per-job token the solution cannot guess, so
//! printing a fake "pass" earns nothing; a test passes only when its own `end … pass`
//! marker arrives. When an instance dies mid-test (trap, timeout, `os._exit`, closed
//! stdout, output flood), that test gets the matching outcome and a fresh instance goes on
//! with the next test — a hung or hostile test fails only itself.

use std::time::Instant;

use rand::Rng;

use crate::job::{Job, JobResult, Limits, Outcome, TestResult};

/// The harness program, run as `python -I -S -B -c HARNESS` with the payload on stdin.
pub const HARNESS: &str = include_str!("harness.py");

/// How an interpreter instance ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceEnd {
    /// The process / module exited by itself with this code.
    Exited(i32),
    /// We stopped it: the running test exceeded its budget.
    TestTimeout,
    /// We stopped it: the job budget ran out.
    JobTimeout,
    /// The memory cap was hit at a level Python could not turn into `MemoryError`.
    Memory,
    /// The output channel filled up.
    OutputFull,
    /// A trap, a signal, or another abnormal end.
    Crashed(String),
}

/// Marker events parsed from an instance's stdout.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The syntax check finished (true: the solution compiles).
    Syntax(bool),
    /// Test i started.
    Start(usize),
    /// Test i finished with this result.
    End(usize, TestResult),
}

/// Incremental marker parser, fed with output as it arrives. Tracks which test is running
/// and since when, which is how both backends enforce per-test time budgets.
#[derive(Debug)]
pub struct Tracker {
    prefix: Vec<u8>,
    partial: Vec<u8>,
    /// Events in the order the harness wrote them.
    pub events: Vec<Event>,
    /// Bytes of output that were not markers (kept for diagnostics, capped).
    pub other: Vec<u8>,
    running: Option<(usize, Instant)>,
}

const OTHER_CAP: usize = 4096;

impl Tracker {
    /// A tracker that trusts only lines carrying `token`.
    pub fn new(token: &str) -> Self {
        let mut prefix = token.as_bytes().to_vec();
        prefix.push(b'\t');
        Tracker {
            prefix,
            partial: Vec::new(),
            events: Vec::new(),
            other: Vec::new(),
            running: None,
        }
    }

    /// The test currently running and when it started.
    pub fn running(&self) -> Option<(usize, Instant)> {
        self.running
    }

    /// Parses more of the instance's output.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
            } else if self.partial.len() < (1 << 22) {
                self.partial.push(b);
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Some(rest) = line.strip_prefix(self.prefix.as_slice()) else {
            if self.other.len() < OTHER_CAP && !line.is_empty() {
                let room = OTHER_CAP - self.other.len();
                self.other.extend_from_slice(&line[..line.len().min(room)]);
                self.other.push(b'\n');
            }
            return;
        };
        let text = String::from_utf8_lossy(rest);
        let fields: Vec<&str> = text.split('\t').collect();
        let index = fields.get(1).and_then(|i| i.parse::<usize>().ok());
        match (fields.first().copied(), index) {
            (Some("syntax"), _) => self
                .events
                .push(Event::Syntax(fields.get(2) == Some(&"ok"))),
            (Some("start"), Some(i)) => {
                self.running = Some((i, Instant::now()));
                self.events.push(Event::Start(i));
            }
            (Some("end"), Some(i)) if fields.len() >= 7 => {
                let error = fields[3].to_string();
                let outcome = match fields[2] {
                    "pass" => Outcome::Passed,
                    "memory" => Outcome::Memory,
                    _ => Outcome::Failed { error },
                };
                self.running = None;
                self.events.push(Event::End(
                    i,
                    TestResult {
                        outcome,
                        stdout: unhex(fields[4]),
                        stderr: unhex(fields[5]),
                        truncated: fields.get(6) == Some(&"1"),
                    },
                ));
            }
            _ => {}
        }
    }
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A fresh 128-bit token in hex.
pub fn new_token() -> String {
    let mut rng = rand::rng();
    (0..4)
        .map(|_| format!("{:08x}", rng.random::<u32>()))
        .collect()
}

/// The payload an instance reads from stdin (format documented in `harness.py`).
pub fn payload(
    job: &Job,
    token: &str,
    start: usize,
    limits: &Limits,
    audit: Option<&[String]>,
) -> String {
    let mut flags = Vec::new();
    if job.check_syntax {
        flags.push("check_syntax");
    }
    if audit.is_some() {
        flags.push("audit");
    }
    let roots = audit.unwrap_or(&[]);
    let mut out = format!(
        "{token}\n{start}\n{}\n{}\n{}\n{}\n",
        limits.output_bytes,
        flags.join(","),
        job.tests.len(),
        roots.len()
    );
    for item in std::iter::once(&job.solution)
        .chain(&job.tests)
        .chain(roots)
    {
        out.push_str(&format!("{}\n", item.len()));
        out.push_str(item);
    }
    out
}

/// What one instance run returns to the driver.
pub struct InstanceRun {
    /// What the harness reported, test by test.
    pub tracker: Tracker,
    /// How the instance ended.
    pub end: InstanceEnd,
}

/// Runs a job to completion with as many instances as it takes. `run_instance(payload,
/// token, job_deadline)` starts one interpreter and returns its markers and how it ended,
/// or `Err` for a failure of the sandbox itself.
pub fn drive(
    job: &Job,
    limits: &Limits,
    audit: Option<&[String]>,
    mut run_instance: impl FnMut(&str, &str, Instant) -> Result<InstanceRun, String>,
) -> JobResult {
    let started = Instant::now();
    let deadline = started + limits.per_job;
    let n = job.tests.len();
    let mut results: Vec<Option<TestResult>> = vec![None; n];
    let mut syntax_ok = None;
    let mut instances = 0;
    let mut start = 0;
    let elapsed = || started.elapsed().as_secs_f64();
    while start < n || (instances == 0 && job.check_syntax) {
        if Instant::now() >= deadline {
            break;
        }
        let token = new_token();
        let text = payload(job, &token, start, limits, audit);
        instances += 1;
        let run = match run_instance(&text, &token, deadline) {
            Ok(run) => run,
            Err(e) => return JobResult::sandbox_failure(&job.id, e, elapsed()),
        };
        let mut progressed = false;
        let mut open: Option<usize> = None;
        for event in run.tracker.events {
            match event {
                Event::Syntax(ok) => syntax_ok = Some(ok),
                Event::Start(i) if i < n => {
                    open = Some(i);
                    progressed = true;
                }
                Event::End(i, result) if i < n => {
                    if open == Some(i) && results[i].is_none() {
                        results[i] = Some(result);
                    } else {
                        // A second or unannounced end marker: the token leaked or was
                        // forged; never count it as a pass.
                        results[i] = Some(TestResult::bare(Outcome::Failed {
                            error: "TamperedMarker".into(),
                        }));
                    }
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(i) = open {
            let outcome = match &run.end {
                InstanceEnd::TestTimeout | InstanceEnd::JobTimeout => Outcome::Timeout,
                InstanceEnd::Memory => Outcome::Memory,
                InstanceEnd::OutputFull => Outcome::OutputLimit,
                InstanceEnd::Exited(code) => Outcome::Crashed {
                    detail: format!("interpreter exited with code {code} during the test"),
                },
                InstanceEnd::Crashed(detail) => Outcome::Crashed {
                    detail: detail.clone(),
                },
            };
            results[i] = Some(TestResult::bare(outcome));
        }
        // Continue after the last test that has a result.
        let next = results
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        if !progressed && next <= start && start < n {
            let other = String::from_utf8_lossy(&run.tracker.other).into_owned();
            return JobResult::sandbox_failure(
                &job.id,
                format!(
                    "the harness made no progress ({:?}); interpreter output: {}",
                    run.end,
                    other.trim()
                ),
                elapsed(),
            );
        }
        start = next.max(start + usize::from(!progressed));
        if start >= n && !(instances == 0 && job.check_syntax) {
            break;
        }
    }
    let tests = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| TestResult::bare(Outcome::Timeout)))
        .collect();
    JobResult {
        id: job.id.clone(),
        tests,
        syntax_ok,
        sandbox_error: None,
        wall_seconds: elapsed(),
        instances,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_parses_markers_across_chunks() {
        let mut t = Tracker::new("tok");
        t.feed(b"\ntok\tstart\t0\t\t\t\t\t0\nnoise\ntok\tend\t0\tpass\t\t6869\t\t0");
        assert_eq!(t.running().map(|r| r.0), Some(0));
        t.feed(b"\n\ntok\tend\t1\tfail\tAssertionError\t\t\t0\nfake\tend\t2\tpass\t\t\t\t0\n");
        assert_eq!(t.events[0], Event::Start(0));
        assert!(
            matches!(&t.events[1], Event::End(0, r) if r.outcome == Outcome::Passed && r.stdout == "hi")
        );
        assert!(
            matches!(&t.events[2], Event::End(1, r) if r.outcome == Outcome::Failed { error: "AssertionError".into() })
        );
        assert_eq!(t.events.len(), 3, "lines without the token are not markers");
        assert!(String::from_utf8_lossy(&t.other).contains("noise"));
    }

    #[test]
    fn tokens_are_fresh() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
