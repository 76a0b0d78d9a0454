# Couplet's sandbox harness: one program, two roles (host side: harness.rs, judge.rs).
#
#   trusted   runs the tests and decides verdicts. It never executes solution code: every
#             name the solution defines is a `Remote` here (an opaque handle), and calling
#             it sends a request through the host to the untrusted instance.
#   untrusted executes the solution and answers requests. It never sees a test, an
#             expected value or the verdict channel.
#
# Values cross as plain data: exact builtin types only (None, bool, int, float, complex,
# str, bytes, list, tuple, dict, set, frozenset), depth- and size-capped; any other object
# stays where it lives and crosses as a handle. A handle is asked only to compute: calls,
# attribute access, indexing and iteration are requests whose answers are again plain data
# or handles. It is never asked for its opinion of a test's value: comparing, hashing,
# truth-testing, converting or printing it fails the test (`non-data result`); `in` and
# `len` are answered here, from the items its iteration yields.
#
# Names mean what the test means: builtins, standard-library modules and the names the
# job's trusted setup code defines (a HumanEval prompt's helpers, MBPP's test_setup_code)
# always resolve here; only the job's entry points may carry such a name.
#
# Framing. host -> guest: "<kind> <seq> <length>\n<payload>".
#          guest -> host: "\n<token> <kind> <seq> <length>\n<payload>" (bytes around frames
#          are the guest's own output to fd 1 and are ignored).
# Loaded by boot.py (the `-c` program) as a marshalled code object; the first frame after
# it says the role.


def _couplet_main():
    import sys, os, builtins

    _read, _write = os.read, os.write
    _int, _len, _type, _str, _bytes = int, len, type, str, bytes
    _BaseException = BaseException
    # Bytes the bootstrap (boot.py) read past the harness code belong to the first frame.
    state = {"token": b"", "buffer": bytearray(globals().get("_couplet_pending", b""))}

    def read_frame():
        buf = state["buffer"]
        while b"\n" not in buf:
            chunk = _read(0, 1 << 16)
            if not chunk:
                raise SystemExit(0)
            buf += chunk
        end = buf.index(b"\n")
        kind, seq, size = _bytes(buf[:end]).split(b" ")
        del buf[: end + 1]
        size = _int(size)
        while _len(buf) < size:
            chunk = _read(0, max(1 << 16, size - _len(buf)))
            if not chunk:
                raise SystemExit(0)
            buf += chunk
        payload = _bytes(buf[:size])
        del buf[:size]
        return kind, _int(seq), payload

    def send(kind, seq, payload):
        head = b"\n" + state["token"] + b" " + kind + b" " + _str(seq).encode() + b" "
        data = head + _str(_len(payload)).encode() + b"\n" + payload
        while data:
            data = data[_write(1, data):]

    kind, _, init = read_frame()
    fields = init.split(b"\n", 4)
    state["token"] = fields[0]
    flags = fields[1].split(b",")
    roots = [r.decode() for r in fields[2].split(b"\x00") if r]
    if b"nodump" in flags:
        _not_dumpable()
    _install_audit_hook(b"audit" in flags, roots, _BaseException)
    sys.stdin = None
    if kind == b"T":
        _trusted(read_frame, send)
    else:
        setup, solution = (b.decode("utf-8", "surrogatepass") for b in _decode(fields[4], None))
        _untrusted(read_frame, send, int(fields[3]), setup, solution)


def _not_dumpable():
    # PR_SET_DUMPABLE = 4. execve makes every process dumpable again, so the instance says
    # it itself, before any job code runs; the seccomp filter refuses any other prctl, so
    # nothing can turn it back on.
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
        raise SystemExit(4)


# ---------------------------------------------------------------- plain-data codec

_MAX_DEPTH = 100
_MAX_ITEMS = 1 << 20


class _NotData(Exception):
    """A value that cannot cross as plain data (raised by the codec only)."""


def _encode(value, handle_of):
    """Tagged bytes of `value`; objects that are not plain data become `handle_of(obj)`."""
    out = []
    count = [0]
    put = out.append
    _type, _hex = type, hex
    NoneType = _type(None)

    def enc(v, depth):
        count[0] += 1
        if depth > _MAX_DEPTH or count[0] > _MAX_ITEMS:
            raise _NotData("too deep" if depth > _MAX_DEPTH else "too large")
        t = _type(v)
        if t is NoneType:
            put(b"n")
        elif t is bool:
            put(b"t" if v else b"f")
        elif t is int:
            put(b"i" + _hex(v).encode() + b";")
        elif t is float:
            put(b"d" + v.hex().encode() + b";")
        elif t is complex:
            put(b"c" + v.real.hex().encode() + b"," + v.imag.hex().encode() + b";")
        elif t is str:
            b = v.encode("utf-8", "surrogatepass")
            put(b"s%d:" % len(b))
            put(b)
        elif t is bytes:
            put(b"b%d:" % len(v))
            put(v)
        elif t is list or t is tuple or t is set or t is frozenset:
            put(_SEQUENCE_TAGS[t] + b"%d:" % len(v))
            for x in v:
                enc(x, depth + 1)
        elif t is dict:
            put(b"m%d:" % len(v))
            for k, x in v.items():
                enc(k, depth + 1)
                enc(x, depth + 1)
        else:
            put(b"h%d;" % handle_of(v))

    enc(value, 0)
    return b"".join(out)


_SEQUENCE_TAGS = {list: b"l", tuple: b"u", set: b"e", frozenset: b"z"}
_SEQUENCE_KINDS = {tag: kind for kind, tag in _SEQUENCE_TAGS.items()}


def _is_name(raw):
    """Whether bytes spell a Python identifier (evaluating one is a name lookup only)."""
    try:
        return raw.decode("ascii").isidentifier()
    except UnicodeError:
        return False


def _decode(data, handle, texts=None):
    """The value `_encode` wrote; `handle(i)` resolves handle i; every str and bytes value
    is also added (as bytes) to `texts` when given. Raises _NotData when `data` is not
    exactly one well-formed value within the caps."""
    pos = [0]
    count = [0]

    def upto(sep):
        end = data.index(sep, pos[0])
        text = data[pos[0] : end]
        pos[0] = end + 1
        return text

    def sized():
        size = int(upto(b":"))
        if size < 0 or pos[0] + size > len(data):
            raise _NotData("truncated")
        return size

    def dec(depth):
        count[0] += 1
        if depth > _MAX_DEPTH or count[0] > _MAX_ITEMS:
            raise _NotData("too deep" if depth > _MAX_DEPTH else "too large")
        tag = data[pos[0] : pos[0] + 1]
        pos[0] += 1
        if tag == b"n":
            return None
        if tag == b"t" or tag == b"f":
            return tag == b"t"
        if tag == b"i":
            return int(upto(b";"), 16)
        if tag == b"d":
            return float.fromhex(upto(b";").decode("ascii"))
        if tag == b"c":
            real = float.fromhex(upto(b",").decode("ascii"))
            return complex(real, float.fromhex(upto(b";").decode("ascii")))
        if tag == b"s" or tag == b"b":
            size = sized()
            raw = data[pos[0] : pos[0] + size]
            pos[0] += size
            if texts is not None and not _is_name(raw):
                texts.add(bytes(raw))
            return raw.decode("utf-8", "surrogatepass") if tag == b"s" else bytes(raw)
        if tag in (b"l", b"u", b"e", b"z"):
            n = int(upto(b":"))
            if n < 0 or n > _MAX_ITEMS:
                raise _NotData("too large")
            items = [dec(depth + 1) for _ in range(n)]
            kind = _SEQUENCE_KINDS[tag]
            return items if kind is list else kind(items)
        if tag == b"m":
            n = int(upto(b":"))
            if n < 0 or n > _MAX_ITEMS:
                raise _NotData("too large")
            out = {}
            for _ in range(n):
                key = dec(depth + 1)
                out[key] = dec(depth + 1)
            return out
        if tag == b"h":
            return handle(int(upto(b";")))
        raise _NotData("unknown tag")

    try:
        value = dec(0)
    except _NotData:
        raise
    except Exception as e:  # malformed numbers, unhashable keys, missing separators
        raise _NotData(type(e).__name__)
    if pos[0] != len(data):
        raise _NotData("trailing bytes")
    return value


# ---------------------------------------------------------------- shared pieces


class _Capped:
    """A text stream that keeps at most `cap` bytes."""

    def __init__(self, cap):
        self.cap = cap
        self.buf = bytearray()
        self.truncated = False

    def write(self, s):
        data = str(s).encode("utf-8", "replace")
        room = self.cap - len(self.buf)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self.buf += data
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False


def _exception_message(e):
    try:
        return str(e)[:1000]
    except BaseException:
        return ""


# Request operations (the only things the trusted side may ask of a handle).
_CALL, _GETATTR, _SETATTR, _ITER, _NEXT, _GETITEM, _ITEMS = range(7)


# ---------------------------------------------------------------- untrusted role


def _untrusted(read_frame, send, cap, setup, solution):
    """Report whether the solution parses (`S`, before anything of it runs), then execute
    the setup code and the solution (at start and again after every `O`, announcing the
    names with `N`), answer requests (`C`), end a test and hand over its captured output
    (`O`). Nothing here is trusted by anyone: a solution may rewrite all of it, and can
    still only answer with plain data or handles."""
    import sys, builtins

    pristine = dict(builtins.__dict__)
    _BaseException, _type, _len = BaseException, type, len
    handles = []

    def handle_of(obj):
        handles.append(obj)
        return _len(handles) - 1

    send(b"H", 0, b"")
    parsed, code = _parse(solution)
    try:
        setup_code = compile(setup, "<setup>", "exec", dont_inherit=True)
    except _BaseException as e:
        setup_code = e
    out, err = _Capped(cap), _Capped(cap)
    sys.stdout, sys.stderr = out, err
    send(b"S", 0, parsed)
    send(*_reset(0, setup_code, code, pristine, handle_of))
    while True:
        kind, seq, payload = read_frame()
        if kind == b"C":
            send(*_answer(seq, payload, handles, handle_of))
        elif kind == b"O":
            handles.clear()  # the test's objects die now: their finalizers are its time
            blob = _encode((bytes(out.buf), bytes(err.buf), out.truncated or err.truncated), None)
            out.buf, err.buf, out.truncated, err.truncated = bytearray(), bytearray(), False, False
            send(b"O", seq, blob)
            # Ready for the next test at once (saves the judge a round trip per test).
            send(*_reset(seq, setup_code, code, pristine, handle_of))


def _parse(solution):
    """(`ok` or the parser's exception name, the compiled solution or that exception).
    The syntax verdict is exactly ast.parse's: code that compiles parses; code that does
    not is parsed again with 0x400 (ast.PyCF_ONLY_AST), since a few programs parse but do
    not compile (`return` outside a function). Building the AST costs milliseconds in
    WebAssembly, so it is only done on that rare path. This runs in the instance that is
    about to run the solution anyway, so a parser crash (RecursionError on a deeply nested
    expression) costs nothing but a `false`."""
    try:
        return b"ok", compile(solution, "<solution>", "exec", dont_inherit=True)
    except BaseException as e:
        error = e
    try:
        compile(solution, "<solution>", "exec", 0x400, dont_inherit=True)
        return b"ok", error
    except BaseException as e:
        return type(e).__name__.encode() or b"error", error


def _reset(seq, setup_code, code, pristine, handle_of):
    """Fresh builtins and globals, the setup code and the solution executed; reply with the
    names (`N`) or the exception their execution raised (`X`)."""
    import builtins, types

    builtins.__dict__.clear()
    builtins.__dict__.update(pristine)
    g = {"__name__": "__main__", "__builtins__": builtins}
    try:
        for c in (setup_code, code):
            if isinstance(c, BaseException):
                raise c
            exec(c, g)
    except BaseException as e:
        return b"X", seq, _encode((type(e).__name__, _exception_message(e)), None)
    names = []
    for name, value in list(g.items()):
        if type(name) is not str or name.startswith("__"):
            continue
        if type(value) is types.ModuleType:
            names.append(("m", name, str(getattr(value, "__name__", ""))))
        else:
            names.append(("v", name, value))
    try:
        return b"N", seq, _encode(names, handle_of)
    except _NotData:
        return b"X", seq, _encode(("NonDataResult", "names"), None)


def _answer(seq, payload, handles, handle_of):
    """Perform one request; reply `V` (result, new states of mutable arguments) or `X`."""
    try:
        op, target, *rest = _decode(payload, handles.__getitem__)
        if op == _CALL:
            args, kwargs = rest
            result = target(*args, **kwargs)
            moved = [a if type(a) in (list, dict, set) else None for a in args]
            moved += [kwargs[k] if type(kwargs[k]) in (list, dict, set) else None for k in sorted(kwargs)]
            return b"V", seq, _encode((result, moved), handle_of)
        result = _OPERATIONS[op](target, *rest)
        return b"V", seq, _encode((result, []), handle_of)
    except _NotData as e:
        return b"X", seq, _encode(("NonDataResult", str(e)), None)
    except BaseException as e:
        try:
            return b"X", seq, _encode((type(e).__name__, _exception_message(e)), None)
        except BaseException:
            return b"X", seq, _encode(("Exception", ""), None)


def _items(target):
    """The items an object commits to, for the trusted side's `len` and `in`: a list of
    what iterating it yields. An iterator has no length (as in Python: TypeError); the
    trusted side then iterates it for `in`, consuming it as Python would."""
    if iter(target) is target:
        raise TypeError("object of type '%s' has no len()" % type(target).__name__)
    return list(target)


# No `len` or `in` here: the trusted side answers them from `_items`, so an object cannot
# claim a length or a member it does not have.
_OPERATIONS = {
    _ITEMS: _items,
    _GETATTR: getattr,
    _SETATTR: setattr,
    _ITER: iter,
    _NEXT: next,
    _GETITEM: lambda target, key: target[key],
}


# ---------------------------------------------------------------- trusted role


class _Abort(BaseException):
    """The untrusted side died or overran: the host has already decided this test."""


class _NonDataUse(BaseException):
    """A value that is not plain data reached a place that needs data."""


# The standard-library modules a solution's import may bind for a test (pure modules
# with no import-time effects): a solution's `import math` lets a test use `math`
# unimported, as the reference's one-program harness does, only for these; the trusted
# side imports one of them the first time a solution names it. No other module is ever
# imported on a solution's word.
_BINDABLE = (
    "math cmath re string collections itertools functools operator heapq bisect typing json "
    "random statistics fractions decimal datetime time copy array struct textwrap enum "
    "dataclasses abc numbers unicodedata sys os"
).split()


def _trusted(read_frame, send):
    """Serve `J` (the next job's setup code and entry points) and `T` (run one test of it
    with the solution's names bound to handles) until the host closes stdin. Nothing of a
    solution runs here (see `_install_gate` and `_Names`), which is what lets the host
    reuse an instance for the next job; it replaces it whenever a job tripped the gate."""
    import sys, builtins

    bindable = frozenset(_BINDABLE)
    pristine = dict(builtins.__dict__)
    builtin_names = frozenset(pristine)
    stdlib = frozenset(sys.stdlib_module_names)
    crossed, dataset = set(), set()
    tripped = _install_gate(crossed, dataset)
    job = None
    send(b"H", 0, b"")
    while True:
        kind, seq, payload = read_frame()
        if kind == b"J":
            crossed.clear()
            dataset.clear()
            setup, entry_points = _decode(payload, None)
            setup_code = _compile_dataset(setup, "<setup>", dataset)
            entry_points = frozenset(e.decode("utf-8", "surrogatepass") for e in entry_points)
            job = (setup_code, _Names(builtin_names, stdlib, bindable, entry_points))
        elif kind == b"T" and job is not None:
            index, cap, source, announced = _decode(payload, None)
            test = _compile_dataset(source, "<test>", dataset)
            link = _Link(read_frame, send, crossed)
            verdict = _run_test(cap, job[0], test, announced, job[1], pristine, link)
            send(b"D", seq, _encode(verdict + (bool(tripped),), None))
            tripped.clear()


def _compile_dataset(source, filename, dataset):
    """The job's own code (bytes) compiled, or the exception compiling it raised. It and
    every string and bytes constant in it (the canonical solution an EvalPlus test runs)
    join `dataset`, which the gate never refuses."""
    dataset.add(source)
    try:
        code = compile(source.decode("utf-8", "surrogatepass"), filename, "exec", dont_inherit=True)
    except BaseException as e:
        return e
    pending = [code]
    while pending:
        for const in pending.pop().co_consts:
            if type(const) is str:
                dataset.add(const.encode("utf-8", "surrogatepass"))
            elif type(const) is bytes:
                dataset.add(const)
            elif type(const) is type(code):
                pending.append(const)
    return code


def _run_test(cap, setup_code, test_code, announced, names, pristine, link):
    """Run one test program; the verdict (status, error, stdout, stderr, truncated); the
    host adds whether the gate refused anything."""
    import sys, builtins

    builtins.__dict__.clear()
    builtins.__dict__.update(pristine)
    out, err = _Capped(cap), _Capped(cap)
    real = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    status, error = "pass", ""
    try:
        g = {"__name__": "__main__", "__builtins__": builtins}
        if isinstance(setup_code, BaseException):
            raise setup_code
        exec(setup_code, g)
        try:
            names.bind(_decode(announced, link.handle, link.crossed), g, frozenset(g), link)
        except _NotData:
            raise link.fail("non-data result")
        if isinstance(test_code, BaseException):
            raise test_code
        exec(test_code, g)
    except AssertionError:
        status, error = "fail", "AssertionError"
    except MemoryError:
        status, error = "memory", "MemoryError"
    except _SolutionError as e:
        status, error = "fail", e.name
    except BaseException as e:
        status, error = "fail", type(e).__name__
    sys.stdout, sys.stderr = real
    if link.sticky:
        status, error = "fail", link.sticky
    return (status, error, bytes(out.buf), bytes(err.buf), out.truncated or err.truncated)


class _Names:
    """Which of the names the solution announces a test may see, and as what.

    The rule: a name the job declares as an entry point is the solution's (a handle or
    plain data; never a module). Any other name is the solution's only when it is not a
    builtin, not a standard-library module's name and not defined by the setup code; a
    module the solution imported is bound as the trusted side's own copy of it when it is
    one of `_BINDABLE`, under its own name or a name that shadows nothing (`import math`,
    `import numbers as nb`): a solution makes the trusted side import nothing else."""

    def __init__(self, builtin_names, stdlib, bindable, entry_points):
        self.builtin_names, self.stdlib, self.entry_points = builtin_names, stdlib, entry_points
        self.bindable = bindable

    def bind(self, announced, g, setup_names, link):
        if type(announced) is not list:
            raise link.fail("protocol violation")
        for entry in announced:
            if type(entry) is not tuple or len(entry) != 3:
                raise link.fail("protocol violation")
            kind, name, value = entry
            if type(name) is not str or not name.isidentifier() or name.startswith("__"):
                continue
            if name in self.entry_points:
                if kind == "v":
                    g[name] = value
            elif name in self.builtin_names or name in setup_names:
                continue
            elif kind == "m":
                module = self.module(name, value)
                if module is not None:
                    g[name] = module
            elif name not in self.stdlib:
                g[name] = value

    def module(self, name, module_name):
        if type(module_name) is not str or module_name not in self.bindable:
            return None
        if name in self.stdlib and name != module_name:
            return None
        import sys

        try:
            __import__(module_name)
            return sys.modules[module_name]
        except BaseException:
            return None


class _SolutionError(Exception):
    """An exception the solution raised whose type is not a builtin exception."""

    def __init__(self, name, message):
        super().__init__(message)
        self.name = name


class _Link:
    """The trusted side's end of the request channel for one test. `sticky` remembers a
    non-data use or an abort even when the test catches the exception."""

    def __init__(self, read_frame, send, crossed):
        self.read_frame, self.send, self.crossed = read_frame, send, crossed
        self.seq = 0
        self.sticky = ""

    def handle(self, i):
        return _remote(self, i)

    def ask(self, op, target, *rest):
        """One request; the answer as data or a handle, or the solution's exception."""
        if self.sticky == "aborted":
            raise _Abort()
        try:
            request = _encode((op, target) + rest, _handle_id)
        except _NotData:
            raise self.fail("non-data argument")
        self.seq += 1
        self.send(b"C", self.seq, request)
        kind, seq, reply = self.read_frame()
        if kind == b"A":
            self.sticky = "aborted"
            raise _Abort()
        if kind == b"N" or seq != self.seq:
            raise self.fail(reply.decode("utf-8", "replace") if kind == b"N" else "protocol violation")
        try:
            value = _decode(reply, self.handle, self.crossed)
        except _NotData:
            raise self.fail("non-data result")
        if kind == b"X":
            if type(value) is tuple and value[:1] == ("NonDataResult",):
                raise self.fail("non-data result")
            raise _solution_exception(value, op)
        if type(value) is not tuple or len(value) != 2 or type(value[1]) is not list:
            raise self.fail("protocol violation")
        result, moved = value
        if op == _CALL:
            _write_back(rest[0], rest[1], moved)
        return result

    def fail(self, reason):
        if not self.sticky:
            self.sticky = reason
        return _NonDataUse(reason)


# Exceptions that steer Python's control flow rather than report an error. A solution's
# never crosses as itself (PEP 479 does the same for generators): it would end a test's
# `all(map(f, xs))` early, or exit a loop. Only a handle's own `__next__` may end an
# iteration with StopIteration.
_CONTROL_FLOW = ("StopIteration", "StopAsyncIteration")


def _solution_exception(value, op):
    """The trusted-side exception for the solution's (type name, message): the builtin
    exception of that name when it is an ordinary error, else a _SolutionError carrying the
    name (control-flow exceptions, BaseExceptions, the solution's own classes)."""
    import builtins

    name, message = value if type(value) is tuple and len(value) == 2 else ("Exception", "")
    name, message = str(name)[:64], str(message)
    cls = builtins.__dict__.get(name)
    ordinary = (
        isinstance(cls, type)
        and issubclass(cls, Exception)
        and cls.__module__ == "builtins"
        and (name not in _CONTROL_FLOW or (op == _NEXT and name == "StopIteration"))
    )
    if ordinary:
        try:
            return cls(message)
        except BaseException:
            pass
    return _SolutionError("".join(c for c in name if c.isalnum() or c in "_.") or "Exception", message)


def _write_back(args, kwargs, moved):
    """Mutations of the test's own list/dict/set arguments, copied back into them (the
    solution worked on copies): `a = [3, 1]; sort_in_place(a); assert a == [1, 3]`."""
    originals = list(args) + [kwargs[k] for k in sorted(kwargs)]
    if len(moved) != len(originals):
        return
    for mine, theirs in zip(originals, moved):
        if type(mine) is not type(theirs) or mine is theirs:
            continue
        if type(mine) is list:
            mine[:] = theirs
        elif type(mine) is dict or type(mine) is set:
            mine.clear()
            mine.update(theirs)


def _handle_id(value):
    if type(value) is not Remote:
        raise _NotData(type(value).__name__)
    return object.__getattribute__(value, "_couplet_id")


def _remote(link, i):
    r = object.__new__(Remote)
    object.__setattr__(r, "_couplet_id", i)
    object.__setattr__(r, "_couplet_link", link)
    return r


def _link(r):
    return object.__getattribute__(r, "_couplet_link")


def _refuse(name):
    def refused(self, *args):
        raise _link(self).fail("non-data result")

    refused.__name__ = name
    return refused


class Remote:
    """A handle to an object living in the untrusted instance. Attribute access, calls,
    iteration and indexing become requests; `in` and `len` are computed here from the
    items its iteration yields; anything that would let the object decide a verdict
    (comparison, truth, hashing, conversion, printing, arithmetic) fails the test as
    `non-data result`."""

    __slots__ = ("_couplet_id", "_couplet_link")

    def __getattr__(self, name):
        return _link(self).ask(_GETATTR, self, name)

    def __setattr__(self, name, value):
        _link(self).ask(_SETATTR, self, name, value)

    def __call__(self, *args, **kwargs):
        return _link(self).ask(_CALL, self, args, kwargs)

    def __iter__(self):
        return _link(self).ask(_ITER, self)

    def __next__(self):
        return _link(self).ask(_NEXT, self)

    def __len__(self):
        return len(_link(self).ask(_ITEMS, self))

    def __getitem__(self, key):
        return _link(self).ask(_GETITEM, self, key)

    def __contains__(self, item):
        # Python's own rule for an iterable without __contains__; `==` here is the trusted
        # side's, and refuses when either value is a handle.
        try:
            items = _link(self).ask(_ITEMS, self)
        except TypeError:
            items = self
        for x in items:
            if x is item or x == item:
                return True
        return False


for _name in (
    "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __bool__ __hash__ __repr__ __str__ __format__ "
    "__bytes__ __int__ __float__ __complex__ __index__ __round__ __trunc__ __floor__ __ceil__ "
    "__abs__ __neg__ __pos__ __invert__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ "
    "__truediv__ __rtruediv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ "
    "__and__ __rand__ __or__ __ror__ __xor__ __rxor__ __lshift__ __rlshift__ __rshift__ "
    "__rrshift__ __matmul__ __rmatmul__ __divmod__ __rdivmod__ __enter__ __exit__ "
    "__reduce__ __reduce_ex__ __deepcopy__ __copy__ __getstate__"
).split():
    setattr(Remote, _name, _refuse(_name))


# ---------------------------------------------------------------- confinement

# What unpickling may construct on the trusted side: plain data and its containers.
_UNPICKLABLE = {
    ("builtins", n) for n in "complex set frozenset bytearray range slice list dict tuple int float str bytes bool".split()
} | {("collections", n) for n in ("OrderedDict", "deque", "Counter", "defaultdict")} | {("_codecs", "encode")}


def _install_gate(crossed, dataset):
    """The trusted role's gate against running the solution's output as code. A test that
    compiles (eval, exec, compile) or unmarshals text made from a str or bytes value that
    crossed from the solution in this job gets PermissionError before anything of it runs:
    the value itself, a piece of it (8 bytes or more: `f(x).strip()`, a slice), or code
    built around it (16 bytes or more of it: `"(" + f(x) + ")"`). Parsing alone
    (`ast.parse`, `ast.literal_eval`) runs nothing and stays allowed; unpickling may
    construct plain data only. The hook decides before the code exists, in a process where
    no solution code has run, so nothing can switch it off first."""
    import sys

    import ast  # now: an import from inside the hook would re-enter it

    def piece_of_solution(source):  # `source` is bytes
        if source in crossed:
            return True
        return len(source) >= 8 and any(source in t for t in crossed if len(t) > len(source))

    def built_around_solution(source):
        return any(t in source for t in crossed if len(t) >= 16)

    def literal(source):
        # Plain data written as Python (what an honest `eval(f(x))` evaluates) runs no
        # code; `ast.parse` here passes the gate as parsing only.
        try:
            tree = ast.parse(source, mode="eval")
        except BaseException:
            return False
        allowed = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict,
                   ast.UnaryOp, ast.USub, ast.UAdd, ast.BinOp, ast.Add, ast.Sub, ast.Load)
        return all(isinstance(node, allowed) for node in ast.walk(tree))

    def parsing_only():
        caller = sys._getframe(2)  # parsing_only <- gate <- the caller of compile
        return caller.f_code.co_name == "parse" and caller.f_code.co_filename.endswith("ast.py")

    def gate(event, args):
        if event in ("compile", "marshal.loads") and args:
            source = args[0]
            if type(source) is str:
                source = source.encode("utf-8", "surrogatepass")
            if type(source) is not bytes or not source or source in dataset:
                return
            # Only code made at run time (`<string>`, `<test>`...) is searched for pieces
            # of the solution's text; a module's own source or bytecode is not.
            generated = event == "compile" and str(args[1] if len(args) > 1 else "").startswith("<")
            suspect = bool(crossed) and (
                piece_of_solution(source) or (generated and built_around_solution(source))
            )
            if not (suspect or generated) or parsing_only() or literal(source):
                return
            # Code made at run time that is not the job's own: a dataclass may run, but this
            # instance serves no further job; the solution's own text never runs.
            tripped.append(event if suspect else "dynamic code")
            if suspect:
                raise PermissionError("sandbox: the solution's output is never run as code")
        elif event == "pickle.find_class":
            tripped.append(event)
            if tuple(args[:2]) not in _UNPICKLABLE:
                raise PermissionError("sandbox: unpickling may construct plain data only")

    tripped = []
    sys.addaudithook(gate)
    return tripped


def _install_audit_hook(os_rules, allowed_roots, _BaseException):
    # Audit hooks cannot be removed once added. Always: no gc scans of live objects and
    # no other threads' frames. Process backend also: deny what neither role ever needs
    # from the OS (both roles are confined alike: the trusted one runs dataset code).
    import sys, os

    introspection = {
        "sys._current_frames", "sys._current_exceptions",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    }

    def base_hook(event, args):
        if event in introspection:
            raise PermissionError("sandbox: " + event + " is not allowed")

    if not os_rules:
        sys.addaudithook(base_hook)
        return
    deny_events = {
        "os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
        "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "os.setuid",
        "_thread.start_new_thread", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
        "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.sendto", "os.chdir", "os.chmod", "os.chown",
        "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
        "os.truncate", "os.putenv", "os.unsetenv", "sys._current_frames", "os.setsid",
        "os.setpgid",
    }
    deny_imports = {"ctypes", "_ctypes", "multiprocessing", "_posixsubprocess", "_socket", "socket", "mmap"}
    import sysconfig

    paths = sysconfig.get_paths()
    stdlib = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    roots = [os.path.realpath(r) for r in list(allowed_roots) + stdlib + [os.getcwd()]]
    realpath, fspath = os.path.realpath, os.fspath

    def allowed(path):
        try:
            p = realpath(fspath(path))
        except _BaseException:
            return False
        return any(p == r or p.startswith(r + "/") for r in roots)

    def hook(event, args):
        base_hook(event, args)
        if event in deny_events:
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "import" and args and args[0] in deny_imports:
            raise ImportError("sandbox: import of " + args[0] + " is not allowed")
        if event == "open":
            path = args[0]
            if isinstance(path, int):
                return
            if not allowed(path):
                raise PermissionError("sandbox: access to " + str(path) + " is not allowed")
        if event in ("os.listdir", "os.scandir") and args and args[0] is not None and not allowed(args[0]):
            raise PermissionError("sandbox: listing is not allowed")

    sys.addaudithook(hook)

    # Threads: Python 3.11 raises no audit event for them, so take the primitive away.
    import _thread

    def no_threads(*args, **kwargs):
        raise RuntimeError("sandbox: threads are not allowed")

    _thread.start_new_thread = no_threads
    _thread.start_new = no_threads
    try:
        import threading

        threading._start_new_thread = no_threads
    except _BaseException:
        pass


_couplet_main()
