"""Adversarial conformance suite for the code sandbox, run against every backend this machine has.

docker runs where a daemon answers (skipped with the reason otherwise; CI starts one), bwrap wherever
bubblewrap is installed, local only for the benign cases (it is not a sandbox). Every attack must be
contained, leave nothing running and nothing written on the host, and get the right status.

docker and bwrap run every case twice: `single` (one sandbox invocation per program, `Sandbox.run`) and `batch`
(through `Sandbox.run_many`, i.e. as one program of a warm session that runs program after program in forked
children); both must give the same verdicts. tests/test_sandbox_batch.py covers what is particular to sessions.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness.core.errors import UsageError
from harness.sandbox import Limits, check_program, get_sandbox, resolve_backend
from harness.sandbox.base import Job
from harness.sandbox.bwrap import bwrap_available
from harness.sandbox.docker import LABEL, docker_available
from tests.conftest import require_or_skip

DOCKER = docker_available()
BWRAP = bwrap_available()
ROOT = os.geteuid() == 0

_boxes: dict[str, object] = {}


def _box(name: str):
    if name == "docker":
        require_or_skip(DOCKER, "a Docker daemon that answers `docker info`", "CI starts one")
    if name == "bwrap":
        require_or_skip(BWRAP, "bubblewrap or /usr/bin/python3", "apt-get install bubblewrap python3; .ci/run does this")
    if name not in _boxes:
        _boxes[name] = get_sandbox(name, allow_unsandboxed=True)
    return _boxes[name]


@pytest.fixture(scope="module", autouse=True)
def _close_boxes():
    yield
    for box in _boxes.values():
        box.close()
    _boxes.clear()


class BatchView:
    """The same sandbox, every run going through `run_many`: each case runs inside a warm session (or, where the
    program destroyed its session, again alone: "rerun"); never without trying a session ("cold")."""

    def __init__(self, box):
        self.box = box

    def run(self, files, command, limits=None, *, nonce=None):
        before = self.box.session_counts
        verdict = self.box.run_many([Job(files, command, limits or Limits(), nonce)])[0]
        after = self.box.session_counts
        assert after.get("cold", 0) == before.get("cold", 0), "run_many did not get a session"
        return verdict

    def __getattr__(self, name):
        return getattr(self.box, name)


def _view(param: str):
    name, _, mode = param.partition("-")
    box = _box(name)
    return BatchView(box) if mode == "batch" else box


@pytest.fixture(params=["docker-single", "docker-batch", "bwrap-single", "bwrap-batch"])
def box(request):
    return _view(request.param)


@pytest.fixture(params=["docker-single", "docker-batch", "bwrap-single", "bwrap-batch", "local"])
def any_box(request):
    return _view(request.param)


def run_py(box, source: str, timeout: float = 5.0, name: str = "main.py", **limits):
    return box.run({name: source}, ["python3", name], Limits(timeout_s=timeout, **limits))


def host_processes_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def assert_nothing_left(token: str) -> None:
    deadline = time.monotonic() + 3
    while host_processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(token) == [], "a process started by the sandboxed program is still running"


# -- benign behaviour: every backend ----------------------------------------------------------------
ADD = "def add(a, b):\n    return a + b\n"
ADD_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_passing_program_passes(any_box):
    v = check_program(any_box, ADD, ADD_TEST, "add")
    assert v.status == "passed", v
    assert v.exit_code == 0 and v.wall_s > 0 and v.backend == any_box.name


def test_wrong_program_fails(any_box):
    v = check_program(any_box, "def add(a, b):\n    return a - b\n", ADD_TEST, "add")
    assert v.status == "failed" and v.exit_code == 1 and "AssertionError" in v.stderr


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)",
                                       "raise SystemExit(0)",
                                       "print('harness-ok-' + 'f' * 32, flush=True)\nimport os\nos._exit(0)"])
def test_exit_before_tests_is_not_a_pass(any_box, exit_call):
    v = check_program(any_box, ADD + exit_call + "\n", ADD_TEST, "add")
    assert v.status == "failed" and v.exit_code == 0, v


def test_plain_run_reports_exit_code_and_output(any_box):
    v = run_py(any_box, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (v.status, v.exit_code, v.stdout, v.stderr) == ("failed", 3, "out\n", "err\n")


def test_signal_death_is_killed(any_box):
    v = run_py(any_box, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert v.status == "killed", v


def test_infinite_loop_times_out(any_box):
    v = run_py(any_box, "while True:\n    pass\n", timeout=1.5)
    assert v.status == "timeout" and v.wall_s < 10, v


def test_sleep_past_timeout(any_box):
    start = time.monotonic()
    v = run_py(any_box, "import time\ntime.sleep(60)\n", timeout=1.0)
    assert v.status == "timeout" and time.monotonic() - start < 10, v


def test_stdout_flood_is_truncated_to_budget(any_box):
    v = run_py(any_box, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", timeout=1.5, output_bytes=4096)
    assert v.status == "timeout" and v.stdout_truncated
    assert len(v.stdout.encode()) <= 4096 + 64


def test_large_finite_output_keeps_head_and_tail(any_box):
    v = run_py(any_box, "print('BEGIN')\nprint('y' * 200000)\nprint('END')\n", output_bytes=1024)
    assert v.status == "passed" and v.stdout_truncated
    assert v.stdout.startswith("BEGIN") and v.stdout.rstrip().endswith("END")


# -- attacks: real sandboxes only ----------------------------------------------------------------------
def test_fork_bomb_is_contained(box):
    token = "forkbomb" + secrets.token_hex(6)
    src = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    v = run_py(box, src, timeout=3, name=f"{token}.py")
    assert v.status in ("timeout", "failed", "killed"), v
    assert_nothing_left(token)
    assert check_program(box, ADD, ADD_TEST, "add").status == "passed"  # the sandbox still works


def test_memory_bomb_is_oom(box):
    v = run_py(box, "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n", timeout=10,
               memory_mb=256)
    assert v.status == "oom", v


def test_disk_fill_is_bounded(box):
    src = ("import os\nwritten = 0\ntry:\n    for i in range(10_000):\n"
           "        with open(f'fill{i}', 'wb') as f:\n            for _ in range(16):\n"
           "                f.write(b'0' * 1024 * 1024)\n                written += 1024 * 1024\n"
           "finally:\n    print(written)\n")
    v = run_py(box, src, timeout=20, tmp_mb=32, file_size_mb=8)
    assert v.status in ("failed", "killed"), v  # ENOSPC or SIGXFSZ, never a pass
    written = int(v.stdout.split()[0]) if v.stdout.strip() else 0
    assert written <= 40 * 1024 * 1024


def test_no_network(box):
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    src = f"""
import socket
reached = []
for host in ("127.0.0.1", "172.17.0.1", "10.0.2.2"):
    try:
        socket.create_connection((host, {port}), timeout=1).close()
        reached.append(host)
    except OSError:
        pass
try:
    socket.getaddrinfo("example.com", 80)
    reached.append("dns")
except OSError:
    pass
print(reached)
raise SystemExit(1 if reached else 0)
"""
    try:
        v = run_py(box, src, timeout=15)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert v.status == "passed" and v.stdout.strip() == "[]", v


def test_no_writes_outside_work_dir(box, tmp_path):
    token = secrets.token_hex(6)
    targets = [f"/etc/pwned-{token}", f"/usr/pwned-{token}", f"/root/pwned-{token}", f"/pwned-{token}",
               str(tmp_path / f"pwned-{token}"), str(Path.cwd() / f"pwned-{token}"), f"/var/tmp/pwned-{token}"]
    src = f"""
targets = {targets!r}
for t in targets:
    try:
        with open(t, "w") as f:
            f.write("x")
        print("WROTE", t)
    except OSError:
        pass
"""
    v = run_py(box, src)
    assert v.status == "passed" and "WROTE" not in v.stdout, v
    assert not any(Path(t).exists() for t in targets)


def test_secrets_do_not_leak(box, monkeypatch):
    secret = "s3cret-" + secrets.token_hex(12)
    monkeypatch.setenv("HARNESS_FAKE_API_KEY", secret)
    home_file = Path.home() / f".harness-sandbox-secret-{secrets.token_hex(4)}"
    home_file.write_text(secret)
    try:
        src = f"""
import os
print(dict(os.environ))
for path in ("/proc/1/environ", "/proc/self/environ", "/proc/{os.getpid()}/environ", {str(home_file)!r},
             os.path.expanduser("~/{home_file.name}"), "/root/{home_file.name}"):
    try:
        print(path, open(path, "rb").read())
    except OSError as e:
        print(path, "denied", type(e).__name__)
"""
        v = run_py(box, src)
    finally:
        home_file.unlink()
    assert v.status == "passed", v
    assert secret not in v.stdout and secret not in v.stderr


def test_kill_parent_and_kill_all(box):
    # bwrap: another slot's uid (the run's own uid is reserved to it and reaped after each run)
    canary_uid = 65534 if box.name == "docker" else box._free[1] if ROOT else os.geteuid()
    token = "canary" + secrets.token_hex(6)
    canary = ["/usr/bin/python3", "-c", "import time; time.sleep(60)", token]
    canaries = [subprocess.Popen(canary)]
    if ROOT:  # a host process with an unprivileged uid the sandboxed programs run as
        canaries.append(subprocess.Popen(canary, user=canary_uid, group=canary_uid))
    try:
        src = ("import os, signal, time\nppid = os.getppid()\nif ppid > 0:\n    try:\n"
               "        os.kill(ppid, signal.SIGKILL)\n    except OSError:\n        pass\n"
               "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\ntime.sleep(0.2)\nprint('survived')\n")
        v = run_py(box, src)
        assert v.status in ("passed", "killed"), v
        assert all(c.poll() is None for c in canaries), ("kill -1 reached a host process", [c.poll() for c in canaries], v)
        assert check_program(box, ADD, ADD_TEST, "add").status == "passed"
    finally:
        for c in canaries:
            c.kill()
            c.wait()


def test_background_process_does_not_outlive_run(box):
    token = "outlive" + secrets.token_hex(6)
    src = f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "{token}"], start_new_session=True,
                 stdout=open("bg.log", "w"), stderr=subprocess.STDOUT)
subprocess.Popen(["sh", "-c", "sleep 60 & exit 0", "{token}"])
print("spawned")
"""
    v = run_py(box, src, timeout=10)
    assert v.status == "passed" and "spawned" in v.stdout, v.stderr
    assert_nothing_left(token)


def test_work_dir_is_fresh_each_run(box):
    # also what a pooled container keeps between runs unless emptied: /dev/shm and System V IPC objects
    run_py(box, "open('/tmp/leftover', 'w').write('x')\nopen('left2', 'w').write('x')\n"
                "open('/dev/shm/left3', 'w').write('x')\nimport ctypes\n"
                "ctypes.CDLL(None).shmget(0x4243, 4096, 0o1000 | 0o600)\n")
    v = run_py(box, "import os\nprint(os.path.exists('/tmp/leftover'), os.path.exists('left2'), "
                    "os.path.exists('/dev/shm/left3'), len(open('/proc/sysvipc/shm').read().splitlines()))\n")
    assert v.stdout.strip() == "False False False 1", v


def test_runs_as_unprivileged_user(box):
    v = run_py(box, "import os\nprint(os.getuid(), os.geteuid())\nprint(open('/proc/self/status').read())\n")
    uid = int(v.stdout.split()[0])
    assert uid != 0
    cap_eff = next(line for line in v.stdout.splitlines() if line.startswith("CapEff"))
    assert int(cap_eff.split()[1], 16) == 0


# -- docker specifics ------------------------------------------------------------------------------
def test_docker_container_settings():
    box = _box("docker")
    assert run_py(box, "print(1)").status == "passed"
    cid = box.containers()[0]
    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout)[0]
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == host["MemorySwap"] > 0 and host["PidsLimit"] > 0 and host["NanoCpus"] > 0
    assert host["LogConfig"]["Type"] == "none" and "size=" in host["Tmpfs"]["/tmp"]
    assert info["Config"]["User"].split(":")[0] == "65534"
    assert info["Config"]["Labels"][LABEL] == "1" and info["Config"]["Labels"]["harness.run"] == box.run_label


def test_docker_containers_removed_on_close_and_after_a_crash():
    _box("docker")  # skips (or, in CI, fails) without a daemon
    box = get_sandbox("docker")
    assert run_py(box, "print(1)").status == "passed"
    mine = box.containers()
    box.close()
    listed = subprocess.run(["docker", "ps", "-aq", "--no-trunc"], capture_output=True, text=True).stdout.split()
    assert not set(mine) & set(listed)
    # a harness that crashed (here: a process that no longer exists) left a container behind
    dead = subprocess.Popen(["true"])
    dead.wait()
    cid = subprocess.run(["docker", "run", "-d", "--network", "none", "--label", f"{LABEL}=1", "--label",
                          f"{LABEL}.owner={socket.gethostname()}:{dead.pid}", "harness-sandbox:1",
                          "python3", "-c", "import time; time.sleep(120)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    get_sandbox("docker").close()  # the next start sweeps it
    listed = subprocess.run(["docker", "ps", "-aq", "--no-trunc"], capture_output=True, text=True).stdout.split()
    assert cid not in listed


# -- selection and the command line --------------------------------------------------------------------
def test_local_needs_explicit_opt_in(monkeypatch):
    monkeypatch.delenv("HARNESS_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(UsageError):
        get_sandbox("local")


def test_auto_prefers_docker_then_bwrap():
    expected = "docker" if DOCKER else "bwrap" if BWRAP else None
    if expected is None:
        with pytest.raises(UsageError):
            resolve_backend("auto")
    else:
        assert resolve_backend("auto") == expected


def test_cli_sandbox_run_prints_json_verdict(tmp_path, capsys):
    require_or_skip(BWRAP, "bubblewrap or /usr/bin/python3", "apt-get install bubblewrap python3; .ci/run does this")
    from harness.cli.main import main

    prog = tmp_path / "prog.py"
    prog.write_text("print('hello from the sandbox')\n")
    assert main(["sandbox", "run", str(prog), "--backend", "bwrap", "--timeout", "5"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["status"] == "passed" and verdict["stdout"] == "hello from the sandbox\n"
    prog.write_text("while True:\n    pass\n")
    assert main(["sandbox", "run", str(prog), "--backend", "bwrap", "--timeout", "1"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "timeout"
