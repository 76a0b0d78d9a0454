//! Process backend (`--sandbox process`): the native `python3` with OS limits.
//!
//! Each instance is a fresh `python3 -I -S -B -c HARNESS` in its own session and process
//! group, with an empty environment, the payload on stdin (closed after), a fresh temp
//! working directory (removed afterwards), and rlimits: address space, CPU seconds, file
//! size, open files, no core dumps. As root it drops to `nobody` (so root-only files such
//! as `~/.ssh` are out of reach and the process limit applies). When the kernel allows it,
//! the instance gets a network namespace with no interfaces ([`ProcessBackend::network_isolated`]
//! says whether that is active; it is never claimed when it is not). The harness also
//! installs a Python audit hook that refuses process creation, threads, sockets, ctypes,
//! signals to other processes, and file access outside the temp dir and the standard
//! library. Time is enforced per test from the markers: the whole process group is killed
//! (SIGKILL) when a test overruns, and a fresh instance continues with the next test.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{drive, InstanceEnd, InstanceRun, Tracker, HARNESS};
use crate::job::{Job, JobResult, Limits};
use crate::{Backend, SandboxError};

const NOBODY: libc::uid_t = 65534;
const NOGROUP: libc::gid_t = 65534;
/// Total stdout bytes read from an instance; beyond it the instance is killed (OutputLimit).
const STDOUT_CAPACITY: usize = 1 << 20;

/// Native CPython under OS limits.
pub struct ProcessBackend {
    python: PathBuf,
    drop_privileges: bool,
    /// Whether instances run in an empty network namespace.
    pub network_isolated: bool,
}

impl ProcessBackend {
    /// Uses `python` (e.g. `/usr/bin/python3`). Probes once whether a network namespace
    /// can be created.
    pub fn new(python: &Path) -> Result<Self, SandboxError> {
        let drop_privileges = unsafe { libc::geteuid() } == 0;
        let mut backend = ProcessBackend {
            python: python.to_path_buf(),
            drop_privileges,
            network_isolated: false,
        };
        backend.network_isolated = backend.probe(true);
        if !backend.network_isolated && !backend.probe(false) {
            return Err(SandboxError::Setup(format!(
                "{} cannot be started in the sandbox (as {}): check the path and that it is readable and executable",
                python.display(),
                if drop_privileges { "nobody" } else { "the current user" }
            )));
        }
        Ok(backend)
    }

    /// `/usr/bin/python3` when present (readable after dropping privileges), else `python3`.
    pub fn default_python() -> PathBuf {
        let system = PathBuf::from("/usr/bin/python3");
        if system.exists() {
            system
        } else {
            PathBuf::from("python3")
        }
    }

    fn probe(&self, netns: bool) -> bool {
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-S", "-c", "pass"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.confine(&mut cmd, &Limits::default(), Path::new("/"), netns);
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Sets the child's environment, limits and identity.
    fn confine(&self, cmd: &mut Command, limits: &Limits, dir: &Path, netns: bool) {
        cmd.env_clear().current_dir(dir);
        let address_space = limits.memory_bytes.max(64 << 20);
        let cpu = limits.per_job.as_secs().max(1) + 1;
        let drop_privileges = self.drop_privileges;
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if netns {
                    let flags = if drop_privileges {
                        libc::CLONE_NEWNET
                    } else {
                        libc::CLONE_NEWUSER | libc::CLONE_NEWNET
                    };
                    if libc::unshare(flags) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let set = |resource, value: u64| {
                    let lim = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    libc::setrlimit(resource, &lim)
                };
                set(libc::RLIMIT_AS, address_space);
                set(libc::RLIMIT_CPU, cpu);
                set(libc::RLIMIT_FSIZE, 1 << 20);
                set(libc::RLIMIT_NOFILE, 64);
                set(libc::RLIMIT_CORE, 0);
                if drop_privileges {
                    set(libc::RLIMIT_NPROC, 64);
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(NOGROUP) != 0
                        || libc::setuid(NOBODY) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    fn run_instance(
        &self,
        payload: &str,
        token: &str,
        limits: &Limits,
        job_deadline: Instant,
    ) -> Result<InstanceRun, String> {
        let dir = tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
        let result = self.run_in(&dir, payload, token, limits, job_deadline);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    fn run_in(
        &self,
        dir: &Path,
        payload: &str,
        token: &str,
        limits: &Limits,
        job_deadline: Instant,
    ) -> Result<InstanceRun, String> {
        if self.drop_privileges {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: plain chown of a directory we just created.
            unsafe { libc::chown(c.as_ptr(), NOBODY, NOGROUP) };
        }
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-S", "-B", "-c", HARNESS])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.confine(&mut cmd, limits, dir, self.network_isolated);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.python.display()))?;
        let pid = child.id() as libc::pid_t;
        let kill_group = || unsafe {
            // SAFETY: signalling the child's own process group (it called setsid).
            libc::kill(-pid, libc::SIGKILL);
        };

        let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let payload = payload.as_bytes().to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&payload);
        });
        let tracker = Arc::new(Mutex::new(Tracker::new(token)));
        let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = spawn_stdout_reader(stdout, tracker.clone(), overflow.clone());
        let err_reader = spawn_stderr_reader(stderr);

        let end = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                kill_group(); // anything it left behind
                break if overflow.load(std::sync::atomic::Ordering::Relaxed) {
                    InstanceEnd::OutputFull
                } else {
                    exit_end(status)
                };
            }
            let now = Instant::now();
            let running = tracker.lock().ok().and_then(|t| t.running());
            let reason = if overflow.load(std::sync::atomic::Ordering::Relaxed) {
                Some(InstanceEnd::OutputFull)
            } else if now >= job_deadline {
                Some(InstanceEnd::JobTimeout)
            } else if running.is_some_and(|(_, since)| now.duration_since(since) > limits.per_test)
            {
                Some(InstanceEnd::TestTimeout)
            } else {
                None
            };
            if let Some(reason) = reason {
                kill_group();
                let _ = child.wait();
                break reason;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = writer.join();
        let _ = reader.join();
        let err = err_reader.join().unwrap_or_default();
        let mut tracker = Arc::try_unwrap(tracker)
            .map_err(|_| "tracker still shared".to_string())?
            .into_inner()
            .map_err(|_| "tracker poisoned".to_string())?;
        tracker.feed(b"\n");
        if tracker.events.is_empty() {
            tracker.other.extend_from_slice(&err[..err.len().min(2048)]);
        }
        Ok(InstanceRun { tracker, end })
    }
}

/// Feeds the instance's stdout to the tracker until EOF, or until it exceeds
/// `STDOUT_CAPACITY` (then `overflow` is set and reading stops).
fn spawn_stdout_reader(
    mut stdout: std::process::ChildStdout,
    tracker: Arc<Mutex<Tracker>>,
    overflow: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        let mut total = 0usize;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    if total > STDOUT_CAPACITY {
                        overflow.store(true, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    if let Ok(mut t) = tracker.lock() {
                        t.feed(&buf[..n]);
                    }
                }
            }
        }
    })
}

/// Keeps the first 8 KiB of the instance's stderr and drains the rest (so it never blocks).
fn spawn_stderr_reader(mut stderr: std::process::ChildStderr) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(8 << 10).read_to_end(&mut buf);
        let mut sink = [0u8; 8 << 10];
        while matches!(stderr.read(&mut sink), Ok(n) if n > 0) {}
        buf
    })
}

fn exit_end(status: std::process::ExitStatus) -> InstanceEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => InstanceEnd::Exited(code),
        (None, Some(libc::SIGXCPU)) => InstanceEnd::JobTimeout,
        (None, Some(sig)) => InstanceEnd::Crashed(format!("killed by signal {sig}")),
        (None, None) => InstanceEnd::Crashed("ended without a status".into()),
    }
}

/// A fresh private directory under the system temp dir.
fn tempdir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!("couplet-sandbox-{}", crate::harness::new_token()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not create a unique temp dir"))
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn isolation_note(&self) -> Option<String> {
        Some(format!(
            "process backend: network namespace {}",
            if self.network_isolated {
                "active (no interfaces)"
            } else {
                "NOT available on this kernel: network is refused only by the in-process audit hook"
            }
        ))
    }

    fn run(&self, job: &Job, limits: &Limits) -> JobResult {
        let roots: Vec<String> = Vec::new();
        // The temp dir differs per instance; the harness adds its own cwd.
        drive(job, limits, Some(&roots), |payload, token, deadline| {
            self.run_instance(payload, token, limits, deadline)
        })
    }
}
