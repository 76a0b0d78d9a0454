//! Benchmark formats in `eval`: EvalPlus HumanEval+/MBPP+ (outputs judged against the
//! canonical solution's, float tolerance, base and plus scored apart) and MBPP's own
//! format. Canonical solutions pass (the wiring), and wrong, base-only and forged answers
//! do not. Every fixture is written here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use couplet_sandbox::{Limits, SandboxPool, WasmBackend};
use couplet_trainer::{check_completions, load_benchmark, EvalProblem, EvalReport};
use serde_json::json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pool() -> SandboxPool {
    SandboxPool::new(Arc::new(WasmBackend::from_repo(&repo()).unwrap()), 2).unwrap()
}

/// Writes `rows` as JSON lines; `"BIG"` becomes a 30-digit integer literal (beyond what
/// `json!` and f64 hold).
fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            r.to_string()
                .replace("\"BIG\"", "123456789012345678901234567890")
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// HumanEval+-style tasks: a float task (with `atol`), an int task with many plus inputs
/// (more than one test program's worth), and HumanEval/32's root oracle.
fn humaneval_plus(dir: &Path) -> PathBuf {
    let path = dir.join("HumanEvalPlus.jsonl");
    let plus_ints: Vec<serde_json::Value> = (0..120).map(|i| json!([i, i * 3 + 1])).collect();
    write_jsonl(
        &path,
        &[
            json!({
                "task_id": "HumanEval/2",
                "prompt": "def truncate_number(number: float) -> float:\n    \"\"\"The decimal part.\"\"\"\n",
                "entry_point": "truncate_number",
                "canonical_solution": "    return number % 1.0\n",
                "contract": "",
                "base_input": [[3.5], [1.33]],
                "plus_input": [[123.456], [0.0001], [1e10 + 0.25]],
                "atol": 1e-6,
            }),
            json!({
                "task_id": "HumanEval/53",
                "prompt": "def add(x: int, y: int):\n    \"\"\"Add two numbers.\"\"\"\n",
                "entry_point": "add",
                "canonical_solution": "    return x + y\n",
                "base_input": [[0, 1], [2, 3], ["BIG", 1]],
                "plus_input": plus_ints,
                "atol": 0,
            }),
            json!({
                "task_id": "HumanEval/32",
                "prompt": "import math\n\ndef find_zero(xs: list):\n    \"\"\"A root of the polynomial xs.\"\"\"\n",
                "entry_point": "find_zero",
                "canonical_solution": "    lo, hi = -1.0, 1.0\n    while sum(c * lo ** i for i, c in enumerate(xs)) * sum(c * hi ** i for i, c in enumerate(xs)) > 0:\n        lo *= 2.0\n        hi *= 2.0\n    for _ in range(200):\n        mid = (lo + hi) / 2\n        if sum(c * lo ** i for i, c in enumerate(xs)) * sum(c * mid ** i for i, c in enumerate(xs)) > 0:\n            lo = mid\n        else:\n            hi = mid\n    return lo\n",
                "base_input": [[[1, 2]], [[-6, 11, -6, 1]]],
                "plus_input": [[[2, -3]]],
                "atol": 1e-6,
            }),
        ],
    );
    path
}

fn sample(code: &str) -> String {
    format!("```python\n{code}\n```\n")
}

fn judge(problems: &[EvalProblem], samples: Vec<Vec<String>>) -> EvalReport {
    check_completions(problems, &samples, &[1], &pool(), Limits::default())
}

fn passes(report: &EvalReport, problem: usize) -> (Vec<bool>, Vec<bool>) {
    let p = &report.problems[problem];
    (p.passed.clone(), p.passed_plus.clone().unwrap())
}

#[test]
fn humaneval_plus_canonical_solutions_pass_base_and_plus() {
    let tmp = tempfile::tempdir().unwrap();
    let path = humaneval_plus(tmp.path());
    let problems = load_benchmark(&path.to_string_lossy(), &repo()).unwrap();
    assert_eq!(problems.len(), 3);
    // 120 plus inputs: three test programs of at most 50 inputs each.
    assert_eq!(
        (problems[1].tests.len(), problems[1].plus_tests.len()),
        (1, 3)
    );
    assert!(problems[0]
        .question
        .contains("def truncate_number(number: float)"));
    let samples = problems
        .iter()
        .map(|p| vec![sample(p.reference.as_ref().unwrap())])
        .collect();
    let report = judge(&problems, samples);
    assert_eq!(report.sandbox_errors, 0);
    for (i, p) in report.problems.iter().enumerate() {
        assert_eq!(
            (p.correct, p.correct_plus),
            (1, Some(1)),
            "problem {i}: {p:?}"
        );
    }
    assert_eq!(report.pass_at(1), Some(1.0));
    assert_eq!(report.pass_at_k_plus.as_deref(), Some(&[(1, 1.0)][..]));
    let table = report.summary_table();
    assert!(table.contains("base+plus"), "{table}");
}

#[test]
fn outputs_are_judged_like_evalplus() {
    let tmp = tempfile::tempdir().unwrap();
    let problems = load_benchmark(&humaneval_plus(tmp.path()).to_string_lossy(), &repo()).unwrap();
    let float_task = vec![
        // Within atol of the canonical output.
        sample("def truncate_number(number):\n    return number - int(number) + 1e-9"),
        // Off by 1e-3.
        sample("def truncate_number(number):\n    return number - int(number) + 1e-3"),
        // Right on the base inputs only (hard-coded).
        sample("def truncate_number(number):\n    return {3.5: 0.5, 1.33: 0.33000000000000007}[number]"),
        // An object that equals everything is not plain data: never a pass.
        sample("class Yes:\n    def __eq__(self, other):\n        return True\n    def __sub__(self, other):\n        return 0.0\ndef truncate_number(number):\n    return Yes()"),
        // The judge's tolerance check calls `abs`: a solution's `abs` is not the judge's.
        sample("def abs(x):\n    return 0.0\ndef truncate_number(number):\n    return 0.25"),
    ];
    let int_task = vec![
        sample("def add(x, y):\n    return x + y"),
        // Right except on one plus input in the last program.
        sample("def add(x, y):\n    return x + y + (x == 110)"),
        // Inputs reach Python exactly: a 30-digit int stays an int.
        sample("def add(x, y):\n    return x + y if type(x) is int else None"),
        // A float equal in value to an int output passes `==` (as in EvalPlus), but not
        // where the float cannot hold the 30-digit sum.
        sample("def add(x, y):\n    return float(x + y)"),
    ];
    let root_task = vec![
        // Any root passes the oracle, not only the canonical one.
        sample("def find_zero(xs):\n    return 0.0"),
        // A solution's `abs` or `poly` does not change the oracle.
        sample("def abs(x):\n    return 0.0\ndef poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 12345.0"),
        sample("def find_zero(xs):\n    lo, hi = -100.0, 100.0\n    f = lambda x: sum(c * x ** i for i, c in enumerate(xs))\n    for _ in range(300):\n        mid = (lo + hi) / 2\n        if f(lo) * f(mid) > 0:\n            lo = mid\n        else:\n            hi = mid\n    return hi"),
    ];
    let report = judge(&problems, vec![float_task, int_task, root_task]);
    assert_eq!(
        passes(&report, 0),
        (
            vec![true, false, true, false, false],
            vec![true, false, false, false, false]
        )
    );
    assert_eq!(
        passes(&report, 1),
        (
            vec![true, true, true, false],
            vec![true, false, true, false]
        )
    );
    assert_eq!(
        passes(&report, 2),
        (vec![false, false, true], vec![false, false, true])
    );
    assert!(report.non_data.results >= 1, "the forged object is counted");
}

/// MBPP+ as EvalPlus judges it: inputs re-typed (Mbpp/2 takes tuples), set equality for
/// Mbpp/2, and Mbpp/737's "returned something" oracle for a non-data (match object) result.
#[test]
fn mbpp_plus_inputs_are_retyped_and_its_oracles_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("MbppPlus.jsonl");
    write_jsonl(
        &path,
        &[
            json!({
                "task_id": "Mbpp/2",
                "prompt": "\"\"\"\nWrite a function to find the shared elements from the given two lists.\nassert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n\"\"\"\n",
                "entry_point": "similar_elements",
                "canonical_solution": "\ndef similar_elements(test_tup1, test_tup2):\n  return tuple(set(test_tup1) & set(test_tup2))\n",
                "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]]],
                "plus_input": [[[11, 12, 14, 13], [17, 15, 14, 13]]],
                "atol": 0,
            }),
            json!({
                "task_id": "Mbpp/737",
                "prompt": "\"\"\"\nWrite a function to check whether the given string is starting with a vowel or not using regex.\nassert check_str(\"annie\")\n\"\"\"\n",
                "entry_point": "check_str",
                "canonical_solution": "import re\nregex = '^[aeiouAEIOU][A-Za-z0-9_]*'\ndef check_str(string):\n  return re.search(regex, string)\n",
                "base_input": [["annie"], ["dawood"]],
                "plus_input": [["Else"], ["xyz"]],
                "atol": 0,
            }),
        ],
    );
    let problems = load_benchmark(&path.to_string_lossy(), &repo()).unwrap();
    let shared = vec![
        sample(problems[0].reference.as_ref().unwrap()),
        // Only tuples (EvalPlus's types) get an answer; the order differs (set equality).
        sample("def similar_elements(a, b):\n    if type(a) is not tuple:\n        return None\n    return tuple(sorted(set(a) & set(b), reverse=True))"),
        sample("def similar_elements(a, b):\n    return (a[0],)"),
    ];
    let vowel = vec![
        // Returns a match object (not plain data): judged on whether it returned one.
        sample(problems[1].reference.as_ref().unwrap()),
        sample("import re\ndef check_str(s):\n    return bool(re.match('[aeiouAEIOU]', s))"),
        sample("def check_str(s):\n    return True"),
    ];
    let report = judge(&problems, vec![shared, vowel]);
    assert_eq!(report.sandbox_errors, 0);
    assert_eq!(
        passes(&report, 0),
        (vec![true, true, false], vec![true, true, false])
    );
    assert_eq!(
        passes(&report, 1),
        (vec![true, true, false], vec![true, true, false])
    );
}

#[test]
fn mbpp_rows_become_docstring_prompts_and_assert_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mbpp.jsonl");
    write_jsonl(
        &path,
        &[
            json!({
                "task_id": 11,
                "text": "Write a python function to remove first and last occurrence of a given character from the string.",
                "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
                "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"", "assert remove_Occ(\"PHP\",\"P\") == \"H\""],
                "test_setup_code": "",
                "challenge_test_list": ["assert remove_Occ(\"hellolloll\",\"l\") == \"helollol\"", "assert remove_Occ(\"\",\"l\") == \"\""],
            }),
            json!({
                "task_id": 2,
                "text": "Write a function to find the shared elements from the given two lists.",
                "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
                "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"],
                "test_setup_code": "import math",
                "challenge_test_list": [],
            }),
            // MBPP's harness runs test_setup_code in the solution's program: the canonical
            // solution reads a constant it defines.
            json!({
                "task_id": 900,
                "text": "Write a function that caps a number at LIMIT.",
                "code": "def cap(x):\n    return min(x, LIMIT)",
                "test_list": ["assert cap(5) == LIMIT", "assert cap(1) == 1"],
                "test_setup_code": "LIMIT = 3",
                "challenge_test_list": [],
            }),
        ],
    );
    let problems = load_benchmark(&path.to_string_lossy(), &repo()).unwrap();
    assert_eq!(problems[0].id, "Mbpp/11");
    assert!(problems[0].question.contains(
        "\"\"\"\nWrite a python function to remove first and last occurrence of a given character from the string.\nassert remove_Occ(\"hello\",\"l\") == \"heo\"\n\"\"\""
    ), "{}", problems[0].question);
    assert_eq!(
        (problems[0].tests.len(), problems[0].plus_tests.len()),
        (3, 2)
    );
    assert_eq!(problems[1].setup, "import math");
    assert_eq!(problems[2].setup, "LIMIT = 3");
    assert_eq!(problems[2].tests[0], "assert cap(5) == LIMIT\n");
    let canonical = problems
        .iter()
        .map(|p| vec![sample(p.reference.as_ref().unwrap())])
        .collect();
    let report = judge(&problems, canonical);
    assert_eq!(report.pass_at(1), Some(1.0));
    assert_eq!(report.pass_at_k_plus.as_deref(), Some(&[(1, 1.0)][..]));
    assert_eq!(report.non_data.total(), 0);
    let wrong = vec![
        vec![sample(
            "def remove_Occ(s, ch):\n    return s.replace(ch, '')",
        )],
        vec![sample("def similar_elements(a, b):\n    return (4, 5)")],
        // Redefining the setup's constant changes nothing for the tests: they see the
        // dataset's LIMIT (3), not the solution's.
        vec![sample("LIMIT = 99\ndef cap(x):\n    return min(x, LIMIT)")],
    ];
    let report = judge(&problems, wrong);
    // `replace` passes the three base asserts but not the first challenge one.
    assert_eq!(passes(&report, 0), (vec![true], vec![false]));
    assert_eq!(passes(&report, 1), (vec![true], vec![true]));
    assert_eq!(passes(&report, 2), (vec![false], vec![false]));
}

#[test]
fn bad_evalplus_rows_name_the_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.jsonl");
    let good = json!({"task_id": "HumanEval/0", "prompt": "def f():\n", "entry_point": "f",
        "canonical_solution": "    return 1\n", "base_input": [[]], "plus_input": [], "atol": 0});
    let mut bad = good.clone();
    bad["base_input"] = json!([1, 2]);
    write_jsonl(&path, &[good.clone(), bad]);
    let err = load_benchmark(&path.to_string_lossy(), &repo()).unwrap_err();
    assert!(
        err.contains("bad.jsonl") && err.contains("line 2") && err.contains("base_input"),
        "{err}"
    );
    let mut bad = good;
    bad["entry_point"] = json!("f; import os");
    write_jsonl(&path, &[bad]);
    let err = load_benchmark(&path.to_string_lossy(), &repo()).unwrap_err();
    assert!(err.contains("entry_point"), "{err}");
}
