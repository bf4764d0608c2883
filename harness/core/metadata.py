"""What makes a run reproducible: versions, git state, hardware, backend description."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import harness
from harness.core.redact import redact_argv

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, where harness runs from one
LIBRARIES = ("torch", "transformers", "tokenizers", "datasets", "duckdb", "numpy", "scipy", "pandas", "accelerate", "gguf")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    sha = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(dirty) if dirty is not None else None}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    info: dict = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    torch = sys.modules.get("torch")  # only if the backend already imported it
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def collect(backend_description: dict, seed: int, argv: list[str] | None = None) -> dict:
    return {
        "harness_version": harness.__version__,
        "git": git_state(),
        "python": sys.version.split()[0],
        "libraries": library_versions(),
        "hardware": hardware(),
        "backend": backend_description,
        "seed": seed,
        "argv": redact_argv(argv if argv is not None else sys.argv[1:]),  # the one redactor
    }
