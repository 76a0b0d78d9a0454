#!/usr/bin/env python3
"""Generates Couplet's bundled task set: small Python function tasks in AceCoder format
(id, source, question, test_cases, plus the canonical `solution`), in four families with
varying constants — arithmetic transforms, string manipulation, list filters, simple loops.
Deterministic from the seed; test expectations are computed by running the canonical
solution. Writes data/tasks/train.jsonl and data/tasks/val.jsonl (every 6th task).

    .venv/bin/python scripts/make-tasks.py [--seed 1234]
"""
import argparse
import json
import random

ARITH = [
    ("scale_and_shift", "returns x multiplied by {a} plus {b}", "return x * {a} + {b}"),
    ("shift_then_scale", "returns (x + {a}) multiplied by {b}", "return (x + {a}) * {b}"),
    ("square_minus", "returns the square of x minus {a}", "return x * x - {a}"),
    ("distance_to", "returns the absolute difference between x and {a}", "return abs(x - {a})"),
    ("div_and_add", "returns x integer-divided by {a}, plus {b}", "return x // {a} + {b}"),
    ("remainder", "returns the remainder of x divided by {a}", "return x % {a}"),
]
STRING = [
    ("repeat_text", "returns the string s repeated {a} times", "return s * {a}"),
    ("reverse_and_tag", "returns s reversed, followed by the text '{w}'", "return s[::-1] + '{w}'"),
    ("shout", "returns s in upper case followed by {a} exclamation marks", "return s.upper() + '!' * {a}"),
    ("count_letter", "returns how many times the letter '{c}' occurs in s", "return s.count('{c}')"),
    ("swap_letter", "returns s with every '{c}' replaced by '{d}'", "return s.replace('{c}', '{d}')"),
    ("prefix_of", "returns the first {a} characters of s", "return s[:{a}]"),
]
LISTS = [
    ("keep_greater", "returns the elements of xs that are greater than {a}, in order", "return [x for x in xs if x > {a}]"),
    ("keep_multiples", "returns the elements of xs that are multiples of {a}, in order", "return [x for x in xs if x % {a} == 0]"),
    ("drop_value", "returns xs without any element equal to {a}", "return [x for x in xs if x != {a}]"),
    ("add_to_each", "returns a list with {a} added to every element of xs", "return [x + {a} for x in xs]"),
    ("count_below", "returns how many elements of xs are smaller than {a}", "return sum(1 for x in xs if x < {a})"),
    ("sum_of_evens_times", "returns the sum of the even elements of xs multiplied by {a}", "return sum(x for x in xs if x % 2 == 0) * {a}"),
]
LOOPS = [
    ("sum_up_to", "returns the sum of the integers from 1 to n, multiplied by {a}",
     "total = 0\n    for i in range(1, n + 1):\n        total += i\n    return total * {a}"),
    ("sum_of_squares", "returns the sum of i * i for i from 1 to n, plus {a}",
     "total = {a}\n    for i in range(1, n + 1):\n        total += i * i\n    return total"),
    ("power_of", "returns {a} raised to the power n, computed with a loop",
     "result = 1\n    for _ in range(n):\n        result *= {a}\n    return result"),
    ("count_steps", "returns how many times n can be integer-divided by {a} before it drops below {a}",
     "steps = 0\n    while n >= {a}:\n        n //= {a}\n        steps += 1\n    return steps"),
    ("digit_sum_plus", "returns the sum of the decimal digits of n, plus {a}",
     "total = {a}\n    for ch in str(n):\n        total += int(ch)\n    return total"),
    ("multiples_below", "returns how many positive multiples of {a} are smaller than n",
     "count = 0\n    for i in range(1, n):\n        if i % {a} == 0:\n            count += 1\n    return count"),
]
FAMILIES = [("arith", ARITH, "x", "int"), ("string", STRING, "s", "str"), ("list", LISTS, "xs", "list"), ("loop", LOOPS, "n", "nat")]
WORDS = ["ok", "end", "yes", "go", "hi", "done", "top", "win", "up", "zz", "ab", "now"]
LETTERS = "abcdeilnorst"


def inputs(kind, rng, count):
    if kind == "int":
        return [rng.randint(-20, 40) for _ in range(count)]
    if kind == "nat":
        return [rng.randint(0, 12) for _ in range(count)]
    if kind == "str":
        return ["".join(rng.choice(LETTERS) for _ in range(rng.randint(0, 7))) for _ in range(count)]
    return [[rng.randint(-5, 12) for _ in range(rng.randint(0, 6))] for _ in range(count)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--per-template", type=int, default=15)
    parser.add_argument("--out", default="data/tasks")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tasks = []
    for family, templates, arg, kind in FAMILIES:
        for name, text, body in templates:
            seen = set()
            made, attempts = 0, 0
            while made < args.per_template and attempts < 2000:
                attempts += 1
                consts = {"a": rng.randint(2, 20), "b": rng.randint(1, 9), "w": rng.choice(WORDS),
                          "c": rng.choice(LETTERS), "d": rng.choice(LETTERS.upper())}
                key = text.format(**consts)
                if key in seen:
                    continue
                seen.add(key)
                fn = name
                solution = f"def {fn}({arg}):\n    {body.format(**consts)}\n"
                env = {}
                exec(solution, env)
                n_tests = rng.randint(5, 12)
                tests = []
                for value in inputs(kind, rng, n_tests):
                    tests.append(f"assert {fn}({value!r}) == {env[fn](value)!r}")
                question = f"Write a Python function `{fn}({arg})` that {key}."
                tasks.append({"id": f"{family}-{name}-{made}", "source": "couplet-synthetic", "question": question,
                              "test_cases": tests, "solution": solution})
                made += 1
    order = list(range(len(tasks)))
    rng.shuffle(order)
    train = [tasks[i] for k, i in enumerate(order) if k % 6 != 5]
    val = [tasks[i] for k, i in enumerate(order) if k % 6 == 5]
    for split, rows in (("train", train), ("val", val)):
        with open(f"{args.out}/{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print(f"{len(tasks)} tasks: {len(train)} train, {len(val)} validation")


if __name__ == "__main__":
    main()
