//! One running interpreter instance as the judge sees it, whatever the backend: frames in,
//! frames out, a deadline on every wait, and a way to stop it and learn how it ended.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::harness::{
    code_frame, init_frame, new_token, source_frame, Flood, Frame, FrameReader, GuestRules,
    JobCode, Role,
};
use crate::job::Limits;

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
    /// We stopped it because its job is over (not an outcome of any test).
    Released,
}

/// The backend's side of an instance: stopping it and learning how it ended.
pub trait Control: Send {
    /// Stops the instance if it still runs and returns how it ended (`reason` when it was
    /// still running).
    fn stop(&mut self, reason: InstanceEnd) -> InstanceEnd;
    /// How the instance ended, once its output has closed.
    fn ended(&mut self) -> InstanceEnd;
    /// The start of what it wrote to stderr (diagnostics of a sandbox failure).
    fn stderr(&self) -> Vec<u8>;
}

/// The byte pipes and control of a freshly started instance, as a backend returns them.
pub struct Pipes {
    /// Host → guest stdin.
    pub to_guest: Sender<Vec<u8>>,
    /// Guest fd 1 → host, closed when the guest ends.
    pub from_guest: Receiver<Vec<u8>>,
    /// Stop / end status.
    pub control: Box<dyn Control>,
}

/// Starts interpreter instances: the one thing a backend provides to the judge.
pub trait Launcher: Send + Sync {
    /// Starts `python -I -S -B -c BOOT` confined as the backend confines; the first frame
    /// sent on `to_guest` will be a bootstrap frame (see `harness::BOOT`).
    fn launch(&self, role: Role, limits: &Limits) -> Result<Pipes, String>;
    /// What the harness in each instance must do for its own confinement.
    fn guest_rules(&self) -> GuestRules {
        GuestRules::default()
    }
}

/// What waiting on an instance produced.
#[derive(Debug)]
pub enum Recv {
    /// A complete frame.
    Frame(Frame),
    /// The deadline passed (the instance still runs).
    Timeout,
    /// The instance ended (or was stopped for flooding its output).
    Ended(InstanceEnd),
}

/// A running instance with its role and frame reader.
pub struct Guest {
    pipes: Pipes,
    frames: FrameReader,
    /// Role it plays.
    pub role: Role,
    /// Memory cap it was started with (a trusted instance is reused only under the same).
    pub memory_bytes: u64,
    /// Jobs it has served (trusted instances are retired after [`TRUSTED_JOBS`]).
    pub jobs: u32,
    ended: Option<InstanceEnd>,
}

/// How long an instance may take to start (CPython's own start-up, not a test's time).
const START_BUDGET: Duration = Duration::from_secs(30);

impl Guest {
    /// Starts a fresh instance and waits for its hello. `Err` is a sandbox
    /// failure (the interpreter cannot start, or died before running anything of the
    /// job's).
    pub fn start(
        launcher: &dyn Launcher,
        cache: &InstanceCache,
        role: Role,
        limits: &Limits,
        code: JobCode<'_>,
    ) -> Result<Guest, String> {
        let pipes = match role {
            Role::Untrusted => cache.booted_untrusted(launcher, limits)?,
            Role::Trusted => boot(launcher, cache, role, limits)?,
        };
        let token = new_token();
        let rules = launcher.guest_rules();
        let init = init_frame(role, &token, &rules, limits.output_bytes, code);
        let _ = pipes.to_guest.send(init);
        let mut guest = Guest {
            pipes,
            frames: FrameReader::new(&token),
            role,
            memory_bytes: limits.memory_bytes,
            jobs: 0,
            ended: None,
        };
        match guest.recv(Instant::now() + START_BUDGET) {
            Recv::Frame(f) if f.kind == b'H' => Ok(guest),
            other => {
                let end = guest.stop(InstanceEnd::Released);
                let stderr = String::from_utf8_lossy(&guest.pipes.control.stderr()).into_owned();
                let junk = String::from_utf8_lossy(&guest.frames.junk).into_owned();
                Err(format!(
                    "the {role:?} interpreter did not start ({other:?}, {end:?}); output: {} {}",
                    junk.trim(),
                    stderr.trim()
                ))
            }
        }
    }

    /// Sends a host frame (never blocks: the pipe is buffered).
    pub fn send(&self, frame: Vec<u8>) {
        let _ = self.pipes.to_guest.send(frame);
    }

    /// The next frame, waiting at most until `deadline`.
    pub fn recv(&mut self, deadline: Instant) -> Recv {
        if let Some(end) = &self.ended {
            return Recv::Ended(end.clone());
        }
        loop {
            match self.frames.next_frame() {
                Ok(Some(frame)) => return Recv::Frame(frame),
                Ok(None) => {}
                Err(Flood::FrameTooLarge | Flood::TooMuchOutput) => {
                    return Recv::Ended(self.stop(InstanceEnd::OutputFull));
                }
            }
            match self.pipes.from_guest.recv_deadline(deadline) {
                Ok(bytes) => self.frames.feed(&bytes),
                Err(RecvTimeoutError::Timeout) => return Recv::Timeout,
                Err(RecvTimeoutError::Disconnected) => {
                    let end = self.pipes.control.ended();
                    self.ended = Some(end.clone());
                    return Recv::Ended(end);
                }
            }
        }
    }

    /// Stops the instance (if running) and returns how it ended.
    pub fn stop(&mut self, reason: InstanceEnd) -> InstanceEnd {
        if let Some(end) = &self.ended {
            return end.clone();
        }
        let end = self.pipes.control.stop(reason);
        self.ended = Some(end.clone());
        end
    }

    /// Whether it is still running as far as the host knows.
    pub fn alive(&self) -> bool {
        self.ended.is_none()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop(InstanceEnd::Released);
    }
}

/// What a backend keeps between jobs: the harness compiled by its own interpreter,
/// instances already booting for the next jobs, and idle trusted instances. An untrusted
/// instance never serves a second job. A trusted one may: no solution code runs in it (the
/// harness's `_install_gate` and `_Names`), and the judge returns it only after a job that
/// tripped nothing, ended every test normally, and below [`TRUSTED_JOBS`] jobs.
#[derive(Default)]
pub struct InstanceCache {
    code: OnceLock<Result<Vec<u8>, String>>,
    /// Where the marshalled harness is kept between runs (its name carries the hashes of
    /// the harness and the interpreter, so a stale one is never read).
    code_file: Option<std::path::PathBuf>,
    /// Untrusted instances already booting (harness loaded, waiting for their init), with
    /// the limits they were started under. Each has run nothing of any job. Booting the
    /// next one while a job runs fills the cores' idle time between request and answer.
    spare: Mutex<Vec<(Limits, Pipes)>>,
    idle: Mutex<Vec<Guest>>,
}

/// Jobs a trusted instance serves before it is replaced (bounds whatever dataset code
/// leaves in its modules).
pub const TRUSTED_JOBS: u32 = 64;

/// Booting instances kept at most (jobs with differing limits each leave some).
const MAX_SPARES: usize = 8;

/// Launches an instance and sends it the marshalled harness.
fn boot(
    launcher: &dyn Launcher,
    cache: &InstanceCache,
    role: Role,
    limits: &Limits,
) -> Result<Pipes, String> {
    let code = cache.harness_code(launcher)?;
    let pipes = launcher.launch(role, limits)?;
    let _ = pipes.to_guest.send(code_frame(code));
    Ok(pipes)
}

impl InstanceCache {
    /// A cache that keeps the marshalled harness in `file` between runs (saves starting
    /// one interpreter at every start of the backend).
    pub fn with_code_file(file: std::path::PathBuf) -> Self {
        InstanceCache {
            code_file: Some(file),
            ..InstanceCache::default()
        }
    }

    /// The marshalled harness (compiled on first use by an instance of `launcher`).
    pub fn harness_code(&self, launcher: &dyn Launcher) -> Result<&[u8], String> {
        let load = || {
            let kept = self.code_file.as_ref().and_then(|f| std::fs::read(f).ok());
            match kept {
                Some(code) if !code.is_empty() => Ok(code),
                _ => {
                    let code = compile_harness(launcher)?;
                    if let Some(file) = &self.code_file {
                        keep(file, &code);
                    }
                    Ok(code)
                }
            }
        };
        match self.code.get_or_init(load) {
            Ok(code) => Ok(code),
            Err(e) => Err(e.clone()),
        }
    }

    /// An idle trusted instance started with `limits`' memory cap, if any.
    pub fn take(&self, limits: &Limits) -> Option<Guest> {
        let mut idle = self.idle.lock().ok()?;
        let at = idle
            .iter()
            .position(|g| g.memory_bytes == limits.memory_bytes)?;
        Some(idle.swap_remove(at))
    }

    /// Keeps a healthy trusted instance for the next job.
    pub fn put(&self, guest: Guest) {
        if guest.alive() && guest.role == Role::Trusted && guest.jobs < TRUSTED_JOBS {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(guest);
            }
        }
    }

    /// A fresh, booting untrusted instance for `limits` (a spare when one is ready), and a
    /// new spare started behind it.
    fn booted_untrusted(&self, launcher: &dyn Launcher, limits: &Limits) -> Result<Pipes, String> {
        let spare = self.spare.lock().ok().and_then(|mut spares| {
            let at = spares.iter().position(|(l, _)| l == limits)?;
            Some(spares.swap_remove(at).1)
        });
        let pipes = match spare {
            Some(pipes) => pipes,
            None => boot(launcher, self, Role::Untrusted, limits)?,
        };
        if let Ok(next) = boot(launcher, self, Role::Untrusted, limits) {
            if let Ok(mut spares) = self.spare.lock() {
                if spares.len() >= MAX_SPARES {
                    spares.remove(0);
                }
                spares.push((*limits, next));
            }
        }
        Ok(pipes)
    }
}

/// Writes `bytes` to `file` atomically (a temp file renamed); a failure only costs the
/// next start a compilation.
fn keep(file: &std::path::Path, bytes: &[u8]) {
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = file.with_extension(format!("tmp-{}", crate::harness::new_token()));
    if std::fs::write(&tmp, bytes).is_ok() {
        let _ = std::fs::rename(&tmp, file);
    }
}

/// A short hex digest of the harness program (part of the kept harness's file name).
pub fn harness_digest() -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(crate::harness::HARNESS)
        .chain_update(crate::harness::BOOT)
        .finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Has the backend's interpreter compile the harness and hand it back marshalled.
fn compile_harness(launcher: &dyn Launcher) -> Result<Vec<u8>, String> {
    run_to_end(launcher, source_frame()).map_err(|e| format!("compiling the harness: {e}"))
}

/// Starts an instance with one bootstrap frame and returns everything it wrote to stdout,
/// when it exits with 0 having written something (one-off programs: compiling the
/// harness, unpacking the standard library).
pub fn run_to_end(launcher: &dyn Launcher, frame: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut pipes = launcher.launch(Role::Trusted, &Limits::default())?;
    let _ = pipes.to_guest.send(frame);
    let deadline = Instant::now() + START_BUDGET;
    let mut out = Vec::new();
    loop {
        match pipes.from_guest.recv_deadline(deadline) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(RecvTimeoutError::Timeout) => {
                pipes.control.stop(InstanceEnd::Released);
                return Err("the interpreter did not answer".into());
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    match pipes.control.ended() {
        InstanceEnd::Exited(0) if !out.is_empty() => Ok(out),
        end => Err(format!(
            "the interpreter ended with {end:?}: {}",
            String::from_utf8_lossy(&pipes.control.stderr()).trim()
        )),
    }
}
