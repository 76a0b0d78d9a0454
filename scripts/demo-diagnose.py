#!/usr/bin/env python3
"""Reads `couplet eval --out DIR` results on the bundled task set and splits the samples by
cause: how often the completion defined the question's constants (`A = a`, `B = b`), how
often its body is the template's known bug (scripts/make-tasks.py), and pass@1.

    .venv/bin/python scripts/demo-diagnose.py [--benchmark data/tasks/val.jsonl] EVAL_DIR...
"""
import importlib.util
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("make_tasks", os.path.join(HERE, "make-tasks.py"))
tasks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tasks)
TEMPLATES = {t[0]: t for t in tasks.TEMPLATES}


def flat(text):
    return re.sub(r"\s+", " ", text).strip()


def diagnose(path, questions):
    rows = [json.loads(line) for line in open(os.path.join(path, "results.jsonl"))]
    n = copied = buggy = passed = 0
    for row in rows:
        a, b = re.search(r"Use A = (\d+), B = (\d+)\.$", questions[row["id"]]).groups()
        bug = flat(TEMPLATES[row["id"].split("-")[1]][5])
        for completion, ok in zip(row["completions"], row["passed"]):
            n += 1
            passed += int(ok)
            copied += int(re.search(rf"A = {a}\s*\nB = {b}\s*\n", completion) is not None)
            buggy += int(bug in flat(completion))
    return n, copied / n, buggy / n, passed / n


def main():
    print("| run | samples | constants copied | template bug | pass@1 |")
    print("|---|---|---|---|---|")
    args = sys.argv[1:]
    benchmark = "data/tasks/val.jsonl"
    if args[:1] == ["--benchmark"]:
        benchmark, args = args[1], args[2:]
    questions = {}
    for line in open(benchmark):
        row = json.loads(line)
        questions[row["id"]] = row["question"]
    for path in args:
        n, copied, buggy, passed = diagnose(path, questions)
        print(f"| {path} | {n} | {100 * copied:.1f} % | {100 * buggy:.1f} % | {100 * passed:.1f} % |")


if __name__ == "__main__":
    main()
