"""Batch mode (`Sandbox.run_many`, warm sessions): the same verdicts as one sandbox per program, and no program can
reach the next one: not through a process it leaves behind, not through files or IPC it leaves, not through the
driver that runs them (which it can kill or stop, at the price of being run again alone).

Runs on docker where a daemon answers (CI starts one) and bwrap where bubblewrap is installed.
"""

from __future__ import annotations

import pytest

import harness.sandbox.session
from harness.sandbox import Job, Limits, check_programs, get_sandbox
from harness.sandbox.bwrap import bwrap_available
from harness.sandbox.docker import docker_available
from tests.conftest import require_or_skip

_boxes: dict[str, object] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_boxes():
    yield
    for b in _boxes.values():
        b.close()
    _boxes.clear()


@pytest.fixture(params=["docker", "bwrap"])
def box(request):
    name = request.param
    if name == "docker":
        require_or_skip(docker_available(), "a Docker daemon", "no Docker daemon answers `docker info`; CI starts one")
    if name == "bwrap":
        require_or_skip(bwrap_available(), "bubblewrap", "bubblewrap or /usr/bin/python3 is not installed")
    if name not in _boxes:
        _boxes[name] = get_sandbox(name)
    return _boxes[name]


def counts(box) -> dict[str, int]:
    return {k: box.session_counts.get(k, 0) for k in ("warm", "rerun", "cold")}


def delta(before: dict, after: dict) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


ADD = "def add(a, b):\n    return a + b\n"
ADD_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
PARENT_GUARD = "import os, signal\nif os.getppid() > 1:\n"  # a session's driver; alone, the parent is init or outside


def py(source: str, **limits) -> Job:
    return Job({"main.py": source}, ["python3", "main.py"], Limits(timeout_s=limits.pop("timeout_s", 1.5), **limits))


def checked(program: str) -> Job:
    from harness.sandbox.base import program_files

    nonce = "harness-ok-" + "0123456789abcdef" * 2
    return Job(program_files(program, ADD_TEST, "add", nonce), ["python3", "-I", "driver.py"], Limits(timeout_s=1.5),
               nonce)


ADVERSARIAL = {
    "good": checked(ADD),
    "wrong": checked("def add(a, b):\n    return a - b\n"),
    "sys-exit-before-tests": checked(ADD + "import sys\nsys.exit(0)\n"),
    "os-exit-before-tests": checked(ADD + "import os\nos._exit(0)\n"),
    "fake-nonce": checked(ADD + "print('harness-ok-' + 'f' * 32, flush=True)\nimport os\nos._exit(0)\n"),
    "crash": checked("def add(a, b):\n    raise RuntimeError('boom')\n"),
    "good-2": checked(ADD),
    "sigkill-self": py("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"),
    "infinite-loop": checked(ADD + "while True:\n    pass\n"),
    "memory-bomb": py("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n", timeout_s=10),
    "exit-3-with-output": py("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n"),
    "kill-parent-and-all": py(PARENT_GUARD + "    os.kill(os.getppid(), signal.SIGKILL)\n"
                              "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\nprint('survived')\n"),
    # 5 s: alone on docker, `docker exec` lingers ~2 s for the streams the background process still holds
    "background-process": py("import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; "
                              "time.sleep(60)'], start_new_session=True)\nprint('spawned')\n", timeout_s=5),
    "good-3": checked(ADD),
}


def test_batch_verdicts_equal_single_on_adversarial_mix(box):
    jobs = list(ADVERSARIAL.values())
    single = [box.run(j.files, j.command, j.limits, nonce=j.nonce) for j in jobs]
    before = counts(box)
    batch = box.run_many(jobs, workers=2)
    assert delta(before, counts(box)).get("cold", 0) == 0
    mismatches = []
    for label, s, b in zip(ADVERSARIAL, single, batch):
        same = (s.status, s.stdout.strip()) == (b.status, b.stdout.strip())
        if s.status != "timeout":
            same &= s.exit_code == b.exit_code
        if not same:
            mismatches.append(f"{label}: single {s.status}/{s.exit_code}/{s.stdout.strip()!r} ({s.detail}), "
                              f"batch {b.status}/{b.exit_code}/{b.stdout.strip()!r} ({b.detail})")
    assert not mismatches, "\n".join(mismatches)
    assert [v.status for label, v in zip(ADVERSARIAL, batch) if label.startswith("good")] == ["passed"] * 3


# The victim: before its function is defined, it waits for anything the previous program left behind to strike,
# then checks that it runs in a pristine sandbox; check() then runs as usual.
VICTIM = '''
import os, time
time.sleep(0.4)
me, parent = os.getpid(), os.getppid()
def live(p):
    with open(f"/proc/{p}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me, parent) and live(p)]
assert not others, ("processes left by an earlier program", others)
assert os.listdir("/tmp") == ["work"], os.listdir("/tmp")
assert sorted(os.listdir(".")) == ["driver.py", "solution.py"], os.listdir(".")
assert not os.path.isdir("/dev/shm") or not os.listdir("/dev/shm"), os.listdir("/dev/shm")
with open("/proc/sysvipc/shm") as f:
    assert len(f.read().splitlines()) == 1, "a System V shared memory segment survived"
kids = []
for _ in range(40):  # a fork bomb's zombies, not yet reaped, would still hold the pids this needs
    pid = os.fork()
    if pid == 0:
        time.sleep(0.1)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
import resource
assert resource.getrlimit(resource.RLIMIT_STACK)[0] != 1 << 20, "inherited a tampered stack limit"
assert os.getpriority(os.PRIO_PROCESS, 0) != 19 and os.sched_getscheduler(0) != os.SCHED_IDLE, "inherited niceness"
assert os.cpu_count() == 1 or os.sched_getaffinity(0) != {0}, "inherited a tampered CPU affinity"
''' + ADD

LINGERING_DAEMON = '''
import os, signal, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # double fork: reparented to init, in a session of its own, stdio closed
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(0.2)
        end = time.time() + 3
        while time.time() < end:
            for path in ("/tmp/work/solution.py", "/tmp/work/driver.py"):
                try:
                    with open(path, "w") as f:
                        f.write("raise SystemExit(1)\\n")
                except OSError:
                    pass
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            time.sleep(0.01)
    os._exit(0)
print("left a daemon behind")
'''

# prlimit(2), setpriority, sched_setaffinity and sched_setscheduler work on any process of the same uid, the
# driver included, and its next child would inherit what they set
TAMPER_WITH_DRIVER = PARENT_GUARD + '''\
    import resource
    parent = os.getppid()
    resource.prlimit(parent, resource.RLIMIT_STACK, (1 << 20, 1 << 20))
    os.setpriority(os.PRIO_PROCESS, parent, 19)
    os.sched_setaffinity(parent, {0})
    os.sched_setscheduler(parent, os.SCHED_IDLE, os.sched_param(0))
print("tampered")
'''

RESIDUE = '''
import ctypes, os
os.makedirs("/tmp/stash/locked")
with open("/tmp/stash/locked/f", "w") as f:
    f.write("x")
os.chmod("/tmp/stash/locked", 0)
os.chmod("/tmp/stash", 0o500)
with open("/tmp/planted", "w") as f:
    f.write("x")
try:
    with open("/dev/shm/planted", "w") as f:
        f.write("x")
except OSError:
    pass
assert ctypes.CDLL(None).shmget(0x4242, 4096, 0o1000 | 0o600) >= 0  # IPC_CREAT
print("left residue")
'''


def test_malicious_program_cannot_change_a_neighbours_verdict(box, monkeypatch):
    monkeypatch.setattr(harness.sandbox.session, "GRACE_S", 1.0)  # a stopped driver is given up on after timeout + 1 s
    attacks = {
        "fork-bomb": py("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                        timeout_s=1),
        "lingering-daemon": py(LINGERING_DAEMON),
        "residue": py(RESIDUE),
        "tamper-with-driver": py(TAMPER_WITH_DRIVER),
        "kill-driver": py(PARENT_GUARD + "    os.kill(os.getppid(), signal.SIGKILL)\nprint('done')\n"),
        "stop-driver": py(PARENT_GUARD + "    os.kill(os.getppid(), signal.SIGSTOP)\nprint('done')\n"),
    }
    victim = checked(VICTIM)
    jobs = [j for attack in attacks.values() for j in (attack, victim)]
    before = counts(box)
    verdicts = box.run_many(jobs, workers=1)  # one session, in this order
    victims = verdicts[1::2]
    assert [v.status for v in victims] == ["passed"] * len(attacks), [(v.status, v.stderr[-300:]) for v in victims]
    # only the two programs that took their driver down were run again alone; all else came from sessions
    assert delta(before, counts(box)) == {"warm": len(jobs) - 2, "rerun": 2}
    for (label, attack), verdict in zip(attacks.items(), verdicts[0::2]):
        alone = box.run(attack.files, attack.command, attack.limits)
        assert (verdict.status, verdict.stdout) == (alone.status, alone.stdout), label


def test_driver_is_out_of_a_programs_reach(box):
    probe = '''
import ctypes, os
parent = os.getppid()
reached = []
for path, mode in ((f"/proc/{parent}/mem", "rb"), (f"/proc/{parent}/environ", "rb"), (f"/proc/{parent}/fd/0", "rb"),
                   (f"/proc/{parent}/fd/1", "wb")):
    try:
        open(path, mode).close()
        reached.append(path)
    except OSError:
        pass
try:
    os.listdir(f"/proc/{parent}/fd")
    reached.append("fd listing")
except OSError:
    pass
if ctypes.CDLL(None).ptrace(16, parent, 0, 0) == 0:  # PTRACE_ATTACH
    reached.append("ptrace")
print(parent, reached)
'''
    before = counts(box)
    v = box.run_many([Job({"probe.py": probe}, ["python3", "-I", "probe.py"], Limits(timeout_s=5))])[0]
    assert delta(before, counts(box)) == {"warm": 1}, v  # a ptrace that worked would have stopped the driver
    parent, _, reached = v.stdout.partition(" ")
    assert v.status == "passed" and int(parent) > 1, v  # forked by the session's driver
    assert reached.strip() == "[]", v.stdout


def test_session_is_reused_with_a_fresh_work_dir_each_time(box):
    source = "import os\nprint(os.getppid(), sorted(os.listdir('.')))\nopen('left-behind', 'w').write('x')\n"
    jobs = [Job({f"p{i}.py": source}, ["python3", "-I", f"p{i}.py"], Limits(timeout_s=5)) for i in range(5)]
    before = counts(box)
    verdicts = box.run_many(jobs, workers=1)
    assert delta(before, counts(box)) == {"warm": 5}
    drivers = {v.stdout.split()[0] for v in verdicts}
    assert len(drivers) == 1 and int(drivers.pop()) > 1
    assert [v.stdout.split(" ", 1)[1].strip() for v in verdicts] == [f"['p{i}.py']" for i in range(5)]


def test_check_programs_keeps_order_and_strips_nonce(box):
    programs = [(ADD, ADD_TEST, "add"), ("def add(a, b):\n    return 0\n", ADD_TEST, "add"),
                (ADD + "print('hi')\n", ADD_TEST, "add")] * 3
    verdicts = check_programs(box, programs, Limits(timeout_s=5))
    assert [v.status for v in verdicts] == ["passed", "failed", "passed"] * 3
    assert all(v.stdout.strip() == "hi" for v in verdicts[2::3])
