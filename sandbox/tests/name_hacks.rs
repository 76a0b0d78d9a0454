//! The second reward-hack battery, written against the two-interpreter design itself:
//! solutions that never forge a frame but change what a test's names mean (shadowed
//! builtins and modules, redefined prompt helpers), let a handle answer a verdict (`in`,
//! `len`), steer the test with control-flow exceptions, or leave something behind for a
//! later job (a test that evaluates or unpickles their output, a module they announce).
//! Each hack runs on both backends and must not pass; each has a control that shows the
//! attack is real: the same tests pass for an honest solution, or the hack's own evidence
//! (its exception, its printed trace) shows it ran as designed.

mod common;

use common::backends;

use couplet_sandbox::{Backend, Job, JobResult, Limits, Outcome, ProcessBackend, WasmBackend};

fn limits() -> Limits {
    common::hack_limits()
}

fn job(solution: &str, tests: &[&str]) -> Job {
    Job {
        id: "hack".into(),
        solution: solution.into(),
        tests: tests.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

fn failed_with(r: &JobResult, i: usize, error: &str) -> bool {
    matches!(&r.tests[i].outcome, Outcome::Failed { error: e } if e == error)
}

/// (name, wrong solution, honest solution, tests): the wrong one shadows a name the tests
/// use so that, were the name taken from the solution, every test would pass.
fn shadowing() -> Vec<(&'static str, &'static str, &'static str, Vec<&'static str>)> {
    vec![
        ("abs", "def abs(x):\n    return 0\ndef f(x):\n    return 1.5\n", "def f(x):\n    return x * 1.5\n",
         vec!["assert abs(f(2) - 3.0) < 1e-6"]),
        ("sorted", "def sorted(x):\n    return [1, 2, 3]\ndef f(x):\n    return [9, 9, 9]\n", "def f(x):\n    return x[::-1]\n",
         vec!["assert sorted(f([3, 1, 2])) == [1, 2, 3]"]),
        ("len", "def len(x):\n    return 3\ndef f(x):\n    return []\n", "def f(x):\n    return [x] * 3\n",
         vec!["assert len(f(1)) == 3"]),
        ("set", "class set:\n    def __init__(self, *a):\n        pass\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return [0]\n",
         "def f(x):\n    return [x, x]\n", vec!["assert set(f(4)) == set([4])"]),
        ("range and zip", "def range(*a):\n    return []\ndef zip(*a):\n    return []\ndef f(x):\n    return -1\n",
         "def f(x):\n    return x + 1\n", vec!["for x, y in zip(range(3), [1, 2, 3]):\n    assert f(x) == y"]),
        ("enumerate", "def enumerate(x):\n    return []\ndef f(x):\n    return -1\n", "def f(x):\n    return x\n",
         vec!["for i, x in enumerate([0, 1, 2]):\n    assert f(x) == i"]),
        ("all and any", "def all(x):\n    return True\ndef any(x):\n    return True\ndef f(x):\n    return False\n",
         "def f(x):\n    return x > 0\n", vec!["assert all([f(1), f(2)])", "assert any([f(0), f(5)])"]),
        ("a class named math", "class math:\n    @staticmethod\n    def isclose(a, b):\n        return True\ndef f(x):\n    return 0.0\n",
         "import math\ndef f(x):\n    return x / 2\n", vec!["assert math.isclose(f(5), 2.5)"]),
        ("another module imported as math", "import cmath as math\ndef f(x):\n    return complex(x)\n",
         "import math\ndef f(x):\n    return math.sqrt(x)\n", vec!["assert math.sqrt(f(16)) == 2.0"]),
        ("a solution module shadowing a test module", "import types as json\ndef f(x):\n    return x\n",
         "import json\ndef f(x):\n    return json.loads(x)\n", vec!["assert f(json.dumps([1])) == [1]"]),
    ]
}

#[test]
fn solution_names_never_shadow_builtins_or_modules() {
    for backend in backends() {
        for (name, wrong, honest, tests) in shadowing() {
            let r = backend.run(&job(honest, &tests), &limits());
            assert_eq!(
                r.pass_rate(),
                Some(1.0),
                "[{}] honest {name}: {r:?}",
                backend.name()
            );
            let r = backend.run(&job(wrong, &tests), &limits());
            eprintln!(
                "[{}] shadow {name:<42} {:?}",
                backend.name(),
                r.tests.iter().map(|t| &t.outcome).collect::<Vec<_>>()
            );
            // The test ran with the real builtin or module and failed at its assert (or,
            // for a module the solution renamed, never saw the solution's name).
            let refused =
                |i| failed_with(&r, i, "AssertionError") || failed_with(&r, i, "NameError");
            assert!(
                (0..tests.len()).all(refused),
                "[{}] shadowing {name} was not refused as designed: {r:?}",
                backend.name()
            );
        }
    }
}

#[test]
fn an_entry_point_may_carry_a_builtin_name_when_the_task_asks_for_it() {
    // The task asks for `max` (rare, but a dataset may): the test gets the solution's.
    let tests = ["assert max([3, 1, 2]) == 'three'"];
    for backend in backends() {
        let mut j = job("def max(xs):\n    return 'three'\n", &tests);
        let r = backend.run(&j, &limits());
        assert!(failed_with(&r, 0, "AssertionError"), "undeclared: {r:?}");
        j.entry_points = vec!["max".into()];
        let r = backend.run(&j, &limits());
        assert_eq!(
            r.pass_rate(),
            Some(1.0),
            "[{}] declared: {r:?}",
            backend.name()
        );
    }
}

#[test]
fn handles_never_answer_in_or_len() {
    let objects = "class All:\n    def __contains__(self, x):\n        return True\n    def __len__(self):\n        return 3\n    def __iter__(self):\n        return iter([])\n\
                   def f(x):\n    return All()\n";
    let tests = [
        "assert 3 in f(1)",
        "assert len(f(1)) == 3",
        "assert 3 in f(1) and 5 in f(1)",
    ];
    let honest = "class Bag:\n    def __init__(self, items):\n        self.items = items\n    def __iter__(self):\n        return iter(self.items)\n\
                  def f(x):\n    return Bag([x, 3, 5])\n";
    for backend in backends() {
        let r = backend.run(&job(honest, &tests), &limits());
        assert_eq!(
            r.pass_rate(),
            Some(1.0),
            "[{}] honest: {r:?}",
            backend.name()
        );
        let r = backend.run(&job(objects, &tests), &limits());
        // Answered from the (empty) iteration: 3 is not in it, its length is 0.
        assert!(
            (0..3).all(|i| failed_with(&r, i, "AssertionError")),
            "[{}] {r:?}",
            backend.name()
        );
    }
}

#[test]
fn control_flow_exceptions_cross_as_opaque_errors() {
    let cases = [
        (
            "StopIteration",
            "def f(x):\n    raise StopIteration\n",
            "assert all(map(f, [1, 2, 3]))",
        ),
        (
            "StopIteration",
            "def f(x):\n    raise StopIteration\n",
            "assert not list(filter(lambda v: not f(v), [1, 2]))",
        ),
        (
            "StopAsyncIteration",
            "def f(x):\n    raise StopAsyncIteration\n",
            "assert all(map(f, [1]))",
        ),
        (
            "GeneratorExit",
            "def f(x):\n    raise GeneratorExit\n",
            "try:\n    f(1)\nexcept GeneratorExit:\n    pass\nelse:\n    assert False",
        ),
        (
            "KeyboardInterrupt",
            "def f(x):\n    raise KeyboardInterrupt\n",
            "try:\n    f(1)\nexcept KeyboardInterrupt:\n    pass\nelse:\n    assert False",
        ),
        (
            "SystemExit",
            "def f(x):\n    raise SystemExit(0)\n",
            "try:\n    f(1)\nexcept SystemExit:\n    pass\nelse:\n    assert False",
        ),
    ];
    // A generator's own end still ends iteration, and ordinary errors still cross as
    // themselves (a test may expect them).
    let honest = "def gen(n):\n    yield from range(n)\ndef f(x):\n    raise ValueError('bad')\n";
    let honest_tests = [
        "assert list(gen(3)) == [0, 1, 2]",
        "try:\n    f(1)\nexcept ValueError:\n    pass\nelse:\n    assert False",
    ];
    for backend in backends() {
        let r = backend.run(&job(honest, &honest_tests), &limits());
        assert_eq!(
            r.pass_rate(),
            Some(1.0),
            "[{}] honest: {r:?}",
            backend.name()
        );
        for (name, solution, test) in cases {
            let r = backend.run(&job(solution, &[test]), &limits());
            assert!(
                failed_with(&r, 0, name),
                "[{}] {name} steered the test: {r:?}",
                backend.name()
            );
        }
    }
}

/// The solution's output, run as code by the test, would rewrite the trusted side's
/// exception classes so that every later failing assert passes (on that worker, for
/// every later job).
const POISON: &str = "def f(x):\n    return \"__import__('builtins').__dict__.update(AssertionError=type('E', (Exception,), {}))\"\n";

#[test]
fn nothing_a_job_leaves_in_the_trusted_interpreter_reaches_the_next() {
    let wrong_later = job(
        "def g(x):\n    return -1\n",
        &["assert g(1) == 2", "assert g(2) == 3"],
    );
    let poisoners = [
        ("eval", "eval(f(1))\nassert False"),
        ("eval of a piece", "eval(f(1).strip()[0:])\nassert False"),
        (
            "exec of code built around it",
            "exec('if True:\\n    ' + f(1))\nassert False",
        ),
        ("exec", "exec(f(1))\nassert False"),
        ("compile", "exec(compile(f(1), 'x', 'exec'))\nassert False"),
        (
            "unpickle",
            "import pickle\npickle.loads(f(1))\nassert False",
        ),
    ];
    let pickled = "import pickle, builtins\nclass P:\n    def __reduce__(self):\n        return (exec, (\"__import__('builtins').__dict__.update(AssertionError=type('E', (Exception,), {}))\",))\n\
                   def f(x):\n    return pickle.dumps(P())\n";
    for backend in backends() {
        for (how, test) in poisoners {
            let solution = if how == "unpickle" { pickled } else { POISON };
            // Twice on purpose: a poisoned instance reused by the next job would show here.
            for _ in 0..2 {
                let r = backend.run(&job(solution, &[test, "assert 1 == 2"]), &limits());
                assert!(
                    failed_with(&r, 0, "PermissionError"),
                    "[{}] {how}: {r:?}",
                    backend.name()
                );
                assert!(
                    failed_with(&r, 1, "AssertionError"),
                    "[{}] {how}: {r:?}",
                    backend.name()
                );
                let r = backend.run(&wrong_later, &limits());
                assert_eq!(r.passed(), 0, "[{}] after {how}: {r:?}", backend.name());
            }
        }
        // Honest tests may still evaluate their own code and unpickle plain data.
        let honest = job("def f(x):\n    return x\n", &[
            "assert eval('1 + 1') == 2 and f(2) == 2",
            "import ast\nassert ast.literal_eval(f('[1, (2, 3)]')) == [1, (2, 3)]",
            "assert eval(f('[1, -2.5, (3, 4j), {5: None}]')) == [1, -2.5, (3, 4j), {5: None}]",
            "import pickle\nassert pickle.loads(pickle.dumps({'a': [1, 2j]})) == {'a': [1, 2j]}",
            "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\nassert P(f(1)).x == 1",
        ]);
        let r = backend.run(&honest, &limits());
        assert_eq!(
            r.pass_rate(),
            Some(1.0),
            "[{}] honest: {r:?}",
            backend.name()
        );
    }
}

/// Code the gate cannot trace to the solution (the test decodes base64 the solution
/// returned, then runs it) does run in the trusted instance — the documented residual, shown
/// here by its effect on the same job — but that instance serves no further job.
#[test]
fn code_made_at_run_time_never_outlives_its_job() {
    // The solution hands over the patch base64-encoded; the test decodes and runs it.
    let poisoner = job(
        "import base64\ndef f(x):\n    return base64.b64encode(b'import math; math.isclose = lambda *a, **k: True').decode()\n",
        &["import base64, math\nexec(base64.b64decode(f(1)))\nassert math.isclose(1.0, 2.0)"],
    );
    let later = job(
        "def g(x):\n    return -1.0\n",
        &["import math\nassert math.isclose(g(1), 2.0)"],
    );
    // Backends of this test's own, so the only idle trusted instance is the poisoner's.
    let wasm = WasmBackend::from_repo(&common::root()).unwrap();
    let process = ProcessBackend::new(&ProcessBackend::default_python()).unwrap();
    for backend in [&wasm as &dyn Backend, &process] {
        for _ in 0..3 {
            let r = backend.run(&poisoner, &limits());
            // The patch ran on the trusted side: the job's own test passes.
            assert!(
                r.tests[0].outcome.passed(),
                "[{}] the attack did not run: {r:?}",
                backend.name()
            );
            let r = backend.run(&later, &limits());
            assert!(
                failed_with(&r, 0, "AssertionError"),
                "[{}] the patch outlived its job: {r:?}",
                backend.name()
            );
        }
    }
}

#[test]
fn announced_modules_are_standard_library_imports_only() {
    // From the second test on, the solution's rewritten harness announces `helper` as the
    // standard `json` (allowed: proof that the lie is delivered) and `helper2` as a module
    // it could have planted (refused: the trusted side imports nothing else).
    let lying = "import __main__\n\
def _lying(seq, setup_code, code, pristine, handle_of):\n    return (b'N', seq, b'l2:u3:s1:ms6:helpers4:jsonu3:s1:ms7:helper2s12:evil_helpers')\n\
__main__._reset = _lying\n";
    let tests = [
        "assert True",
        "assert helper.loads('[1]') == [1]",
        "assert helper2 is not None",
    ];
    for backend in backends() {
        let r = backend.run(&job(lying, &tests), &limits());
        assert!(
            r.tests[0].outcome.passed() && r.tests[1].outcome.passed(),
            "[{}] {r:?}",
            backend.name()
        );
        assert!(
            failed_with(&r, 2, "NameError"),
            "[{}] {r:?}",
            backend.name()
        );
    }
}

#[test]
fn a_parser_crash_is_a_syntax_failure_not_a_lost_reward() {
    let deep = format!("x = {}1{}\n", "(".repeat(6000), ")".repeat(6000));
    let terms = format!("x = {}\n", vec!["1"; 6000].join(" + "));
    for backend in backends() {
        for solution in [&deep, &terms] {
            let mut j = job(solution, &["assert True"]);
            j.check_syntax = true;
            let r = backend.run(&j, &limits());
            assert!(r.sandbox_error.is_none(), "[{}] {r:?}", backend.name());
            assert!(
                r.syntax_ok.is_some(),
                "[{}] syntax unknown: {r:?}",
                backend.name()
            );
        }
        let r = backend.run(
            &job("def f():\n    return 1\n", &["assert f() == 1"]),
            &limits(),
        );
        assert_eq!(
            r.pass_rate(),
            Some(1.0),
            "[{}] the next job: {r:?}",
            backend.name()
        );
    }
}
