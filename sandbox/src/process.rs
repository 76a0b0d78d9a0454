//! Process backend (`--sandbox process`): the native `python3` with OS limits.
//!
//! Each instance (both roles: the trusted one runs dataset code, so it is confined alike)
//! is a `python3 -I -S -B -c BOOT` in its own session and process group, with an empty
//! environment, the judge's frames on stdin, a fresh temp working directory (removed
//! afterwards), and rlimits: address space, CPU seconds (untrusted instances: the job's
//! budget; the long-lived trusted one is bounded per test by the judge), file size, open
//! files, no core dumps. As root it drops to `nobody` (so root-only files such
//! as `~/.ssh` are out of reach and the process limit applies). When the kernel allows it,
//! the instance gets a network namespace with no interfaces ([`ProcessBackend::network_isolated`]
//! says whether that is active; it is never claimed when it is not). The harness also
//! installs a Python audit hook that refuses process creation, threads, sockets, ctypes,
//! signals to other processes, and file access outside the temp dir and the standard
//! library. The judge enforces time: when a test overruns, the whole process group of the
//! instance it waits on is killed (SIGKILL) and a fresh one continues with the next test.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::guest::{Control, InstanceCache, InstanceEnd, Launcher, Pipes};
use crate::harness::{Role, BOOT};
use crate::job::{Job, JobResult, Limits};
use crate::judge::run_job;
use crate::{Backend, SandboxError};

const NOBODY: libc::uid_t = 65534;
const NOGROUP: libc::gid_t = 65534;
/// Total stdout bytes read from an instance; beyond it the instance is killed (OutputLimit).
const STDOUT_CAPACITY: usize = 256 << 20;

/// Native CPython under OS limits.
pub struct ProcessBackend {
    python: PathBuf,
    drop_privileges: bool,
    /// Whether instances run in an empty network namespace.
    pub network_isolated: bool,
    cache: InstanceCache,
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
            cache: InstanceCache::default(),
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
        self.confine(
            &mut cmd,
            &Limits::default(),
            Some(10),
            Path::new("/"),
            netns,
        );
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Sets the child's environment, limits and identity.
    fn confine(
        &self,
        cmd: &mut Command,
        limits: &Limits,
        cpu_seconds: Option<u64>,
        dir: &Path,
        netns: bool,
    ) {
        cmd.env_clear().current_dir(dir);
        let address_space = limits.memory_bytes.max(64 << 20);
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
                if let Some(cpu) = cpu_seconds {
                    set(libc::RLIMIT_CPU, cpu);
                }
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

    /// Starts one confined `python3 -c BOOT` with pipes wired to the judge.
    fn spawn(&self, role: Role, limits: &Limits) -> Result<Pipes, String> {
        let dir = tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
        if self.drop_privileges {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: plain chown of a directory we just created.
            unsafe { libc::chown(c.as_ptr(), NOBODY, NOGROUP) };
        }
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-S", "-B", "-c", BOOT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The trusted instance lives across jobs; the judge bounds its time per test.
        let cpu = match role {
            Role::Untrusted => Some(limits.per_job.as_secs().max(1) + 1),
            Role::Trusted => None,
        };
        self.confine(&mut cmd, limits, cpu, &dir, self.network_isolated);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("starting {}: {e}", self.python.display()));
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the interpreter's pipes are missing".into());
        };
        let (to_guest, inbox) = unbounded::<Vec<u8>>();
        let (outbox, from_guest) = unbounded();
        let overflow = Arc::new(AtomicBool::new(false));
        spawn_stdin_writer(stdin, inbox);
        spawn_stdout_reader(stdout, outbox, overflow.clone());
        let stderr = spawn_stderr_reader(stderr);
        Ok(Pipes {
            to_guest,
            from_guest,
            control: Box::new(ProcessControl {
                child,
                dir,
                overflow,
                stderr,
                finished: None,
            }),
        })
    }
}

/// Writes the judge's frames to the child's stdin until either side closes.
fn spawn_stdin_writer(mut stdin: std::process::ChildStdin, inbox: Receiver<Vec<u8>>) {
    std::thread::spawn(move || {
        for frame in inbox.iter() {
            if stdin
                .write_all(&frame)
                .and_then(|()| stdin.flush())
                .is_err()
            {
                break;
            }
        }
    });
}

/// Passes the child's stdout to the judge until EOF, or until it exceeds
/// `STDOUT_CAPACITY` (then `overflow` is set and reading stops).
fn spawn_stdout_reader(
    mut stdout: std::process::ChildStdout,
    outbox: Sender<Vec<u8>>,
    overflow: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0usize;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    if total > STDOUT_CAPACITY {
                        overflow.store(true, Ordering::Relaxed);
                        break;
                    }
                    if outbox.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Keeps the first 8 KiB of the instance's stderr and drains the rest (so it never blocks).
fn spawn_stderr_reader(mut stderr: std::process::ChildStderr) -> Arc<Mutex<Vec<u8>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = kept.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8 << 10];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut kept) = sink.lock() {
                let room = (8usize << 10).saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    });
    kept
}

/// Owns the child: kills its whole process group when stopped, reaps it, removes its
/// working directory.
struct ProcessControl {
    child: Child,
    dir: PathBuf,
    overflow: Arc<AtomicBool>,
    stderr: Arc<Mutex<Vec<u8>>>,
    finished: Option<InstanceEnd>,
}

impl ProcessControl {
    fn finish(&mut self, end: InstanceEnd) -> InstanceEnd {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling the child's own process group (it called setsid), including
        // anything it left behind.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.finished = Some(end.clone());
        end
    }

    fn exit_or_flood(&self, status: std::process::ExitStatus) -> InstanceEnd {
        if self.overflow.load(Ordering::Relaxed) {
            InstanceEnd::OutputFull
        } else {
            exit_end(status)
        }
    }
}

impl Control for ProcessControl {
    fn stop(&mut self, reason: InstanceEnd) -> InstanceEnd {
        if let Some(end) = &self.finished {
            return end.clone();
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            let end = self.exit_or_flood(status);
            return self.finish(end);
        }
        self.finish(reason)
    }

    fn ended(&mut self) -> InstanceEnd {
        if let Some(end) = &self.finished {
            return end.clone();
        }
        if self.overflow.load(Ordering::Relaxed) {
            return self.finish(InstanceEnd::OutputFull);
        }
        let end = match self.child.wait() {
            Ok(status) => self.exit_or_flood(status),
            Err(e) => InstanceEnd::Crashed(format!("waiting for the interpreter: {e}")),
        };
        self.finish(end)
    }

    fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for ProcessControl {
    fn drop(&mut self) {
        if self.finished.is_none() {
            self.finish(InstanceEnd::Released);
        }
    }
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
        run_job(job, limits, self, &self.cache)
    }
}

impl Launcher for ProcessBackend {
    fn launch(&self, role: Role, limits: &Limits) -> Result<Pipes, String> {
        self.spawn(role, limits)
    }

    fn audit_roots(&self) -> Option<Vec<String>> {
        // Each instance's temp dir differs; the harness adds its own cwd.
        Some(Vec::new())
    }
}
