//! The hostile battery: solutions that try to hang, exhaust, escape or fool the sandbox,
//! and tests (a hostile dataset) that try the same from the trusted side. Each runs on both
//! backends; none may pass, hang the run, or leave a trace on the host. Forgery of verdicts
//! has its own battery (`reward_hacks.rs`).

mod common;

use std::time::Duration;

use common::{backends, process, wasm};

use couplet_sandbox::{Backend, Job, Limits, Outcome};

fn limits() -> Limits {
    Limits {
        per_test: Duration::from_millis(1500),
        per_job: Duration::from_secs(20),
        memory_bytes: 256 << 20,
        output_bytes: 4096,
    }
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Timeout,
    /// Memory, MemoryError, or the interpreter dying of it.
    Memory,
    /// RecursionError, a stack-overflow crash, or memory exhaustion.
    Recursion,
    /// Any exception (the attempt was refused inside Python).
    Failed,
    /// Failed with this exception type.
    FailedWith(&'static str),
    Crashed,
    OutputLimit,
    /// Anything but a pass.
    NotPassed,
}

fn matches(outcome: &Outcome, expect: Expect) -> bool {
    use Outcome::*;
    match expect {
        Expect::Timeout => *outcome == Timeout,
        Expect::Memory => {
            matches!(outcome, Memory | Crashed { .. })
                || matches!(outcome, Failed { error } if error == "MemoryError" || error == "OverflowError")
        }
        Expect::Recursion => {
            matches!(outcome, Memory | Crashed { .. })
                || matches!(outcome, Failed { error } if error == "RecursionError" || error == "MemoryError")
        }
        Expect::Failed => matches!(outcome, Failed { .. }),
        Expect::FailedWith(e) => matches!(outcome, Failed { error } if error == e),
        Expect::Crashed => matches!(outcome, Crashed { .. }),
        Expect::OutputLimit => *outcome == OutputLimit,
        Expect::NotPassed => !outcome.passed(),
    }
}

const MARKER_FILE: &str = "/tmp/couplet_sandbox_escape_marker";

/// Where a hostile program sits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    /// Inside `f`, which the first test calls (`assert f(1) == 2`; `f` returns a wrong
    /// value after the hostile code, so a pass would be a forgery).
    InCall,
    /// At the solution's top level (runs before every test; may poison both tests).
    TopLevel,
    /// In the test itself, which runs in the trusted instance (a hostile dataset).
    InTest,
}

/// (name, place, hostile code, expectation). Every job also carries a benign last test
/// (`assert g(1) == 2`, with `g` correct) that must still pass unless the hostile code
/// runs at the top level and breaks every execution of the solution.
fn battery() -> Vec<(&'static str, Place, String, Expect)> {
    use Place::*;
    let t = |s: &str| s.to_string();
    vec![
        ("infinite loop", InCall, t("while True:\n    pass"), Expect::Timeout),
        ("loop in finally", InCall, t("try:\n    raise ValueError\nfinally:\n    while True:\n        pass"), Expect::Timeout),
        ("loop in __del__", InCall, t("class A:\n    def __del__(self):\n        while True:\n            pass\na = A()\ndel a"), Expect::Timeout),
        ("sleep forever", InCall, t("import time\ntime.sleep(10**6)"), Expect::Timeout),
        ("deep recursion", InCall, t("def r(n):\n    return r(n + 1)\nr(0)"), Expect::Recursion),
        ("C-level recursion", InCall, t("import sys\nsys.setrecursionlimit(10**7)\ndef r(n):\n    return r(n + 1)\nr(0)"), Expect::NotPassed),
        ("big list", InCall, t("x = [0] * (10**10)"), Expect::Memory),
        ("bytearray", InCall, t("b = bytearray(2**34)"), Expect::Memory),
        ("string doubling", InCall, t("s = 'a'\nwhile True:\n    s = s + s"), Expect::Memory),
        ("growing list", InCall, t("x = []\nwhile True:\n    x.append(bytearray(1 << 20))"), Expect::Memory),
        ("fork", InCall, t("import os\nos.fork()"), Expect::Failed),
        ("thread", InCall, t("import threading\nth = threading.Thread(target=print)\nth.start()\nth.join()"), Expect::Failed),
        ("subprocess", InCall, t("import subprocess\nsubprocess.run(['id'])"), Expect::Failed),
        ("os.system", InCall, t(&format!("import os\nos.system('touch {MARKER_FILE}')\nassert False")), Expect::Failed),
        ("read /etc/passwd", InCall, t("assert 'root' in open('/etc/passwd').read()"), Expect::Failed),
        ("read ~/.ssh", InCall, t("import os\nos.listdir(os.path.expanduser('~/.ssh'))"), Expect::Failed),
        ("write outside", InCall, t(&format!("open('{MARKER_FILE}', 'w').write('x')")), Expect::Failed),
        // The WebAssembly guest's standard library is a read-only mount.
        ("write the stdlib", InCall, t("open('/stdlib/json/__init__.pyc', 'wb').write(b'x')"), Expect::Failed),
        ("plant in the stdlib", InCall, t("open('/stdlib/evil.pyc', 'wb').write(b'x')"), Expect::Failed),
        ("socket", InCall, t("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)"), Expect::Failed),
        ("dns", InCall, t("import socket\nsocket.gethostbyname('example.com')"), Expect::Failed),
        ("http", InCall, t("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)"), Expect::Failed),
        ("fd flood", InCall, t("import os\nwhile True:\n    os.write(1, b'x' * 65536)"), Expect::OutputLimit),
        ("binary garbage", InCall, t("import os\nos.write(1, bytes(range(256)) * 64)"), Expect::FailedWith("AssertionError")),
        ("sys.exit(0)", TopLevel, t("import sys\nsys.exit(0)"), Expect::FailedWith("SystemExit")),
        ("os._exit(0)", TopLevel, t("import os\nos._exit(0)"), Expect::Crashed),
        ("raise SystemExit in the call", InCall, t("raise SystemExit(0)"), Expect::FailedWith("SystemExit")),
        ("old-style fake pass marker", TopLevel, t("import os\nos.write(1, b'\\nPASS\\nok\\tend\\t0\\tpass\\t\\t\\t\\t0\\n')"), Expect::FailedWith("AssertionError")),
        ("override print", TopLevel, t("import builtins\nbuiltins.print = lambda *a, **k: None"), Expect::FailedWith("AssertionError")),
        ("patch AssertionError", TopLevel, t("import builtins\nclass E(Exception):\n    pass\nbuiltins.AssertionError = E"), Expect::FailedWith("AssertionError")),
        ("patch os.write", TopLevel, t("import os\n_w = os.write\nos.write = lambda fd, b: _w(fd, b.replace(b'fail', b'pass'))"), Expect::FailedWith("AssertionError")),
        ("close stdout", TopLevel, t("import os\nos.close(1)"), Expect::NotPassed),
        ("signal self", InCall, t("import signal\nsignal.alarm(1)\nwhile True:\n    pass"), Expect::NotPassed),
        ("kill parent", InCall, t("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"), Expect::Failed),
        ("ctypes", InCall, t("import ctypes\nctypes.CDLL(None).system(b'true')"), Expect::Failed),
        ("host environment", InCall, t("import os\nassert os.environ.get('PATH') or os.environ.get('HOME')"), Expect::FailedWith("AssertionError")),
        ("proc environ", InCall, t("assert open('/proc/1/environ', 'rb').read()"), Expect::Failed),
        ("read the host's stdin", InCall, t("import os\nos.read(0, 1 << 20)"), Expect::NotPassed),
        ("gc scan", InCall, t("import gc\ngc.get_objects()"), Expect::Failed),
        ("threads via _thread", InCall, t("import _thread\n_thread.start_new_thread(print, ())"), Expect::Failed),
        // A hostile dataset: the trusted instance is confined like the untrusted one and
        // is replaced when a test breaks it.
        ("test loops forever", InTest, t("while True:\n    pass"), Expect::Timeout),
        ("test exhausts memory", InTest, t("x = []\nwhile True:\n    x.append(bytearray(1 << 20))"), Expect::Memory),
        ("test kills its interpreter", InTest, t("import os\nos._exit(0)"), Expect::Crashed),
        ("test floods fd 1", InTest, t("import os\nwhile True:\n    os.write(1, b'x' * 65536)"), Expect::OutputLimit),
        ("test reads files", InTest, t("open('/etc/passwd').read()"), Expect::Failed),
        ("test spawns a process", InTest, t("import subprocess\nsubprocess.run(['id'])"), Expect::Failed),
    ]
}

fn hostile_job(name: &str, place: Place, code: &str) -> Job {
    let indent = |code: &str| {
        code.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let g = "def g(x):\n    return x + 1\n";
    let f_wrong = "def f(x):\n    return x + 2\n";
    let (solution, test) = match place {
        Place::InCall => (
            format!("{g}def f(x):\n{}    return x + 2\n", indent(code)),
            "assert f(1) == 2".to_string(),
        ),
        Place::TopLevel => (format!("{g}{code}\n{f_wrong}"), "assert f(1) == 2".into()),
        Place::InTest => (format!("{g}{f_wrong}"), code.to_string()),
    };
    Job {
        id: name.into(),
        solution,
        tests: vec![test, "assert g(1) == 2".into()],
        check_syntax: false,
        ..Default::default()
    }
}

fn run_battery(backend: &dyn Backend) {
    let _ = std::fs::remove_file(MARKER_FILE);
    let mut failures = Vec::new();
    for (name, place, code, expect) in battery() {
        let job = hostile_job(name, place, &code);
        let started = std::time::Instant::now();
        let result = backend.run(&job, &limits());
        let took = started.elapsed();
        let ok = result.sandbox_error.is_none()
            && result.tests.len() == 2
            && matches(&result.tests[0].outcome, expect)
            && took < Duration::from_secs(15);
        // The benign test after a hostile one still runs, and passes unless the hostile
        // code sits at the top level and breaks every run (sys.exit, os._exit, close(1)).
        let poisons_solution = matches!(name, "sys.exit(0)" | "os._exit(0)" | "close stdout");
        let benign_ok = result
            .tests
            .get(1)
            .is_some_and(|t| t.outcome.passed() != poisons_solution);
        eprintln!(
            "[{}] {name:<28} {:?} then {:?} ({:.2}s)",
            backend.name(),
            result.tests.first().map(|t| &t.outcome),
            result.tests.get(1).map(|t| &t.outcome),
            took.as_secs_f64()
        );
        if !ok || !benign_ok {
            failures.push(format!("{name}: expected {expect:?}, got {result:?}"));
        }
    }
    assert!(
        !std::path::Path::new(MARKER_FILE).exists(),
        "a program wrote {MARKER_FILE} on the host"
    );
    assert!(
        failures.is_empty(),
        "{} of {} hostile programs misjudged:\n{}",
        failures.len(),
        battery().len(),
        failures.join("\n")
    );
}

#[test]
fn ordinary_code_still_works() {
    // The protections must not break what solutions commonly import and do.
    let job = Job {
        id: "stdlib".into(),
        solution: "import re, json, collections, dataclasses, typing, enum, functools, itertools, math, heapq, bisect, string\n\
                   from collections import namedtuple, Counter\n\
                   P = namedtuple('P', 'x y')\n\
                   @dataclasses.dataclass\nclass D:\n    a: int\n\
                   class C(enum.Enum):\n    A = 1\n\
                   def f(s):\n    return re.findall(r'\\d+', s)\n"
            .into(),
        tests: vec![
            "assert f('a1b22') == ['1', '22']".into(),
            "assert json.loads(json.dumps({'a': [1]})) == {'a': [1]}".into(),
            "assert P(1, 2).y == 2 and D(3).a == 3 and C.A.value == 1".into(),
            "assert Counter('aab')['a'] == 2 and math.gcd(12, 18) == 6".into(),
            "print('out'); import sys; print('err', file=sys.stderr); assert True".into(),
        ],
        check_syntax: true,
        ..Default::default()
    };
    for backend in backends() {
        let r = backend.run(&job, &limits());
        assert_eq!(r.passed(), 5, "[{}] {r:?}", backend.name());
        assert_eq!(r.syntax_ok, Some(true));
        assert_eq!(
            (r.tests[4].stdout.as_str(), r.tests[4].stderr.as_str()),
            ("out\n", "err\n")
        );
    }
}

#[test]
fn hostile_battery_wasm() {
    assert!(battery().len() >= 44);
    run_battery(wasm());
}

#[test]
fn hostile_battery_process() {
    run_battery(process());
}
