//! Runs one job across the two interpreter roles, and is the only place a verdict is formed.
//!
//! The untrusted instance executes the solution and answers requests; the trusted instance
//! runs each test, sending a request whenever the test touches a name the solution
//! defines. The judge forwards requests and answers between them (untrusted answers are
//! only ever plain data or handles, decoded strictly by the trusted side), enforces the
//! per-test and per-job deadlines on whichever side is working, and takes each test's
//! verdict from the trusted instance alone. When the untrusted instance hangs, crashes or
//! floods, the test that was waiting on it gets that outcome, the trusted side is told to
//! abort the test, and a fresh untrusted instance continues with the next test.

use std::time::{Duration, Instant};

use crate::guest::{Guest, InstanceCache, InstanceEnd, Launcher, Recv};
use crate::harness::{host_frame, job_frame, Frame, JobCode, Role, Value};
use crate::job::{Job, JobResult, Limits, Outcome, TestResult, NON_DATA_RESULT};

/// How long the trusted side may take to wind a test down after an abort.
const ABORT_GRACE: Duration = Duration::from_secs(1);
/// Least time the untrusted side gets to end a test (release its objects, hand over output).
const FINISH_MINIMUM: Duration = Duration::from_millis(200);

/// Runs `job` on a fresh untrusted instance from `launcher` (booted ahead by `cache`) and a
/// trusted one from `cache`, returned to it when the job left it clean.
pub fn run_job(
    job: &Job,
    limits: &Limits,
    launcher: &dyn Launcher,
    cache: &InstanceCache,
) -> JobResult {
    let started = Instant::now();
    let mut judge = Judge {
        job,
        limits,
        launcher,
        job_deadline: started + limits.per_job,
        cache,
        trusted: None,
        trusted_clean: true,
        untrusted: None,
        syntax_ok: None,
        seq: 0,
        names_seq: 0,
        instances: 0,
    };
    let outcome = judge.run();
    if let Some(mut trusted) = judge.trusted.take() {
        if judge.trusted_clean {
            trusted.jobs += 1;
            cache.put(trusted);
        }
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok((tests, syntax_ok)) => JobResult {
            id: job.id.clone(),
            tests,
            syntax_ok,
            sandbox_error: None,
            wall_seconds,
            instances: judge.instances,
        },
        Err(error) => JobResult::sandbox_failure(&job.id, error, wall_seconds),
    }
}

struct Judge<'a> {
    job: &'a Job,
    limits: &'a Limits,
    launcher: &'a dyn Launcher,
    cache: &'a InstanceCache,
    job_deadline: Instant,
    trusted: Option<Guest>,
    /// No test of this job tripped the trusted side's gate, made code at run time, or
    /// ended abnormally: the trusted instance may serve the next job.
    trusted_clean: bool,
    untrusted: Option<Guest>,
    /// Whether the solution parses, as the first untrusted instance said before running it.
    syntax_ok: Option<bool>,
    seq: u64,
    /// Sequence number the untrusted instance's next names announcement carries.
    names_seq: u64,
    instances: u32,
}

/// Why a test's exchange stopped early, when it did.
enum Cut {
    /// The untrusted side answered the reset with an exception (the solution failed to run).
    Raised(String),
    /// An instance timed out, died or flooded: the test's outcome.
    Outcome(Outcome),
}

impl Judge<'_> {
    fn run(&mut self) -> Result<(Vec<TestResult>, Option<bool>), String> {
        if self.job.check_syntax && self.job.tests.is_empty() {
            self.untrusted()?;
        }
        let mut tests = Vec::with_capacity(self.job.tests.len());
        for index in 0..self.job.tests.len() {
            if Instant::now() >= self.job_deadline {
                break;
            }
            tests.push(self.test(index)?);
        }
        tests.resize(self.job.tests.len(), TestResult::bare(Outcome::Timeout));
        Ok((tests, self.syntax_ok.filter(|_| self.job.check_syntax)))
    }

    /// A running untrusted instance, started when there is none. A fresh one first says
    /// whether the solution parses (`S`, sent before it runs any of it: a parser crash
    /// costs that instance, never a verdict).
    fn untrusted(&mut self) -> Result<(), String> {
        if self.untrusted.is_some() {
            return Ok(());
        }
        let code = JobCode {
            setup: &self.job.setup,
            solution: &self.job.solution,
        };
        let guest = Guest::start(
            self.launcher,
            self.cache,
            Role::Untrusted,
            self.limits,
            code,
        )?;
        self.untrusted = Some(guest);
        self.names_seq = 0;
        self.instances += 1;
        let deadline = self.test_deadline();
        match self.await_untrusted(deadline) {
            Ok(frame) if frame.kind == b'S' && frame.seq == 0 => {
                self.syntax_ok.get_or_insert(frame.payload == b"ok");
            }
            Ok(_) => self.drop_untrusted(),
            // Only the parser ran: an interpreter that dies or hangs parsing the solution
            // has found it unparseable.
            Err(_) => {
                self.syntax_ok.get_or_insert(false);
            }
        }
        Ok(())
    }

    fn test(&mut self, index: usize) -> Result<TestResult, String> {
        self.trusted()?;
        self.untrusted()?;
        let deadline = self.test_deadline();
        let mut result = match self.reset(deadline) {
            Ok(names) => self.exchange(index, names, deadline),
            Err(Cut::Raised(error)) => TestResult::bare(Outcome::Failed { error }),
            Err(Cut::Outcome(outcome)) => TestResult::bare(outcome),
        };
        self.finish_untrusted(&mut result, deadline);
        Ok(result)
    }

    /// The names of the solution's fresh execution, which the untrusted instance announces
    /// on its own after starting and after ending each test.
    fn reset(&mut self, deadline: Instant) -> Result<Vec<u8>, Cut> {
        let seq = self.names_seq;
        let reply = self.await_untrusted(deadline);
        match reply.map_err(Cut::Outcome)? {
            Frame {
                kind: b'N',
                seq: s,
                payload,
            } if s == seq => Ok(payload),
            Frame {
                kind: b'X',
                seq: s,
                payload,
            } if s == seq => Err(Cut::Raised(exception_name(&payload))),
            _ => {
                self.drop_untrusted();
                Err(Cut::Raised("protocol violation".into()))
            }
        }
    }

    /// Runs test `index` on the trusted side, forwarding its requests, until its verdict.
    fn exchange(&mut self, index: usize, names: Vec<u8>, deadline: Instant) -> TestResult {
        let test = Value::Seq(vec![
            Value::Int(index as i64),
            Value::Int(self.limits.output_bytes as i64),
            Value::Bytes(self.job.tests[index].as_bytes().to_vec()),
            Value::Bytes(names),
        ]);
        let mut payload = Vec::new();
        test.encode(&mut payload);
        let seq = self.next_seq();
        let Some(trusted) = self.trusted.as_mut() else {
            return TestResult::bare(crashed("the trusted interpreter is gone"));
        };
        trusted.send(host_frame(b'T', seq, &payload));
        let mut decided: Option<Outcome> = None;
        let mut wait_until = deadline;
        loop {
            let Some(trusted) = self.trusted.as_mut() else {
                return TestResult::bare(
                    decided.unwrap_or_else(|| crashed("trusted interpreter lost")),
                );
            };
            match trusted.recv(wait_until) {
                Recv::Frame(f) if f.kind == b'C' => {
                    if let Some(cut) = self.forward(f, decided.is_some(), deadline) {
                        decided.get_or_insert(cut);
                        wait_until = Instant::now() + ABORT_GRACE;
                    }
                }
                Recv::Frame(f) if f.kind == b'D' && f.seq == seq => {
                    let normal = decided.is_none();
                    let (result, tripped) = verdict(&f.payload, decided);
                    self.trusted_clean &= !tripped && normal;
                    return result;
                }
                Recv::Frame(_) => {
                    self.drop_trusted(InstanceEnd::Released);
                    return TestResult::bare(
                        decided.unwrap_or_else(|| crashed("trusted protocol")),
                    );
                }
                Recv::Timeout => {
                    self.drop_trusted(InstanceEnd::TestTimeout);
                    return TestResult::bare(decided.unwrap_or(Outcome::Timeout));
                }
                Recv::Ended(end) => {
                    self.trusted = None;
                    self.trusted_clean = false;
                    return TestResult::bare(decided.unwrap_or_else(|| trusted_outcome(&end)));
                }
            }
        }
    }

    /// Forwards one request of the trusted side and relays the answer; `Some(outcome)` when
    /// the untrusted side timed out, died or flooded (the trusted side is told to abort).
    fn forward(&mut self, request: Frame, aborted: bool, deadline: Instant) -> Option<Outcome> {
        let reply_seq = request.seq;
        let relay = |judge: &mut Self, kind: u8, payload: &[u8]| {
            if let Some(trusted) = judge.trusted.as_ref() {
                trusted.send(host_frame(kind, reply_seq, payload));
            }
        };
        if aborted || self.untrusted.is_none() {
            // Decided already, or the instance was dropped for a protocol violation.
            relay(self, b'A', b"");
            return None;
        }
        let seq = self.next_seq();
        match self.ask_untrusted(host_frame(b'C', seq, &request.payload), deadline) {
            Ok(Frame {
                kind,
                seq: s,
                payload,
            }) if (kind == b'V' || kind == b'X') && s == seq => {
                relay(self, kind, &payload);
                None
            }
            Ok(_) => {
                // Out-of-turn frames: this instance's channel can no longer be trusted to
                // pair answers with requests, so it is replaced for the next test.
                self.drop_untrusted();
                relay(self, b'N', b"protocol violation");
                None
            }
            Err(outcome) => {
                relay(self, b'A', b"");
                Some(outcome)
            }
        }
    }

    /// Sends a frame to the untrusted instance and waits for its reply frame.
    fn ask_untrusted(&mut self, frame: Vec<u8>, deadline: Instant) -> Result<Frame, Outcome> {
        if let Some(untrusted) = self.untrusted.as_ref() {
            untrusted.send(frame);
        }
        self.await_untrusted(deadline)
    }

    /// The untrusted instance's next frame; a timeout stops it.
    fn await_untrusted(&mut self, deadline: Instant) -> Result<Frame, Outcome> {
        let Some(untrusted) = self.untrusted.as_mut() else {
            return Err(crashed("the untrusted interpreter is gone"));
        };
        match untrusted.recv(deadline) {
            Recv::Frame(reply) => Ok(reply),
            Recv::Timeout => {
                let reason = if Instant::now() >= self.job_deadline {
                    InstanceEnd::JobTimeout
                } else {
                    InstanceEnd::TestTimeout
                };
                let end = untrusted.stop(reason);
                self.untrusted = None;
                Err(untrusted_outcome(&end))
            }
            Recv::Ended(end) => {
                self.untrusted = None;
                Err(untrusted_outcome(&end))
            }
        }
    }

    /// Ends the test on the untrusted side: its objects are released (their finalizers run
    /// on the test's clock) and what the solution printed is put in front of what the test
    /// printed (informational: it is the untrusted side's own account). A hang or crash
    /// here is the test's outcome.
    fn finish_untrusted(&mut self, result: &mut TestResult, deadline: Instant) {
        if self.untrusted.is_none() {
            return;
        }
        let seq = self.next_seq();
        let deadline = deadline.max(Instant::now() + FINISH_MINIMUM);
        let payload = match self.ask_untrusted(host_frame(b'O', seq, b""), deadline) {
            Ok(Frame {
                kind: b'O',
                seq: s,
                payload,
            }) if s == seq => {
                self.names_seq = seq;
                payload
            }
            Ok(_) => {
                self.drop_untrusted();
                return;
            }
            Err(outcome) => {
                result.outcome = outcome;
                return;
            }
        };
        let parts = Value::decode(&payload);
        let Some([out, err, truncated]) = parts.as_ref().and_then(|v| v.items()) else {
            return;
        };
        let cap = self.limits.output_bytes;
        let join = |mine: &str, theirs: Option<&[u8]>| {
            let mut text = String::from_utf8_lossy(theirs.unwrap_or(b"")).into_owned();
            text.push_str(mine);
            cut_to(text, cap)
        };
        result.stdout = join(&result.stdout, out.bytes());
        result.stderr = join(&result.stderr, err.bytes());
        result.truncated |= *truncated == Value::Bool(true);
    }

    fn drop_untrusted(&mut self) {
        if let Some(mut untrusted) = self.untrusted.take() {
            untrusted.stop(InstanceEnd::Released);
        }
    }

    fn trusted(&mut self) -> Result<&mut Guest, String> {
        if self.trusted.is_none() {
            let guest = match self.cache.take(self.limits) {
                Some(guest) => guest,
                None => {
                    let code = JobCode::default();
                    Guest::start(self.launcher, self.cache, Role::Trusted, self.limits, code)?
                }
            };
            guest.send(job_frame(&self.job.setup, &self.job.entry_points));
            self.trusted = Some(guest);
        }
        self.trusted
            .as_mut()
            .ok_or_else(|| "the trusted interpreter did not start".to_string())
    }

    fn drop_trusted(&mut self, reason: InstanceEnd) {
        self.trusted_clean = false;
        if let Some(mut trusted) = self.trusted.take() {
            trusted.stop(reason);
        }
    }

    fn test_deadline(&self) -> Instant {
        (Instant::now() + self.limits.per_test).min(self.job_deadline)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// The trusted side's verdict `(status, error, stdout, stderr, truncated, tripped)`,
/// unless the judge already decided the test, and whether the trusted side's gate refused
/// anything or saw code made at run time during it (an unreadable verdict counts as
/// tripped).
fn verdict(payload: &[u8], decided: Option<Outcome>) -> (TestResult, bool) {
    let value = Value::decode(payload);
    let Some([status, error, out, err, truncated, tripped]) =
        value.as_ref().and_then(|v| v.items())
    else {
        let result = TestResult::bare(decided.unwrap_or_else(|| crashed("unreadable verdict")));
        return (result, true);
    };
    let error = sanitize(error.text().unwrap_or(""));
    let outcome = decided.unwrap_or(match status.text() {
        Some("pass") => Outcome::Passed,
        Some("memory") => Outcome::Memory,
        _ => Outcome::Failed { error },
    });
    let result = TestResult {
        outcome,
        stdout: String::from_utf8_lossy(out.bytes().unwrap_or(b"")).into_owned(),
        stderr: String::from_utf8_lossy(err.bytes().unwrap_or(b"")).into_owned(),
        truncated: *truncated == Value::Bool(true),
    };
    (result, *tripped != Value::Bool(false))
}

/// The exception type name in an `X` payload `(name, message)`.
fn exception_name(payload: &[u8]) -> String {
    let value = Value::decode(payload);
    let name = value
        .as_ref()
        .and_then(|v| v.items())
        .and_then(|items| items.first())
        .and_then(|name| name.text())
        .unwrap_or("Exception");
    match sanitize(name) {
        s if s.is_empty() => "Exception".into(),
        s if s == "NonDataResult" => NON_DATA_RESULT.into(),
        s => s,
    }
}

/// Keeps names readable and bounded (they come from the untrusted side).
fn sanitize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.- ".contains(*c))
        .take(64)
        .collect()
}

fn cut_to(mut text: String, cap: usize) -> String {
    if text.len() > cap {
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn crashed(detail: &str) -> Outcome {
    Outcome::Crashed {
        detail: detail.into(),
    }
}

fn untrusted_outcome(end: &InstanceEnd) -> Outcome {
    match end {
        InstanceEnd::TestTimeout | InstanceEnd::JobTimeout => Outcome::Timeout,
        InstanceEnd::Memory => Outcome::Memory,
        InstanceEnd::OutputFull => Outcome::OutputLimit,
        InstanceEnd::Exited(code) => crashed(&format!(
            "interpreter exited with code {code} during the test"
        )),
        InstanceEnd::Crashed(detail) => crashed(detail),
        InstanceEnd::Released => crashed("interpreter stopped"),
    }
}

fn trusted_outcome(end: &InstanceEnd) -> Outcome {
    match untrusted_outcome(end) {
        Outcome::Crashed { detail } => crashed(&format!("trusted interpreter: {detail}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_decode_and_the_judge_overrides_them() {
        let v = Value::Seq(vec![
            Value::Str("pass".into()),
            Value::Str(String::new()),
            Value::Bytes(b"hi".to_vec()),
            Value::Bytes(Vec::new()),
            Value::Bool(false),
            Value::Bool(false),
        ]);
        let mut payload = Vec::new();
        v.encode(&mut payload);
        let (r, tripped) = verdict(&payload, None);
        assert!(!tripped);
        assert_eq!(
            (r.outcome.clone(), r.stdout.as_str()),
            (Outcome::Passed, "hi")
        );
        let (r, _) = verdict(&payload, Some(Outcome::Timeout));
        assert_eq!(r.outcome, Outcome::Timeout, "a decided test stays decided");
        let (r, tripped) = verdict(b"garbage", None);
        assert!(matches!(r.outcome, Outcome::Crashed { .. }) && tripped);
    }

    #[test]
    fn exception_names_are_sanitized() {
        let mut payload = Vec::new();
        Value::Seq(vec![
            Value::Str("Bad\n\tName<>".into()),
            Value::Str("m".into()),
        ])
        .encode(&mut payload);
        assert_eq!(exception_name(&payload), "BadName");
        assert_eq!(exception_name(b"junk"), "Exception");
    }
}
