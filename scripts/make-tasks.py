#!/usr/bin/env python3
"""Generates Couplet's bundled task set and the demo model's SFT data.

Tasks are small Python function problems in AceCoder format (id, source, question,
test_cases, plus the canonical `solution`) drawn from templates with constants. Each
template also has a *template-level bug*: a plausible mistake (an off-by-one range, `>` for
`>=`, swapped arguments, a missing abs) that fails most of its tests. The demo model's SFT
data carries that bug in a share of each template's solutions (`--bug-share`), so the SFT
model makes the mistake with some probability on every prompt of the template, and
unit-test rewards on the train split can remove it everywhere, including the held-out
validation split. That is what makes the CPU demo's reward signal transfer between prompts.

Held out: for every template a fixed share of its constant combinations belongs to the
validation split. Neither the train split nor the SFT data ever uses a validation
combination, so no validation question, constant set or solution is seen before
evaluation. Test expectations are computed by running the canonical solution.

    .venv/bin/python scripts/make-tasks.py                        # data/tasks/{train,val}.jsonl
    .venv/bin/python scripts/make-tasks.py --sft 20000 --bug-share 0.5 --out-sft FILE
"""
import argparse
import itertools
import json
import random

# argument, input kind, question text, correct body, buggy body. Constants: {a} in A_RANGE,
# {b} in B_RANGE, {c}/{d} letters. Every constant is a single token of the CPU tokenizer
# (" 2" … " 8", a letter), so copying one is one token's look-up; the function is always `f`,
# so the question's text, not a name, says which template it is.
TEMPLATES = [
    ("scale_and_shift", "x", "int", "returns x multiplied by {a} plus {b}",
     "return x * {a} + {b}", "return x * ({a} + {b})"),
    ("shift_then_scale", "x", "int", "returns x plus {a}, all multiplied by {b}",
     "return (x + {a}) * {b}", "return x + {a} * {b}"),
    ("div_and_add", "x", "int", "returns x integer-divided by {a}, plus {b}",
     "return x // {a} + {b}", "return x / {a} + {b}"),
    ("remainder_plus", "x", "int", "returns the remainder of x divided by {a}, plus {b}",
     "return x % {a} + {b}", "return x // {a} + {b}"),
    ("distance_times", "x", "int", "returns the absolute difference between x and {a}, multiplied by {b}",
     "return abs(x - {a}) * {b}", "return (x - {a}) * {b}"),
    ("keep_at_least", "xs", "list", "returns the elements of xs that are at least {a}, each multiplied by {b}",
     "return [x * {b} for x in xs if x >= {a}]", "return [x * {b} for x in xs if x > {a}]"),
    ("count_below", "xs", "list", "returns how many elements of xs are smaller than {a}, plus {b}",
     "return len([x for x in xs if x < {a}]) + {b}", "return len([x for x in xs if x <= {a}]) + {b}"),
    ("add_to_each", "xs", "list", "returns a list with {a} added to every element of xs, then {b} appended",
     "return [x + {a} for x in xs] + [{b}]", "return [x + {a} for x in xs[1:]] + [{b}]"),
    ("sum_up_to", "n", "nat", "returns the sum of the integers from 1 to n, multiplied by {a}, plus {b}",
     "return sum(range(1, n + 1)) * {a} + {b}", "return sum(range(1, n)) * {a} + {b}"),
    ("power_of", "n", "nat", "returns {a} raised to the power n, plus {b}",
     "return {a} ** n + {b}", "return n ** {a} + {b}"),
    ("last_chars", "s", "str", "returns the last {a} characters of s, repeated {b} times",
     "return s[-{a}:] * {b}", "return s[{a}:] * {b}"),
    ("swap_letter", "s", "str", "returns s with every '{c}' replaced by '{d}'",
     "return s.replace('{c}', '{d}')", "return s.replace('{d}', '{c}')"),
]
FUNCTION = "f"
A_RANGE = range(2, 9)
B_RANGE = range(1, 9)
LETTERS = "abcdeilnorst"
UPPER = "ABDEKLMNPRTZ"
VAL_SHARE = 1 / 3


def constant_sets(body, question):
    """Every constant combination a template uses, as sorted dicts."""
    text = body + question
    keys = [k for k in ("a", "b") if "{" + k + "}" in text]
    if "{c}" in text:
        return [{"c": c, "d": d} for c in LETTERS for d in UPPER]
    ranges = {"a": A_RANGE, "b": B_RANGE}
    return [dict(zip(keys, values)) for values in itertools.product(*(ranges[k] for k in keys))]


def inputs(kind, consts, rng, count):
    """Test inputs that exercise the template's boundary (the constant itself, values
    around it, letters that are replaced), so a buggy solution fails most tests."""
    a = consts.get("a", 3)
    if kind == "int":
        pool = [a, a + 1, 0, -a - 3] + [rng.randint(-20, 20) for _ in range(count)]
    elif kind == "nat":
        pool = [2, 3, 4] + [rng.randint(1, 9) for _ in range(count)]
        pool = [n for n in pool if a <= 5 or n <= 6]  # keep powers small
    elif kind == "str":
        letters = LETTERS + consts.get("c", "") * 4 + consts.get("d", "") * 2
        pool = ["".join(rng.choice(letters) for _ in range(rng.randint(a + 1, a + 5) if "c" not in consts else rng.randint(2, 8)))
                for _ in range(count)]
    else:
        pool = []
        for _ in range(count):
            xs = [rng.randint(a - 6, a + 6) for _ in range(rng.randint(2, 6))]
            xs.insert(rng.randrange(len(xs) + 1), a)
            pool.append(xs)
    rng.shuffle(pool)
    return pool[:count]


def make_task(template, consts, rng, index, split):
    name, arg, kind, text, body, _ = template
    solution = f"def {FUNCTION}({arg}):\n    {body.format(**consts)}\n"
    env = {}
    exec(solution, env)
    tests = []
    for value in inputs(kind, consts, rng, rng.randint(6, 10)):
        tests.append(f"assert {FUNCTION}({value!r}) == {env[FUNCTION](value)!r}")
    return {"id": f"{split}-{name}-{index}", "source": "couplet-synthetic",
            "question": f"Write a Python function `{FUNCTION}({arg})` that {text.format(**consts)}.",
            "test_cases": tests, "solution": solution}


def split_constants(rng):
    """Per template: (train combinations, validation combinations), disjoint."""
    out = []
    for template in TEMPLATES:
        combos = constant_sets(template[4], template[3])
        rng.shuffle(combos)
        cut = max(1, round(len(combos) * VAL_SHARE))
        out.append((combos[cut:], combos[:cut]))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--train-per-template", type=int, default=40)
    parser.add_argument("--val-per-template", type=int, default=13)
    parser.add_argument("--out", default="data/tasks")
    parser.add_argument("--sft", type=int, default=0, help="write this many SFT rows instead")
    parser.add_argument("--bug-share", type=float, default=0.5)
    parser.add_argument("--out-sft", default=None)
    args = parser.parse_args()
    splits = split_constants(random.Random(args.seed))
    if args.sft:
        rng = random.Random(args.seed * 7919 + 1)
        with open(args.out_sft, "w") as f:
            for i in range(args.sft):
                k = rng.randrange(len(TEMPLATES))
                template = TEMPLATES[k]
                consts = rng.choice(splits[k][0])
                row = make_task(template, consts, rng, i, "sft")
                if rng.random() < args.bug_share:
                    arg, bug = template[1], template[5]
                    row["solution"] = f"def {FUNCTION}({arg}):\n    {bug.format(**consts)}\n"
                f.write(json.dumps(row) + "\n")
        print(f"{args.sft} SFT rows (bug share {args.bug_share}) in {args.out_sft}")
        return
    rng = random.Random(args.seed + 1)
    for split, part, per in (("train", 0, args.train_per_template), ("val", 1, args.val_per_template)):
        rows = []
        for template, combos in zip(TEMPLATES, splits):
            for i, consts in enumerate(rng.sample(combos[part], min(per, len(combos[part])))):
                rows.append(make_task(template, consts, rng, i, split))
        rng.shuffle(rows)
        with open(f"{args.out}/{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"{split}: {len(rows)} tasks")


if __name__ == "__main__":
    main()
