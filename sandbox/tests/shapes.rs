//! The test shapes users have, through the trusted/untrusted split on both backends:
//! AceCoder asserts of every common form, objects kept alive across calls by handles,
//! HumanEval-style `check(candidate)`, MBPP `test_list` with `test_setup_code`, exceptions,
//! in-place mutation — and the shapes that cannot be evaluated, failing with their reason.

mod common;

use std::time::Duration;

use common::backends;

use couplet_sandbox::{
    Job, JobResult, Limits, NonDataCounts, Outcome, NON_DATA_ARGUMENT, NON_DATA_RESULT,
};

fn limits() -> Limits {
    Limits {
        per_test: Duration::from_secs(3),
        per_job: Duration::from_secs(60),
        ..Limits::default()
    }
}

fn run(solution: &str, tests: &[&str]) -> Vec<JobResult> {
    let job = Job {
        id: "shapes".into(),
        solution: solution.into(),
        tests: tests.iter().map(|t| t.to_string()).collect(),
        check_syntax: true,
        ..Default::default()
    };
    backends().iter().map(|b| b.run(&job, &limits())).collect()
}

fn assert_all_pass(solution: &str, tests: &[&str]) {
    for (r, backend) in run(solution, tests).iter().zip(backends()) {
        let failed: Vec<String> = r
            .tests
            .iter()
            .zip(tests)
            .filter(|(t, _)| !t.outcome.passed())
            .map(|(t, src)| format!("{src:?}: {:?}", t.outcome))
            .collect();
        assert!(
            failed.is_empty() && r.sandbox_error.is_none(),
            "[{}] {failed:#?} {:?}",
            backend.name(),
            r.sandbox_error
        );
    }
}

#[test]
fn acecoder_assert_forms_pass() {
    let solution = "import math\nfrom typing import List, Optional\n\
                    def f(x):\n    return None if x < 0 else x * 2\n\
                    def g(xs: List[int]) -> List[int]:\n    return [x for x in xs if x % 2]\n\
                    def h(x):\n    return x / 3\n\
                    def pair(a, b=1, *, c=0):\n    return (a, b, c), {'sum': a + b + c}\n\
                    def raw(s):\n    return s.encode(), {1, 2}, frozenset([3]), complex(1, -2), float('inf')\n\
                    LIMIT = 10\n";
    assert_all_pass(
        solution,
        &[
            "assert f(2) == 4",
            "assert f(-1) is None",
            "assert not f(0)",
            "assert f(3) != 5",
            "assert abs(h(1) - 0.3333333) < 1e-6",
            "assert math.isclose(h(2), 0.6666666666666666)",
            "assert sorted(g([5, 2, 3])) == [3, 5]",
            "assert g([]) == [] and isinstance(g([1]), list)",
            "assert pair(1, c=3) == ((1, 1, 3), {'sum': 5})",
            "assert raw('é') == ('é'.encode(), {1, 2}, frozenset({3}), 1 - 2j, math.inf)",
            "assert f(LIMIT) == 20 and LIMIT == 10",
            "assert f(10**30) == 2 * 10**30",
            "assert [f(i) for i in range(3)] == [0, 2, 4]",
            "assert math.isnan(h(float('nan')))",
        ],
    );
}

#[test]
fn objects_live_in_the_untrusted_instance_behind_handles() {
    let solution = "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, n in enumerate(nums):\n            if target - n in seen:\n                return [seen[target - n], i]\n            seen[n] = i\n\
                    class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n    def pop(self):\n        return self.items.pop()\n    def __len__(self):\n        return len(self.items)\n    def __contains__(self, x):\n        return x in self.items\n    def __getitem__(self, i):\n        return self.items[i]\n    def __iter__(self):\n        return iter(self.items)\n\
                    def count_up(n):\n    for i in range(n):\n        yield i\n\
                    from collections import Counter\n";
    assert_all_pass(
        solution,
        &[
            "assert Solution().twoSum([2, 7, 11, 15], 9) == [0, 1]",
            "s = Stack()\ns.push(1)\ns.push(2)\nassert len(s) == 2 and 2 in s and s[0] == 1\nassert s.pop() == 2 and s.items == [1]",
            "s = Stack()\ns.items = [4, 5]\nassert list(s) == [4, 5] and sorted(s, reverse=True) == [5, 4]",
            "assert list(count_up(3)) == [0, 1, 2] and sum(count_up(4)) == 6",
            "assert Counter('aab')['a'] == 2",
            "assert Solution is not None and Solution().twoSum([1], 5) is None",
        ],
    );
}

#[test]
fn humaneval_and_mbpp_shapes_pass() {
    let humaneval = "METADATA = {}\n\ndef check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n    assert abs(candidate([0.1, 0.2]) - 0.3) < 1e-9\n\ncheck(total)\n";
    assert_all_pass("def total(xs):\n    return sum(xs)\n", &[humaneval]);
    // MBPP: `test_setup_code` runs before each of `test_list` (both on the trusted side).
    let setup = "import math\nLIMIT = 3\n";
    let tests: Vec<String> = [
        "assert first_repeated('abcabc') == 'a'",
        "assert first_repeated('abc') == 'None'",
        "assert math.floor(LIMIT / 2) == 1",
    ]
    .iter()
    .map(|t| format!("{setup}{t}\n"))
    .collect();
    let refs: Vec<&str> = tests.iter().map(String::as_str).collect();
    assert_all_pass(
        "def first_repeated(s):\n    seen = set()\n    for c in s:\n        if c in seen:\n            return c\n        seen.add(c)\n    return 'None'\n",
        &refs,
    );
}

#[test]
fn exceptions_cross_by_name_and_in_place_mutation_comes_back() {
    let solution =
        "def parse(s):\n    if not s:\n        raise ValueError('empty')\n    return int(s)\n\
                    class Oops(Exception):\n    pass\n\
                    def custom():\n    raise Oops('x')\n\
                    def sort_in_place(xs):\n    xs.sort()\n\
                    def fill(d, s):\n    d['k'] = 1\n    s.add(2)\n";
    assert_all_pass(
        solution,
        &[
            "try:\n    parse('')\n    assert False\nexcept ValueError as e:\n    assert str(e) == 'empty'",
            "a = [3, 1, 2]\nassert sort_in_place(a) is None\nassert a == [1, 2, 3]",
            "d, s = {}, set()\nfill(d, s)\nassert d == {'k': 1} and s == {2}",
        ],
    );
    for r in run(
        solution,
        &["parse('')", "custom()", "assert parse('x') == 1"],
    ) {
        let errors: Vec<&Outcome> = r.tests.iter().map(|t| &t.outcome).collect();
        assert_eq!(
            errors,
            [
                &Outcome::Failed {
                    error: "ValueError".into()
                },
                &Outcome::Failed {
                    error: "Oops".into()
                },
                &Outcome::Failed {
                    error: "ValueError".into()
                },
            ]
        );
    }
}

#[test]
fn shapes_that_cannot_cross_fail_with_their_reason_and_are_counted() {
    let solution = "class P:\n    def __init__(self, x):\n        self.x = x\n    def __eq__(self, o):\n        return self.x == o.x\n\
                    def apply(fn, x):\n    return fn(x)\n\
                    def make(x):\n    return P(x)\n";
    let tests = [
        "assert make(1) == make(1)",             // comparing two solution objects
        "assert apply(lambda v: v + 1, 1) == 2", // a test-defined function as argument
        "from collections import deque\nassert apply(len, deque([1])) == 1", // a non-builtin value
        "assert make(2).x == 2",                 // attribute access is fine
    ];
    for r in run(solution, &tests) {
        let outcomes: Vec<&Outcome> = r.tests.iter().map(|t| &t.outcome).collect();
        assert_eq!(
            outcomes,
            [
                &Outcome::Failed {
                    error: NON_DATA_RESULT.into()
                },
                &Outcome::Failed {
                    error: NON_DATA_ARGUMENT.into()
                },
                &Outcome::Failed {
                    error: NON_DATA_ARGUMENT.into()
                },
                &Outcome::Passed,
            ]
        );
        assert_eq!(
            NonDataCounts::of([&r]),
            NonDataCounts {
                results: 1,
                arguments: 2
            }
        );
    }
}

#[test]
fn a_hang_in_the_solution_is_a_timeout_of_the_test_that_called_it() {
    let solution =
        "import time\ndef slow(x):\n    while True:\n        pass\ndef fast(x):\n    return x\n";
    let tests = [
        "assert fast(1) == 1",
        "assert slow(1) == 1",
        "assert fast(2) == 2",
    ];
    for r in run(solution, &tests) {
        let outcomes: Vec<&Outcome> = r.tests.iter().map(|t| &t.outcome).collect();
        assert_eq!(
            outcomes,
            [&Outcome::Passed, &Outcome::Timeout, &Outcome::Passed]
        );
        assert_eq!(r.instances, 2, "a fresh untrusted instance after the hang");
    }
}
