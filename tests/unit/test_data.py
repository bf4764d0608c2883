"""Data-source resolution: the hub probe must answer fast and never stall an offline machine."""

import socket

import pytest

from harness import tasks as catalog
from harness.taskkit import data


@pytest.fixture(autouse=True)
def fresh_probe():
    data.hub_reachable.cache_clear()
    data.clear_cache()
    yield
    data.hub_reachable.cache_clear()
    data.clear_cache()


def test_probe_sees_a_listening_endpoint():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert data.hub_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")


def test_unreachable_hub_falls_back_to_the_fixture_at_once(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HARNESS_DATA_SOURCE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    dataset = catalog.get_task("gsm8k").load()
    assert dataset.source.startswith("fixture:")
    assert data.hub_reachable.cache_info().currsize == 1  # probed once, remembered
