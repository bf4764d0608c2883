"""The one line a Ray connection failure becomes: Ray Client's server-side traceback is reduced to its cause."""

from __future__ import annotations

import traceback

from harness.run.ray_cluster import _cause


def _server_traceback() -> str:
    """What Ray's proxy sends back when it cannot reach the per-client server (proxier.py's format_exc)."""
    try:
        raise RuntimeError("Proxy failed to Connect to backend! Check `ray_client_server.err`")
    except RuntimeError:
        return traceback.format_exc()


def test_a_client_init_failure_names_the_server_side_cause():
    exc = ConnectionAbortedError(f"Initialization failure from server:\n{_server_traceback()}")
    assert _cause(exc) == ("Initialization failure from server: "
                           "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err`")


def test_a_one_line_error_stays_its_first_line():
    assert _cause(ConnectionError("Failed to connect to GCS at 10.0.0.1:6379\nmore detail")) == \
        "Failed to connect to GCS at 10.0.0.1:6379"
    assert _cause(TimeoutError()) == "TimeoutError"
    assert _cause(RuntimeError("nothing after the colon:")) == "nothing after the colon:"
