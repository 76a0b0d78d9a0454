# Couplet's in-sandbox test harness (trusted code, run as `python -I -S -B -c <this>`).
# Reads a JSON payload from stdin, then for each test i from payload["start"]:
# restores builtins, execs the solution afresh in fresh globals, execs the test, and emits
# a marker line on fd 1 through a saved os.write:
#     \n<token>\t<event>\t<i>\t<status>\t<error>\t<hex stdout>\t<hex stderr>\t<truncated>\n
# A test passes only if its own statement completed. Everything the solution could patch
# (json, print, builtins, exception classes) is captured before the solution runs; the
# marker is built from C-level str/bytes methods only. The token is random per job.
def _couplet_harness():
    import sys, os, builtins
    _write, _exec, _compile, _str, _type = os.write, exec, compile, str, type
    _AssertionError, _MemoryError, _BaseException = AssertionError, MemoryError, BaseException
    _SyntaxError, _ValueError, _OverflowError = SyntaxError, ValueError, OverflowError
    # Payload (no json: importing it costs more than a whole test inside wasm):
    #   token \n start \n output_cap \n flags \n n_tests \n n_roots \n
    #   then 1 + n_tests + n_roots items, each "<byte length>\n<utf-8 bytes>".
    data = sys.stdin.buffer.read()
    pos = 0

    def field():
        nonlocal pos
        end = data.index(b"\n", pos)
        value = data[pos:end].decode()
        pos = end + 1
        return value

    def item():
        nonlocal pos
        size = int(field())
        value = data[pos : pos + size].decode("utf-8")
        pos += size
        return value

    head = [field() for _ in range(6)]
    flags = head[3].split(",")
    n_tests, n_roots = int(head[4]), int(head[5])
    payload = {
        "token": head[0],
        "start": int(head[1]),
        "output_cap": int(head[2]),
        "check_syntax": "check_syntax" in flags,
        "audit": "audit" in flags,
        "solution": item(),
    }
    payload["tests"] = [item() for _ in range(n_tests)]
    payload["allowed_roots"] = [item() for _ in range(n_roots)]
    del data
    try:
        sys.stdin.close()
    except _BaseException:
        pass
    token = payload["token"]
    cap = int(payload["output_cap"])
    solution = payload["solution"]
    tests = payload["tests"]

    def emit(event, i, status="", error="", out=b"", err=b"", truncated=0):
        line = "\n" + token + "\t" + event + "\t" + _str(i) + "\t" + status + "\t" + error + "\t" + out.hex() + "\t" + err.hex() + "\t" + _str(truncated) + "\n"
        try:
            _write(1, line.encode("utf-8", "replace"))
        except _BaseException:
            pass

    class Capped:
        """A text stream that keeps at most `cap` bytes."""

        def __init__(self):
            self.buf = bytearray()
            self.truncated = 0

        def write(self, s):
            data = _str(s).encode("utf-8", "replace")
            room = cap - len(self.buf)
            if len(data) > room:
                self.truncated = 1
                data = data[: max(room, 0)]
            self.buf += data
            return len(s)

        def flush(self):
            pass

        def isatty(self):
            return False

    _install_audit_hook(payload.get("audit"), payload.get("allowed_roots", []), _BaseException)

    if payload.get("check_syntax") and payload["start"] == 0:
        try:
            # 0x400 = ast.PyCF_ONLY_AST: exactly ast.parse's check (compile() proper
            # also rejects e.g. a top-level `return`, which ast.parse accepts).
            _compile(solution, "<solution>", "exec", 0x400, dont_inherit=True)
            emit("syntax", 0, "ok")
        except (_SyntaxError, _ValueError, _OverflowError, _MemoryError) as e:
            emit("syntax", 0, "error", _type(e).__name__)

    pristine = dict(builtins.__dict__)
    real_out, real_err = sys.stdout, sys.stderr
    for i in range(payload["start"], len(tests)):
        emit("start", i)
        builtins.__dict__.clear()
        builtins.__dict__.update(pristine)
        out, err = Capped(), Capped()
        sys.stdout, sys.stderr = out, err
        status, error = "pass", ""
        try:
            g = {"__name__": "__main__", "__builtins__": builtins}
            _exec(_compile(solution, "<solution>", "exec", dont_inherit=True), g)
            _exec(_compile(tests[i], "<test>", "exec", dont_inherit=True), g)
        except _AssertionError:
            status, error = "fail", "AssertionError"
        except _MemoryError:
            status, error = "memory", "MemoryError"
        except _BaseException as e:
            status = "fail"
            try:
                error = _type(e).__name__
            except _BaseException:
                error = "Exception"
        sys.stdout, sys.stderr = real_out, real_err
        safe = "".join(c for c in _str(error)[:64] if c.isalnum() or c in "_.")
        emit("end", i, status, safe, bytes(out.buf), bytes(err.buf), out.truncated | err.truncated)


def _install_audit_hook(os_rules, allowed_roots, _BaseException):
    # Audit hooks cannot be removed once added. Always: no gc scans of live objects and
    # no other threads' frames (routes to this harness's token). Frame walking through
    # sys._getframe / f_back stays allowed because the standard library's own imports
    # (re, enum, typing, namedtuple) need it; see the README's limits. Process backend
    # also: deny what a test never needs from the OS.
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


_couplet_harness()
