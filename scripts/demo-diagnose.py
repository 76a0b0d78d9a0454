#!/usr/bin/env python3
"""Reads `couplet eval --out DIR` results on the bundled task set and splits the failures
by cause: how often the completion copied the question's constants, how often it used
the template's known bug (scripts/make-tasks.py), and pass@1.

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
BUGS = {t[0]: t for t in tasks.TEMPLATES}


def code_of(text):
    m = re.search(r"```python\n(.*?)```", text, re.S)
    return m.group(1) if m else text


def constants(question):
    """The question's constants: integers after the signature and quoted letters."""
    tail = question.split("` that ", 1)[-1]
    return re.findall(r"\b\d+\b", tail), re.findall(r"'(\w)'", tail)


def shape(body, consts):
    """A template body with its constants filled in, whitespace-normalised."""
    return re.sub(r"\s+", " ", body.format(**consts)).strip()


def diagnose(path, questions):
    rows = [json.loads(line) for line in open(os.path.join(path, "results.jsonl"))]
    n = copied = buggy = passed = 0
    for row in rows:
        question = questions[row["id"]]
        name = row["id"].split("-")[1]
        numbers, letters = constants(question)
        for completion, ok in zip(row["completions"], row["passed"]):
            code = code_of(completion)
            n += 1
            passed += int(ok)
            literal = re.findall(r"\b\d+\b", code)
            quoted = re.findall(r"'(\w)'", code)
            copied += int(all(x in literal for x in numbers) and all(c in quoted for c in letters))
            template = BUGS.get(name)
            if template:
                flat = re.sub(r"\s+", " ", code)
                bug_pattern = re.escape(shape(template[5], {"a": "§", "b": "¤", "c": "†", "d": "‡"}))
                bug_pattern = bug_pattern.replace("§", r"\d+").replace("¤", r"\d+")
                bug_pattern = bug_pattern.replace("†", r"\w").replace("‡", r"\w")
                buggy += int(re.search(bug_pattern, flat) is not None)
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
