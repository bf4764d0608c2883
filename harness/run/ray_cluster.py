"""Connecting to Ray for `--executor ray`: a fresh local cluster, or the cluster at --ray-address.

With no address a new local cluster is started (`address="local"`), never an existing one found
through RAY_ADDRESS or an earlier `ray start`: a run's resources are what its flags say. With an
address (`HOST:PORT` of a head's GCS, or `ray://HOST:10001` through Ray Client, which needs
`ray[client]`) it connects to that cluster, with its authentication token when one is at hand; one
that does not answer is one line, exit 2. Ray not installed is one line naming the extra.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.core.config import RayOptions
from harness.core.errors import UsageError

REMOTE_BACKENDS = ("openai",)  # already a server: no replicas to start (docs/scale-out.md)
_CLIENT_RETRY_PAUSE_S = 3.0
log = logging.getLogger("harness.ray")


def _ray():  # type: ignore[no-untyped-def]
    _token_auth_if_available()  # Ray reads its authentication mode when it is imported
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'harness[ray]'") from None
    return ray


def check_installed() -> None:
    _ray()


def _token_auth_if_available() -> None:
    """Ray >= 2.59 starts clusters (`ray start`) with token authentication, but a driver only sends its token
    when RAY_AUTH_MODE=token: with a token at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token,
    where `ray start` writes it) and no mode chosen, use it. An explicit RAY_AUTH_MODE always wins."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    default = os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.isfile(default):
        os.environ["RAY_AUTH_MODE"] = "token"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to the head first: ray.init retries an address that does not answer for minutes."""
    hostport = address.removeprefix("ray://").split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}") from None


def _cause(exc: BaseException) -> str:
    """One line for an exception: its first line, and when that only announces more (Ray Client's
    "Initialization failure from server:" before the server's traceback), the last line as well."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


def _init(ray: Any, options: RayOptions, quiet: dict[str, Any]) -> None:
    """ray.init for the options. Through Ray Client (ray://) the head's proxy starts a server process
    per client, and that start can fail on a loaded head although the cluster is fine (Ray's own client
    tests are flaky for it): such a refusal (ConnectionAbortedError) is tried once more, and said."""
    if options.address is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        ray.init(address="local", num_cpus=cpus, **quiet)
        return
    for attempt in (1, 2):
        try:
            ray.init(address=options.address, **quiet)
            return
        except ConnectionAbortedError as exc:
            if attempt == 2 or not options.address.startswith("ray://"):
                raise
            log.warning("the Ray Client server at %s refused the connection (%s); trying once more",
                        options.address, _cause(exc))
            ray.shutdown()
            time.sleep(_CLIENT_RETRY_PAUSE_S)


@contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Ray initialised for the block (and shut down after it when this block started it)."""
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    if options.address is not None:
        _check_reachable(options.address)
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
             "configure_logging": True}
    try:
        _init(ray, options, quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = "start a local Ray cluster" if options.address is None else f"connect to the Ray cluster at {options.address}"
        raise UsageError(f"cannot {where}: {_cause(exc)}") from None
    except Exception as exc:  # Ray raises its own types for an unreachable address (grpc errors in ray://)
        if options.address is None:
            raise
        raise UsageError(f"cannot connect to the Ray cluster at {options.address}: {_cause(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()
