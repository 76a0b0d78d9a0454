//! The process backend's OS boundary: what the kernel, not the interpreter, enforces on
//! every instance. Each layer is built in the parent (before `fork`) and applied in the
//! child between `fork` and `exec` with plain system calls.
//!
//! - **identity**: as root, every instance runs as its own unprivileged uid/gid (never the
//!   uid of another live instance), so no instance can signal, trace or read another's
//!   memory; otherwise every instance gets its own user namespace.
//! - **private /proc** (root): a mount namespace with a fresh `/proc` mounted
//!   `hidepid=invisible`, so other instances' processes do not exist for it.
//! - **network namespace** with no interfaces.
//! - **Landlock** (`landlock` crate): read-only access to the interpreter's install and the
//!   system libraries, execute only for the interpreter and its loader, full access to the
//!   instance's own temp dir only; no signals or abstract sockets outside its own domain; no
//!   TCP.
//! - **seccomp-bpf** (`seccompiler` crate): an allow-list of the system calls CPython
//!   needs; everything else fails with `EPERM` (no `fork`/`clone`, `ptrace`,
//!   `process_vm_*`, `kill`, `pidfd_*`, sockets, `mknod`, mounts, namespaces), and `prctl`
//!   only as `PR_SET_DUMPABLE, 0` (the harness makes itself not dumpable; nothing can undo
//!   it).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// How strictly process instances are isolated (`sandbox.process_isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Every layer of the boundary, or the backend refuses to start (the default).
    #[default]
    Strict,
    /// The layers this kernel allows; where seccomp or Landlock is missing, the in-process
    /// audit hook stands in (which is not a boundary, and the backend says so).
    BestEffort,
}

impl Isolation {
    /// The name in configs and flags.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Strict => "strict",
            Isolation::BestEffort => "best_effort",
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        [Isolation::Strict, Isolation::BestEffort]
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| format!("expected strict or best_effort, got {name:?}"))
    }
}

/// The layers in force (found by probing the kernel once per backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layers {
    /// Running as root: each instance gets its own uid (else its own user namespace).
    pub own_uid: bool,
    /// Each instance in its own user namespace (the non-root identity layer).
    pub own_userns: bool,
    /// A mount namespace with a private `/proc` (hidepid=invisible).
    pub private_proc: bool,
    /// An empty network namespace.
    pub netns: bool,
    /// The Landlock ABI enforced (0: none).
    pub landlock_abi: i32,
    /// The seccomp allow-list.
    pub seccomp: bool,
    /// The harness makes itself not dumpable (needs ctypes in the interpreter).
    pub not_dumpable: bool,
}

impl Layers {
    /// What a strict sandbox needs and this kernel lacks (empty: complete).
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !(self.own_uid || self.own_userns) {
            missing
                .push("a separate identity per instance (root for own uids, or user namespaces)");
        }
        if self.landlock_abi < 1 {
            missing.push("Landlock (filesystem rules)");
        }
        if !self.seccomp {
            missing.push("seccomp-bpf");
        }
        if !self.netns && self.landlock_abi < 4 {
            missing.push("a network namespace or Landlock ABI 4 (no TCP)");
        }
        if !self.not_dumpable {
            missing.push("PR_SET_DUMPABLE from the interpreter (ctypes)");
        }
        missing
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "OFF" };
        let identity = if self.own_uid {
            "own uid per instance"
        } else if self.own_userns {
            "own user namespace per instance"
        } else {
            "SHARED identity"
        };
        let landlock = if self.landlock_abi > 0 {
            format!("Landlock ABI {}", self.landlock_abi)
        } else {
            "Landlock OFF".into()
        };
        format!(
            "{identity}, {landlock}, seccomp allow-list {}, network namespace {}, private /proc {}, not dumpable {}",
            on(self.seccomp),
            on(self.netns),
            on(self.private_proc),
            on(self.not_dumpable)
        )
    }
}

/// First uid/gid handed to instances; each instance takes the next (mod [`UID_SPAN`]).
const UID_BASE: u32 = 2_100_000_000;
const UID_SPAN: u32 = 1_000_000;
static NEXT_UID: AtomicU32 = AtomicU32::new(0);

/// A fresh unprivileged uid (also used as the gid) for one instance.
pub fn next_uid() -> u32 {
    UID_BASE + NEXT_UID.fetch_add(1, Ordering::Relaxed) % UID_SPAN
}

/// The Landlock ABI of this kernel (0 when unavailable), capped at the one the rules are
/// written for.
pub fn landlock_abi() -> i32 {
    const CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query: no ruleset, size 0, flag VERSION.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (abi.max(0) as i32).min(ABI::V6 as i32)
}

/// Read-only roots every instance needs: the interpreter's install (two levels above the
/// resolved executable), the system libraries, the loader cache and the time zone.
pub fn read_roots(python: &Path) -> Vec<PathBuf> {
    let exe = std::fs::canonicalize(python).unwrap_or_else(|_| python.to_path_buf());
    let mut roots: Vec<PathBuf> = [
        "/usr",
        "/lib",
        "/lib64",
        "/etc/ld.so.cache",
        "/etc/localtime",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Some(prefix) = exe.parent().and_then(Path::parent) {
        roots.push(prefix.to_path_buf());
    }
    roots.retain(|p| p.exists());
    roots
}

/// Files the kernel must be allowed to execute: the interpreter and its ELF loader.
pub fn executables(python: &Path) -> Vec<PathBuf> {
    let exe = std::fs::canonicalize(python).unwrap_or_else(|_| python.to_path_buf());
    let loaders = [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/ld-linux-aarch64.so.1",
        "/lib/ld-linux-x86-64.so.2",
    ];
    let mut files = vec![exe];
    files.extend(loaders.iter().filter_map(|l| std::fs::canonicalize(l).ok()));
    files
}

/// The Landlock ruleset of one instance: `read` roots read-only, `exec` files executable,
/// `dir` (its temp dir) fully writable; signals and abstract sockets scoped to itself; no
/// TCP where the ABI has network rules.
pub fn landlock_ruleset(
    read: &[PathBuf],
    exec: &[PathBuf],
    dir: &Path,
) -> Result<RulesetCreated, String> {
    let abi = ABI::V6;
    let err = |what: &str, e: &dyn std::fmt::Display| format!("Landlock {what}: {e}");
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| err("filesystem", &e))?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(|e| err("network", &e))?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(|e| err("scopes", &e))?
        .create()
        .map_err(|e| err("create", &e))?;
    let mut rules: Vec<(&Path, landlock::BitFlags<AccessFs>)> = Vec::new();
    rules.extend(read.iter().map(|p| (p.as_path(), read_only)));
    rules.extend(
        exec.iter()
            .map(|p| (p.as_path(), AccessFs::Execute | AccessFs::ReadFile)),
    );
    rules.push((dir, AccessFs::from_all(abi)));
    rules.push((
        Path::new("/dev/null"),
        AccessFs::ReadFile | AccessFs::WriteFile,
    ));
    rules.push((Path::new("/dev/urandom"), AccessFs::ReadFile.into()));
    for (path, access) in rules {
        let name = path.display().to_string();
        let fd = PathFd::new(path).map_err(|e| err(&name, &e))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| err(&name, &e))?;
    }
    Ok(ruleset)
}

/// The seccomp allow-list: what CPython uses to run code, read its library, manage
/// memory, keep time and write to its pipes and its own directory.
pub fn seccomp_program() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let eq = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
            .map_err(|e| format!("seccomp condition: {e}"))
    };
    // prctl: only PR_SET_DUMPABLE(0).
    let dumpable = SeccompRule::new(vec![eq(0, libc::PR_SET_DUMPABLE as u64)?, eq(1, 0)?])
        .map_err(|e| format!("seccomp rule: {e}"))?;
    rules.insert(libc::SYS_prctl, vec![dumpable]);
    // ioctl: terminal queries and close-on-exec flags only (no TIOCSTI and friends).
    let ioctls = [
        libc::TCGETS,
        libc::FIOCLEX,
        libc::FIONCLEX,
        libc::FIONBIO,
        libc::FIONREAD,
    ];
    let ioctl_rules = ioctls
        .iter()
        .map(|&request| {
            SeccompRule::new(vec![eq(1, request)?]).map_err(|e| format!("seccomp rule: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e| format!("seccomp program: {e}"))
}

/// System calls an instance may make (besides the conditional `prctl` and `ioctl`).
const ALLOWED: &[i64] = &[
    // running code, memory
    libc::SYS_execve,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_restart_syscall,
    libc::SYS_membarrier,
    // files (Landlock decides which)
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_unlinkat,
    libc::SYS_mkdirat,
    libc::SYS_renameat2,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_umask,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    // time
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_setitimer,
    libc::SYS_getitimer,
    // itself
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_getrandom,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getpriority,
    libc::SYS_getcpu,
    // signals to itself
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_select,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_alarm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_time,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getpgrp,
];

/// C strings for the private `/proc` mount, made before `fork` (no allocation after it).
pub struct ProcMount {
    proc: CString,
    target: CString,
    options: CString,
    root: CString,
}

impl Default for ProcMount {
    fn default() -> Self {
        let c = |s: &str| CString::new(s).expect("no NUL in a constant");
        ProcMount {
            proc: c("proc"),
            target: c("/proc"),
            options: c("hidepid=invisible"),
            root: c("/"),
        }
    }
}

impl ProcMount {
    /// In the child, after `unshare(CLONE_NEWNS)`: stop mount propagation and mount a
    /// fresh `/proc` that shows only the caller's own processes.
    ///
    /// # Safety
    /// Async-signal-safe: system calls on prepared strings only.
    pub unsafe fn apply(&self) -> std::io::Result<()> {
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            std::ptr::null(),
            self.root.as_ptr(),
            std::ptr::null(),
            private,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let options = self.options.as_ptr().cast();
        if libc::mount(
            self.proc.as_ptr(),
            self.target.as_ptr(),
            self.proc.as_ptr(),
            flags,
            options,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_names_parse_back() {
        for i in [Isolation::Strict, Isolation::BestEffort] {
            assert_eq!(i.name().parse::<Isolation>(), Ok(i));
        }
        assert!("none".parse::<Isolation>().is_err());
    }

    #[test]
    fn the_seccomp_program_builds_and_uids_are_fresh() {
        assert!(!seccomp_program().unwrap().is_empty());
        assert_ne!(next_uid(), next_uid());
    }

    #[test]
    fn a_strict_sandbox_names_every_missing_layer() {
        let none = Layers::default();
        assert_eq!(none.missing().len(), 5);
        let all = Layers {
            own_uid: true,
            landlock_abi: 6,
            seccomp: true,
            netns: true,
            not_dumpable: true,
            ..Layers::default()
        };
        assert!(all.missing().is_empty(), "{:?}", all.missing());
    }
}
