"""In-sandbox runner: started as `python3 -I -S -c <this source> WORKDIR` inside the container or bwrap.

Reads a JSON spec on stdin ({files, command, rlimits}), empties the scratch space (and /dev/shm, /dev/mqueue,
System V IPC) left by an earlier run,
writes the files into WORKDIR, sets the rlimits, points stdin at /dev/null and execs the command, so that the
exit status and output seen outside are the program's own. Stdlib only: it runs on the sandbox's Python.
"""
import json
import os
import resource
import shutil
import sys


def _fail(message):
    sys.stderr.write("harness-sandbox-runner: " + message + "\n")
    sys.stderr.flush()
    os._exit(121)


def _empty(directory):
    # A pooled container is reused: nothing one run wrote may be seen by the next.
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass


def _empty_shared():
    # A pooled container keeps its /dev/shm, /dev/mqueue and System V IPC namespace from run to run.
    for directory in ("/dev/shm", "/dev/mqueue"):
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            _empty(directory)
    for kind in ("shm", "sem", "msg"):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                ids = [int(line.split()[1]) for line in f.read().splitlines()[1:] if line.strip()]
        except (OSError, ValueError, IndexError):
            continue
        if ids:
            import ctypes

            remove = getattr(ctypes.CDLL(None), kind + "ctl")
            for ipc_id in ids:
                remove(ipc_id, 0, 0)  # IPC_RMID


def main():
    workdir = sys.argv[1]
    try:
        spec = json.loads(sys.stdin.buffer.read())
        scratch = os.path.dirname(workdir.rstrip("/")) or "/"
        _empty(scratch)
        _empty_shared()
        os.makedirs(workdir, exist_ok=True)
        for name, hexdata in spec["files"].items():
            path = os.path.join(workdir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(bytes.fromhex(hexdata))
        os.chdir(workdir)
        limits = spec["rlimits"]
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (limits["as"], limits["as"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize"], limits["fsize"]))
        resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
        if limits.get("nproc"):
            resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"], limits["nproc"]))
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        command = spec["command"]
    except Exception as exc:  # anything here is the sandbox's failure, not the program's
        _fail(f"{type(exc).__name__}: {exc}")
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        _fail(f"cannot exec {command[0]!r}: {exc}")


main()
