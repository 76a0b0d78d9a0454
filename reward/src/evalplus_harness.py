# Judging code of every EvalPlus test program (reward/src/evalplus.rs). It runs in the
# sandbox's trusted interpreter: the canonical solution is benchmark code and runs here, in
# a namespace of its own; `candidate` is the sample's entry point, a handle whose results
# cross back from the untrusted interpreter as plain data only. The rules are EvalPlus's:
# MBPP+ inputs re-typed as EvalPlus deserialises them, its special oracles, then `==`, else
# numpy-allclose closeness for float outputs.
import copy as _copy
import json as _json
import math as _math

# MBPP+ task numbers whose JSON inputs EvalPlus turns back into tuples, sets or complex.
_EACH_ARG_TUPLE = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579,
                   596, 616, 630, 726, 740, 744, 809}
_EACH_ARG_ITEMS_TUPLES = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614,
                          780}
_FIRST_ARG_ITEMS_TUPLES = {75, 413, 444, 753}
_SECOND_ARG_TUPLE = {106, 750}
_FIRST_ARG_TUPLE = {250, 405, 446, 617, 720, 763, 808}
_EACH_ARG_TUPLE_OF_TUPLES = {259, 401, 445}
_ALL_LISTS_TUPLES = {580, 615, 791}

# MBPP+ entry points judged by set equality, and by "returned something" (non-data results).
_SET_EQUAL = {"similar_elements", "find_char_long", "common_in_nested_lists",
              "extract_singly", "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}
_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


def _all_tuples(x):
    return tuple(_all_tuples(i) for i in x) if isinstance(x, list) else x


def _retype(task, args):
    if task in _EACH_ARG_TUPLE:
        return [tuple(a) for a in args]
    if task in _EACH_ARG_ITEMS_TUPLES:
        return [[tuple(i) for i in a] for a in args]
    if task in _FIRST_ARG_ITEMS_TUPLES:
        return [[tuple(i) for i in args[0]], args[1]]
    if task in _SECOND_ARG_TUPLE:
        return [args[0], tuple(args[1])]
    if task == 115:  # EvalPlus writes an empty set as {} (a dict); kept as it reads it
        return [[set(i) if isinstance(i, list) and i else {} for i in args[0]]]
    if task == 124:
        return [float(args[0]), complex(args[1])]
    if task in _FIRST_ARG_TUPLE:
        return [tuple(args[0]), args[1]]
    if task in _EACH_ARG_TUPLE_OF_TUPLES:
        return [tuple(tuple(i) for i in a) for a in args]
    if task == 278:
        return [tuple(tuple(i) if isinstance(i, list) else i for i in args[0])]
    if task == 307:
        return [tuple(args[0]), args[1], args[2]]
    if task == 722:
        return [{k: tuple(v) for k, v in args[0].items()}] + args[1:]
    if task == 252:
        return [complex(args[0])]
    if task in _ALL_LISTS_TUPLES:
        return _all_tuples(args)
    return args


def _surface_area(base_edge, height):  # Mbpp/581: the height is the pyramid's own
    slant = _math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 2 * base_edge * slant)


def _digit_distance(a, b):  # Mbpp/558
    a, b = str(a), str(b)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


def _poly(xs, x):  # HumanEval/32
    return sum(c * _math.pow(x, i) for i, c in enumerate(xs))


def _is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


# `out` may be a handle (a non-data result): it is only ever inspected with `type(...)` and
# `is`, which never reach the untrusted side, until a comparison fails it as non-data.


def _close(out, exp, atol):
    # numpy.allclose(out, exp, rtol=1e-07, atol=atol), elementwise over nested sequences.
    if isinstance(exp, (list, tuple)):
        return (type(out) in (list, tuple) and len(out) == len(exp)
                and all(_close(o, e, atol) for o, e in zip(out, exp)))
    numbers = (bool, int, float, complex)
    if type(out) not in numbers or type(exp) not in numbers:
        return False
    if isinstance(out, float) and isinstance(exp, float):
        if _math.isinf(out) or _math.isinf(exp):
            return out == exp
    return abs(out - exp) <= atol + 1e-07 * abs(exp)


def _mbpp_match(entry_point, out, expected, args, atol):
    if entry_point == "are_equivalent":
        return True
    if entry_point in _NOT_NONE:  # the canonical result is not data either: compare presence
        return out == expected if type(out) is bool else expected == (out is not None)
    if entry_point in _SET_EQUAL:
        return set(out) == set(expected)
    exact = out == expected
    if entry_point == "sum_div":
        return exact or out == 0
    if entry_point == "surface_Area":
        return exact or abs(out - _surface_area(*args)) <= atol
    if entry_point == "digit_distance_nums":
        return exact or out == _digit_distance(*args)
    return exact


def _check(reference, candidate, entry_point, inputs, atol, dataset, task):
    namespace = {}
    exec(compile(reference, "<canonical solution>", "exec"), namespace)
    expected_of = namespace[entry_point]
    for i, args in enumerate(_json.loads(inputs)):
        if dataset == "mbpp":
            args = _retype(task, args)
        expected = expected_of(*_copy.deepcopy(args))
        if dataset == "mbpp" and entry_point in _NOT_NONE:
            expected = expected is not None
        out = candidate(*_copy.deepcopy(args))
        if dataset == "humaneval" and entry_point == "find_zero":
            assert abs(_poly(*args, out)) <= atol, f"input {i}: not a root"
            continue
        if dataset == "mbpp":
            exact = _mbpp_match(entry_point, out, expected, args, atol)
        else:
            exact = out == expected
        tolerance = atol
        if tolerance == 0 and _is_floats(expected):
            tolerance = 1e-6
        if not exact and tolerance != 0:
            assert type(out) == type(expected), f"input {i}: {type(out)} is not {type(expected)}"
            assert _close(out, expected, tolerance), f"input {i}: {out!r} != {expected!r}"
        else:
            assert exact, f"input {i}: {out!r} != {expected!r}"
