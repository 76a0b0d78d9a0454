//! The process backend's OS boundary, attacked from inside an instance with the in-process
//! audit hook out of the picture (the strict backend installs none): every attack runs as
//! written, reports what the kernel answered on its stdout (the evidence that it ran), and
//! must be refused by the kernel — Landlock, seccomp, separate uids, a private `/proc` —
//! while the test that would profit from it fails.

mod common;

use std::time::Duration;

use common::process;

use couplet_sandbox::{Backend, Job, JobResult, Limits};

fn limits() -> Limits {
    Limits {
        per_test: Duration::from_secs(5),
        per_job: Duration::from_secs(30),
        memory_bytes: 256 << 20,
        output_bytes: 16 << 10,
    }
}

/// Python run inside `f`: each attack prints `ATTEMPT <name> -> <result>`; a result of
/// `ok` is a hole.
const ATTACKS: &str = r#"
import os, sys, ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def report(name, fn):
    try:
        out = fn()
        print("ATTEMPT", name, "->", out)
    except BaseException as e:
        print("ATTEMPT", name, "->", type(e).__name__, getattr(e, "errno", ""))
def call(fn, *args):
    r = fn(*args)
    return "ok" if r >= 0 else "errno %d" % ctypes.get_errno()
me = os.getpid()
near = [p for p in range(max(2, me - 40), me + 40) if p != me]
def each_pid(action):
    results = set()
    for p in near:
        try:
            action(p)
            results.add("ok")
        except OSError as e:
            results.add(errno.errorcode.get(e.errno, str(e.errno)))
    return ",".join(sorted(results))
report("list /proc", lambda: "ok %d" % len(os.listdir("/proc")))
report("see other pids", lambda: each_pid(lambda p: os.stat("/proc/%d" % p)))
report("read other /proc/pid/mem", lambda: each_pid(lambda p: open("/proc/%d/mem" % p, "rb").close()))
report("read other /proc/pid/cmdline", lambda: each_pid(lambda p: open("/proc/%d/cmdline" % p, "rb").read()))
report("kill others", lambda: each_pid(lambda p: os.kill(p, 0)))
report("pidfd_open others", lambda: each_pid(lambda p: os.close(os.pidfd_open(p))))
report("ptrace attach", lambda: ",".join(sorted({call(libc.ptrace, 16, p, 0, 0) for p in near})))
report("process_vm_readv", lambda: call(libc.process_vm_readv, near[0], None, 0, None, 0, 0))
report("re-enable dumpable", lambda: call(libc.prctl, 4, 1, 0, 0, 0))
report("list /tmp", lambda: "ok %d" % len(os.listdir("/tmp")))
report("plant a module in /tmp", lambda: open("/tmp/couplet_planted.py", "w").write("x = 1"))
report("read /etc/passwd", lambda: open("/etc/passwd").read()[:10])
report("read /root", lambda: "ok %d" % len(os.listdir("/root")))
report("mkfifo", lambda: os.mkfifo("fifo"))
report("fork", lambda: os.fork())
report("socket", lambda: __import__("socket").socket())
report("setuid 0", lambda: os.setuid(0))
report("unshare", lambda: call(libc.unshare, 0x10000000))
report("write own dir", lambda: "ok" if open("mine.txt", "w").write("x") == 1 else "no")
"#;

fn attack_job() -> Job {
    let indented: String = ATTACKS.lines().map(|l| format!("    {l}\n")).collect();
    Job {
        id: "os".into(),
        solution: format!("def f(x):\n{indented}    return x + 2\n"),
        tests: vec!["assert f(1) == 2".into()],
        ..Default::default()
    }
}

fn attempts(r: &JobResult) -> Vec<(String, String)> {
    r.tests[0]
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ATTEMPT "))
        .filter_map(|l| l.split_once(" -> "))
        .map(|(a, b)| (a.to_string(), b.trim().to_string()))
        .collect()
}

#[test]
fn every_attack_runs_and_the_kernel_refuses_it() {
    let backend = process();
    let layers = backend.layers();
    assert!(
        layers.missing().is_empty(),
        "strict backend without {:?}",
        layers.missing()
    );
    let r = backend.run(&attack_job(), &limits());
    let seen = attempts(&r);
    for (name, result) in &seen {
        eprintln!("[process] {name:<30} -> {result}");
    }
    assert!(!r.tests[0].outcome.passed(), "{r:?}");
    assert_eq!(seen.len(), 19, "not every attack ran: {r:?}");
    let result = |name: &str| {
        seen.iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
            .unwrap_or("missing")
    };
    // The one thing an instance may do: write its own directory.
    assert_eq!(result("write own dir"), "ok");
    for (name, outcome) in &seen {
        if name == "write own dir" {
            continue;
        }
        assert!(
            !outcome.starts_with("ok") && !outcome.contains("ok,") && !outcome.ends_with(",ok"),
            "{name}: {outcome}"
        );
    }
    // Refused by the kernel, not by Python: permission errors and EPERM from seccomp;
    // other processes do not exist in the private /proc.
    assert_eq!(result("see other pids"), "ENOENT");
    assert_eq!(result("ptrace attach"), "errno 1");
    assert_eq!(result("re-enable dumpable"), "errno 1");
    assert_eq!(result("fork"), "PermissionError 1");
    assert!(result("read /etc/passwd").starts_with("PermissionError"));
    assert!(!std::path::Path::new("/tmp/couplet_planted.py").exists());
}

#[test]
fn instances_have_their_own_uid_and_are_not_dumpable() {
    let probe =
        "import os\ndef me():\n    return os.getuid(), os.stat('/proc/self/status').st_uid\n";
    let job = Job {
        id: "uid".into(),
        solution: probe.into(),
        tests: vec!["import os\nuid, owner = me()\nprint(uid, owner, os.getuid(), os.stat('/proc/self/status').st_uid)".into()],
        ..Default::default()
    };
    let r = process().run(&job, &limits());
    let numbers: Vec<u32> = r.tests[0]
        .stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [untrusted_uid, untrusted_owner, trusted_uid, trusted_owner] = numbers[..] else {
        panic!("{r:?}");
    };
    assert_ne!(untrusted_uid, trusted_uid, "the two roles share a uid");
    assert!(untrusted_uid != 0 && trusted_uid != 0);
    // /proc/<pid> of a non-dumpable process belongs to root.
    assert_eq!((untrusted_owner, trusted_owner), (0, 0), "{r:?}");
}

#[test]
fn the_layers_in_force_are_said_at_start() {
    let note = process().isolation_note().unwrap();
    assert!(
        note.contains("seccomp allow-list on") && note.contains("Landlock ABI"),
        "{note}"
    );
}
