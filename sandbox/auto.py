"""Choosing a backend: `auto` takes Docker if the daemon answers, else bubblewrap, else refuses."""

from __future__ import annotations

from harness.core.errors import UsageError
from harness.sandbox.base import Sandbox

BACKENDS = ("auto", "docker", "bwrap", "local")


def resolve_backend(name: str = "auto") -> str:
    from harness.sandbox.bwrap import bwrap_available
    from harness.sandbox.docker import docker_available

    if name not in BACKENDS:
        raise UsageError(f"unknown sandbox backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name != "auto":
        return name
    if docker_available():
        return "docker"
    if bwrap_available():
        return "bwrap"
    raise UsageError("no sandbox available for code execution: start a Docker daemon or install bubblewrap "
                     "(or opt in to --sandbox local with --allow-unsandboxed-code)")


def get_sandbox(name: str = "auto", *, allow_unsandboxed: bool = False, **options) -> Sandbox:
    """A ready sandbox for `name` (auto|docker|bwrap|local); close it (or use `with`) when done."""
    backend = resolve_backend(name)
    if backend == "docker":
        from harness.sandbox.docker import DockerSandbox

        return DockerSandbox(**options)
    if backend == "bwrap":
        from harness.sandbox.bwrap import BwrapSandbox

        return BwrapSandbox(**options)
    from harness.sandbox.local import LocalSandbox

    return LocalSandbox(allow_unsandboxed=allow_unsandboxed)
