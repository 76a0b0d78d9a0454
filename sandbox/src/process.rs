//! Process backend (`--sandbox process`): the native `python3` behind an OS boundary.
//!
//! Each instance (both roles: the trusted one runs dataset code, so it is confined alike)
//! is a `python3 -I -S -B -c BOOT` in its own session and process group, with an empty
//! environment, the judge's frames on stdin, a fresh temp working directory (removed
//! afterwards), rlimits (address space, CPU seconds, file size, open files, no core dumps),
//! and the kernel-enforced layers of [`crate::confine`]: its own identity, a private
//! `/proc`, an empty network namespace, Landlock filesystem/signal/TCP rules and a seccomp
//! allow-list; the harness makes itself not dumpable before any job code runs. The layers
//! are probed once ([`ProcessBackend::layers`]); under [`Isolation::Strict`] (the default)
//! a missing one is an error naming it. The judge enforces time: when a test overruns, the
//! whole process group of the instance it waits on is killed (SIGKILL) and a fresh one
//! continues with the next test.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{unbounded, Receiver, Sender};
use seccompiler::BpfProgram;

use crate::confine::{self, Isolation, Layers, ProcMount};
use crate::guest::{Control, InstanceCache, InstanceEnd, Launcher, Pipes};
use crate::harness::{GuestRules, Role, BOOT};
use crate::job::{Job, JobResult, Limits};
use crate::judge::run_job;
use crate::{Backend, SandboxError};

/// Total stdout bytes read from an instance; beyond it the instance is killed (OutputLimit).
const STDOUT_CAPACITY: usize = 256 << 20;

/// Native CPython under OS limits.
pub struct ProcessBackend {
    python: PathBuf,
    isolation: Isolation,
    layers: Layers,
    seccomp: BpfProgram,
    read_roots: Vec<PathBuf>,
    executables: Vec<PathBuf>,
    cache: InstanceCache,
}

/// What one instance is started with.
struct Spawn<'a> {
    limits: &'a Limits,
    cpu_seconds: Option<u64>,
    dir: &'a Path,
    uid: u32,
    layers: Layers,
}

impl ProcessBackend {
    /// Uses `python` (e.g. `/usr/bin/python3`) with the strict boundary.
    pub fn new(python: &Path) -> Result<Self, SandboxError> {
        Self::with_isolation(python, Isolation::Strict)
    }

    /// Uses `python`, probing which layers of the boundary this kernel allows; `Strict`
    /// refuses to start without all of them.
    pub fn with_isolation(python: &Path, isolation: Isolation) -> Result<Self, SandboxError> {
        let mut backend = ProcessBackend {
            python: python.to_path_buf(),
            isolation,
            layers: Layers::default(),
            seccomp: confine::seccomp_program().map_err(SandboxError::Setup)?,
            read_roots: confine::read_roots(python),
            executables: confine::executables(python),
            cache: InstanceCache::default(),
        };
        if !backend.probe(Layers::default(), "pass") {
            return Err(SandboxError::Setup(format!(
                "{} cannot be started in the sandbox: check the path and that it is readable and executable",
                python.display()
            )));
        }
        backend.layers = backend.probe_layers();
        let missing = backend.layers.missing();
        if isolation == Isolation::Strict && !missing.is_empty() {
            return Err(SandboxError::Setup(format!(
                "the process backend's isolation is incomplete on this machine: missing {}. \
                 Use the wasm backend, or opt down with sandbox.process_isolation = \"best_effort\" \
                 (--process-isolation best_effort) to run with what is available ({})",
                missing.join("; "),
                backend.layers.describe()
            )));
        }
        Ok(backend)
    }

    /// The layers of the boundary in force.
    pub fn layers(&self) -> Layers {
        self.layers
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

    /// Adds the layers one by one, keeping each that a confined interpreter survives.
    fn probe_layers(&self) -> Layers {
        let root = unsafe { libc::geteuid() } == 0;
        let mut layers = Layers::default();
        let try_layer = |layers: &mut Layers, set: &dyn Fn(&mut Layers)| {
            let mut candidate = *layers;
            set(&mut candidate);
            if self.probe(candidate, "pass") {
                *layers = candidate;
            }
        };
        if root {
            try_layer(&mut layers, &|l| l.own_uid = true);
            try_layer(&mut layers, &|l| l.private_proc = true);
        } else {
            try_layer(&mut layers, &|l| l.own_userns = true);
        }
        try_layer(&mut layers, &|l| l.netns = true);
        let abi = confine::landlock_abi();
        if abi > 0 {
            try_layer(&mut layers, &|l| l.landlock_abi = abi);
        }
        try_layer(&mut layers, &|l| l.seccomp = true);
        let dumpable = "import ctypes\nassert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0";
        layers.not_dumpable = self.probe(layers, dumpable);
        layers
    }

    /// Whether `python -c program` exits 0 under `layers`.
    fn probe(&self, layers: Layers, program: &str) -> bool {
        let Ok(dir) = self.instance_dir(layers) else {
            return false;
        };
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-S", "-c", program])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let spawn = Spawn {
            limits: &Limits::default(),
            cpu_seconds: Some(10),
            dir: &dir.0,
            uid: dir.1,
            layers,
        };
        let ok = self.confine(&mut cmd, &spawn).is_ok()
            && cmd.status().map(|s| s.success()).unwrap_or(false);
        let _ = std::fs::remove_dir_all(&dir.0);
        ok
    }

    /// A fresh temp dir and the uid that will own it (the uid is used only with own_uid).
    fn instance_dir(&self, layers: Layers) -> Result<(PathBuf, u32), String> {
        let dir = tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
        let uid = confine::next_uid();
        if layers.own_uid {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: plain chown of a directory we just created.
            if unsafe { libc::chown(c.as_ptr(), uid, uid) } != 0 {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!(
                    "chown of the temp dir: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok((dir, uid))
    }

    /// Sets the child's environment, limits, identity and kernel-enforced layers.
    fn confine(&self, cmd: &mut Command, spawn: &Spawn<'_>) -> Result<(), String> {
        cmd.env_clear().current_dir(spawn.dir);
        let address_space = spawn.limits.memory_bytes.max(64 << 20);
        let (layers, uid, cpu_seconds) = (spawn.layers, spawn.uid, spawn.cpu_seconds);
        let mut ruleset = if layers.landlock_abi > 0 {
            Some(confine::landlock_ruleset(
                &self.read_roots,
                &self.executables,
                spawn.dir,
            )?)
        } else {
            None
        };
        let seccomp = layers.seccomp.then(|| self.seccomp.clone());
        let proc_mount = ProcMount::default();
        let mut unshare = 0;
        if layers.netns {
            unshare |= libc::CLONE_NEWNET;
        }
        if layers.own_userns {
            unshare |= libc::CLONE_NEWUSER;
        }
        if layers.private_proc {
            unshare |= libc::CLONE_NEWNS;
        }
        // SAFETY: between fork and exec only system calls on memory prepared above (the
        // Landlock ruleset fd, the BPF program, the mount strings); error paths may
        // allocate, after which the child exits without exec.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::setsid() < 0 || (unshare != 0 && libc::unshare(unshare) != 0) {
                    return fail();
                }
                if layers.private_proc {
                    proc_mount.apply()?;
                }
                set_rlimits(address_space, cpu_seconds);
                if layers.own_uid
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return fail();
                }
                if let Some(ruleset) = ruleset.take() {
                    ruleset.restrict_self().map_err(std::io::Error::other)?;
                }
                if let Some(program) = &seccomp {
                    seccompiler::apply_filter(program).map_err(std::io::Error::other)?;
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Starts one confined `python3 -c BOOT` with pipes wired to the judge.
    fn spawn(&self, role: Role, limits: &Limits) -> Result<Pipes, String> {
        let (dir, uid) = self.instance_dir(self.layers)?;
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-S", "-B", "-c", BOOT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Each instance serves one job; the untrusted one is bounded by the job's budget.
        let cpu_seconds = match role {
            Role::Untrusted => Some(limits.per_job.as_secs().max(1) + 1),
            Role::Trusted => None,
        };
        let spawn = Spawn {
            limits,
            cpu_seconds,
            dir: &dir,
            uid,
            layers: self.layers,
        };
        let started = self.confine(&mut cmd, &spawn).and_then(|()| {
            cmd.spawn()
                .map_err(|e| format!("starting {}: {e}", self.python.display()))
        });
        let mut child = match started {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
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

/// rlimits of an instance (async-signal-safe).
fn set_rlimits(address_space: u64, cpu_seconds: Option<u64>) {
    let set = |resource, value: u64| {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit on a stack value.
        unsafe { libc::setrlimit(resource, &lim) };
    };
    set(libc::RLIMIT_AS, address_space);
    if let Some(cpu) = cpu_seconds {
        set(libc::RLIMIT_CPU, cpu);
    }
    set(libc::RLIMIT_FSIZE, 1 << 20);
    set(libc::RLIMIT_NOFILE, 64);
    set(libc::RLIMIT_CORE, 0);
    set(libc::RLIMIT_NPROC, 64);
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
        let mut note = format!(
            "process backend ({}): {}",
            self.isolation.name(),
            self.layers.describe()
        );
        if self.guest_rules().audit_roots.is_some() {
            note += "; seccomp or Landlock is missing, so an in-process audit hook stands in (NOT a security boundary)";
        }
        Some(note)
    }

    fn run(&self, job: &Job, limits: &Limits) -> JobResult {
        run_job(job, limits, self, &self.cache)
    }
}

impl Launcher for ProcessBackend {
    fn launch(&self, role: Role, limits: &Limits) -> Result<Pipes, String> {
        self.spawn(role, limits)
    }

    fn guest_rules(&self) -> GuestRules {
        let kernel_boundary = self.layers.seccomp && self.layers.landlock_abi > 0;
        GuestRules {
            not_dumpable: self.layers.not_dumpable,
            // Each instance's temp dir differs; the harness adds its own cwd.
            audit_roots: (!kernel_boundary).then(Vec::new),
        }
    }
}
