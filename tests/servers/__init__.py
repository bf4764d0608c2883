"""Real servers on loopback for tests: started as subprocesses on a free port, ready once
/v1/models answers, stopped at teardown. Reuse them from any test module:

    from tests import servers
    logprob_server = servers.logprob_server  # the fixture, under its own name

- `logprob_server` (session): tests.servers.logprob_server over the embedded SmolLM2, model id "smollm2".
- `llama_server` (session): llama_cpp.server over the embedded GGUF, alias "smollm2" (skipped
  when llama-cpp-python is not installed).
- `server_factory` (module): starts variants (`.logprob(*flags)`, `.proxy(upstream, ...)`,
  `.llama()`) and stops every one of them when the module ends.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

MODEL_ID = "smollm2"
STARTUP_TIMEOUT_S = 300.0  # the first start may convert the embedded GGUF (~20 s) on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def spec(self, model: str = MODEL_ID) -> str:
        return f"openai:{model}@{self.base_url}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def _answers(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code < 500
    except httpx.HTTPError:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_server(name: str, argv: list[str], port: int, log_dir: Path, env: dict[str, str] | None = None,
                 ready: str = "models") -> ServerProcess:
    """Start `argv` and wait until GET /v1/models answers (ready="models") or the port accepts (ready="port")."""
    log_path = log_dir / f"{name}-{port}.log"
    full_env = dict(os.environ) | (env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    server = ServerProcess(name, process, port, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log_text()[-3000:]}")
        up = _port_open(port) if ready == "port" else _answers(f"{server.base_url}/models", {})
        if up:
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{name} did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{server.log_text()[-3000:]}")


def start_logprob_server(log_dir: Path, *flags: str, env: dict[str, str] | None = None) -> ServerProcess:
    port = free_port()
    # One torch thread: the test process and other servers share the machine's cores, and an
    # oversubscribed torch pool is several times slower than a single thread.
    argv = [sys.executable, "-m", "tests.servers.logprob_server", "--model", "smollm2-135m-instruct",
            "--model-name", MODEL_ID, "--port", str(port), "--threads", "1", *flags]
    return start_server("logprob_server", argv, port, log_dir, env)


def start_fault_proxy(log_dir: Path, upstream: ServerProcess, *, rate: float, seed: int, faults: str | None = None,
                      paths: str | None = None, hang_s: float = 60.0) -> tuple[ServerProcess, Path]:
    port = free_port()
    fault_log = log_dir / f"faults-{port}.jsonl"
    argv = [sys.executable, "-m", "tests.servers.fault_proxy", "--upstream", upstream.root_url, "--port", str(port),
            "--rate", str(rate), "--seed", str(seed), "--hang-s", str(hang_s), "--log", str(fault_log)]
    argv += ["--faults", faults] if faults else []
    argv += ["--paths", paths] if paths else []
    # ready when the port accepts: a readiness GET through the proxy could draw a fault itself
    return start_server("fault_proxy", argv, port, log_dir, ready="port"), fault_log


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def start_llama_server(log_dir: Path, n_ctx: int = 2048) -> ServerProcess:
    if not llama_cpp_available():
        pytest.skip("llama-cpp-python[server] is not installed")
    from harness.backends.embedded import gguf_path

    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", MODEL_ID,
            "--port", str(port), "--n_ctx", str(n_ctx)]
    return start_server("llama_server", argv, port, log_dir)


@dataclass
class ServerFactory:
    log_dir: Path
    started: list[ServerProcess] = field(default_factory=list)

    def logprob(self, *flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = start_logprob_server(self.log_dir, *flags, env=env)
        self.started.append(server)
        return server

    def proxy(self, upstream: ServerProcess, **options) -> tuple[ServerProcess, Path]:
        server, fault_log = start_fault_proxy(self.log_dir, upstream, **options)
        self.started.append(server)
        return server, fault_log

    def llama(self, n_ctx: int = 2048) -> ServerProcess:
        server = start_llama_server(self.log_dir, n_ctx)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()
        self.started.clear()


@pytest.fixture(scope="session")
def logprob_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_logprob_server(tmp_path_factory.mktemp("logprob_server"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_llama_server(tmp_path_factory.mktemp("llama_server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path_factory.mktemp("servers"))
    yield factory
    factory.stop_all()
