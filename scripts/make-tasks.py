#!/usr/bin/env python3
"""Generates Couplet's bundled task set and the demo model's SFT data.

Tasks are small Python function problems in AceCoder format (id, source, question,
test_cases, plus the canonical `solution`) drawn from twelve templates with two constants.
Each template also has a *template-level bug*: a plausible mistake (an off-by-one range,
`>` for `>=`, a wrong operator, a missing abs) that fails most of its tests. The demo
model's SFT data carries that bug in a share of each template's solutions (`--bug-share`),
so the SFT model makes the mistake with some probability on every prompt of the template,
and unit-test rewards on the train split can remove it everywhere, including the held-out
validation split. That is what makes the CPU demo's reward signal transfer between prompts.

Format: the question ends with its constants ("... Use A = 3, B = 5.") and the solution
starts by defining them (`A = 3`, `B = 5`, then the function using `A` and `B`). Every
constant is one token and sits at the same distance from its copy in every template, so a
small model learns to copy it with one fixed relative-position look-up (measured: with the
constants inside template-dependent text the 5 M-parameter demo model never learned to copy
them within the setup budget; see docs/guide/cpu-demo.md).

Held out: for every template a fixed share of its constant pairs belongs to the validation
split. Neither the train split nor the SFT data ever uses a validation pair, so no
validation question, constant set or solution is seen before evaluation. Test expectations
are computed by running the canonical solution.

    .venv/bin/python scripts/make-tasks.py                        # data/tasks/{train,val}.jsonl
    .venv/bin/python scripts/make-tasks.py --sft 20000 --bug-share 0.5 --out-sft FILE
"""
import argparse
import itertools
import json
import random

# name, argument, input kind, question text, correct body, buggy body.
TEMPLATES = [
    ("scale_and_shift", "x", "int", "returns x multiplied by A, plus B",
     "return x * A + B", "return x * (A + B)"),
    ("shift_then_scale", "x", "int", "returns x plus A, all multiplied by B",
     "return (x + A) * B", "return x + A + B"),
    ("div_and_add", "x", "int", "returns x integer-divided by A, plus B",
     "return x // A + B", "return x / A + B"),
    ("remainder_plus", "x", "int", "returns the remainder of x divided by A, plus B",
     "return x % A + B", "return x // A + B"),
    ("distance_times", "x", "int", "returns the absolute difference between x and A, multiplied by B",
     "return abs(x - A) * B", "return (x - A) * B"),
    ("keep_at_least", "xs", "list", "returns the elements of xs that are at least A, each multiplied by B",
     "return [x * B for x in xs if x >= A]", "return [x * B for x in xs if x > A]"),
    ("count_below", "xs", "list", "returns how many elements of xs are smaller than A, plus B",
     "return len([x for x in xs if x < A]) + B", "return len([x for x in xs if x <= A]) + B"),
    ("add_to_each", "xs", "list", "returns a list with A added to every element of xs, then B appended",
     "return [x + A for x in xs] + [B]", "return [x + A for x in xs[1:]] + [B]"),
    ("keep_multiples", "xs", "list", "returns the elements of xs that are multiples of A, each plus B",
     "return [x + B for x in xs if x % A == 0]", "return [x + B for x in xs if x % A]"),
    ("sum_up_to", "n", "nat", "returns the sum of the integers from 1 to n, multiplied by A, plus B",
     "return sum(range(1, n + 1)) * A + B", "return sum(range(1, n)) * A + B"),
    ("power_of", "n", "nat", "returns A raised to the power n, plus B",
     "return A ** n + B", "return n ** A + B"),
    ("last_chars", "s", "str", "returns the last A characters of s, repeated B times",
     "return s[-A:] * B", "return s[A:] * B"),
]
FUNCTION = "f"
# Single tokens of the CPU tokenizer (" 2" … " 8"; " 9" is two pieces).
A_RANGE = range(2, 9)
B_RANGE = range(1, 9)
LETTERS = "abcdeilnorst"
VAL_SHARE = 1 / 3


def inputs(kind, a, rng, count):
    """Test inputs that exercise the template's boundary (the constant itself, values
    around it), so a buggy solution fails most tests."""
    if kind == "int":
        pool = [a, a + 1, 0, -a - 3] + [rng.randint(-20, 20) for _ in range(count)]
    elif kind == "nat":
        pool = [2, 3, 4] + [rng.randint(1, 9) for _ in range(count)]
        pool = [n for n in pool if a <= 5 or n <= 6]  # keep powers small
    elif kind == "str":
        pool = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(a + 1, a + 5)))
                for _ in range(count)]
    else:
        pool = []
        for _ in range(count):
            xs = [rng.randint(a - 6, a + 6) for _ in range(rng.randint(2, 6))]
            xs.insert(rng.randrange(len(xs) + 1), a)
            pool.append(xs)
    rng.shuffle(pool)
    return pool[:count]


def program(arg, body, a, b):
    return f"A = {a}\nB = {b}\ndef {FUNCTION}({arg}):\n    {body}\n"


def make_task(template, consts, rng, index, split):
    name, arg, kind, text, body, _ = template
    a, b = consts
    solution = program(arg, body, a, b)
    env = {}
    exec(solution, env)
    tests = []
    for value in inputs(kind, a, rng, rng.randint(6, 10)):
        tests.append(f"assert {FUNCTION}({value!r}) == {env[FUNCTION](value)!r}")
    return {"id": f"{split}-{name}-{index}", "source": "couplet-synthetic", "template": name,
            "question": f"Write a Python function `{FUNCTION}({arg})` that {text}. Use A = {a}, B = {b}.",
            "test_cases": tests, "solution": solution}


def bug_failure_share(template, consts, row):
    """Share of the row's tests that the template's bug fails (a sanity figure)."""
    env = {}
    exec(program(template[1], template[5], *consts), env)
    failed = 0
    for test in row["test_cases"]:
        try:
            exec(test, dict(env))
        except Exception:
            failed += 1
    return failed / len(row["test_cases"])


def split_constants(rng):
    """Per template: (train pairs, validation pairs), disjoint."""
    out = []
    for _ in TEMPLATES:
        pairs = list(itertools.product(A_RANGE, B_RANGE))
        rng.shuffle(pairs)
        cut = round(len(pairs) * VAL_SHARE)
        out.append((pairs[cut:], pairs[:cut]))
    return out


def write_sft(args, splits):
    rng = random.Random(args.seed * 7919 + 1)
    with open(args.out_sft, "w") as f:
        for i in range(args.sft):
            k = rng.randrange(len(TEMPLATES))
            template = TEMPLATES[k]
            consts = rng.choice(splits[k][0])
            row = make_task(template, consts, rng, i, "sft")
            if rng.random() < args.bug_share:
                row["solution"] = program(template[1], template[5], *consts)
            f.write(json.dumps(row) + "\n")
    print(f"{args.sft} SFT rows (bug share {args.bug_share}) in {args.out_sft}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--train-per-template", type=int, default=37)
    parser.add_argument("--val-per-template", type=int, default=13)
    parser.add_argument("--out", default="data/tasks")
    parser.add_argument("--sft", type=int, default=0, help="write this many SFT rows instead")
    parser.add_argument("--bug-share", type=float, default=0.5)
    parser.add_argument("--out-sft", default=None)
    args = parser.parse_args()
    splits = split_constants(random.Random(args.seed))
    if args.sft:
        write_sft(args, splits)
        return
    rng = random.Random(args.seed + 1)
    for split, part, per in (("train", 0, args.train_per_template), ("val", 1, args.val_per_template)):
        rows, fails = [], []
        for template, pairs in zip(TEMPLATES, splits):
            for i, consts in enumerate(rng.sample(pairs[part], min(per, len(pairs[part])))):
                rows.append(make_task(template, consts, rng, i, split))
                fails.append(bug_failure_share(template, consts, rows[-1]))
        rng.shuffle(rows)
        with open(f"{args.out}/{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"{split}: {len(rows)} tasks; the template bug fails {sum(fails) / len(fails):.0%} of tests "
              f"(least {min(fails):.0%})")


if __name__ == "__main__":
    main()
