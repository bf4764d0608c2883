"""One installable package: the wheel (built from the sdist) installed into a fresh virtualenv
works from an unrelated directory, and ships no top-level `tasks`/`sandbox` import names.

The fresh virtualenv gets only the wheel; its third-party dependencies come from the test's own
environment through a .pth line (installing torch & co. again would add minutes, not coverage).
That environment's editable install of harness is not visible there: .pth files are read only
in a site directory, not in the directories they add.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from the unpacked sdist: what a user's `pip install` of a release sees
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    (whl,) = out.glob("harness-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, wheel: Path) -> Path:
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    return venv


def run(venv: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "harness"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_ships_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"harness"}
    for data in ("harness/reports/templates/index.html", "harness/reports/static/report.css", "harness/suites/smoke.yaml",
                 "harness/suites/gate.yaml", "harness/tasks/fixtures/hellaswag/hellaswag_val.jsonl",
                 "harness/tasks/fixtures/mt_bench/judge_prompts.jsonl", "harness/sandbox/Dockerfile",
                 "harness/sandbox/session_runner.py", "harness/tasks/hellaswag.py"):
        assert data in names, data
    assert not any(n.startswith(("harness/testing", "tests/")) for n in names), "test doubles stay out of the wheel"


def test_installed_wheel_works_from_an_unrelated_directory(fresh: Path, tmp_path: Path) -> None:
    where = run(fresh, tmp_path, "--help")
    assert where.returncode == 0, where.stderr
    located = subprocess.run([str(fresh / "bin" / "python"), "-c",
                              "import harness, importlib.util as u; print(harness.__file__); "
                              "print(u.find_spec('tasks'), u.find_spec('sandbox'))"],
                             cwd=tmp_path, capture_output=True, text=True, check=True).stdout.splitlines()
    assert located[0].startswith(str(fresh)) and located[1] == "None None"

    tasks = run(fresh, tmp_path, "tasks")
    assert tasks.returncode == 0 and "hellaswag" in tasks.stdout and "mt_bench" in tasks.stdout

    suites = run(fresh, tmp_path, "suites")
    assert suites.returncode == 0 and "smoke" in suites.stdout

    db = tmp_path / "results.duckdb"
    summary = tmp_path / "summary.json"
    smoke = run(fresh, tmp_path, "run", "--suite", "smoke", "--limit", "1", "--db", str(db), "--json", str(summary),
                "--no-progress")
    assert smoke.returncode == 0, smoke.stderr
    assert set(json.loads(summary.read_text())["tasks"]) >= {"hellaswag", "gsm8k", "mmlu_philosophy"}

    site_dir = tmp_path / "site"
    report = run(fresh, tmp_path, "report", "--out", str(site_dir), "--db", str(db))
    assert report.returncode == 0, report.stderr
    assert (site_dir / "index.html").is_file() and (site_dir / "assets" / "report.css").is_file()

    program = tmp_path / "hello.py"
    program.write_text("print('hello from the sandbox')\n")
    boxed = run(fresh, tmp_path, "sandbox", "run", str(program), "--timeout", "20")
    assert boxed.returncode == 0, boxed.stderr
    verdict = json.loads(boxed.stdout)
    assert verdict["status"] == "passed" and "hello from the sandbox" in verdict["stdout"]
