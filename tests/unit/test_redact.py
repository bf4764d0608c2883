"""The one redactor (harness.core.redact) and the places that must use it."""

from __future__ import annotations

from harness.backends.base import make_backend, parse_model_spec
from harness.core.metadata import collect
from harness.core.redact import MASK, redact_args, redact_argv

CANARY = "sk-canary-5f1e"


def test_credential_arguments_are_masked_by_name() -> None:
    args = {"api_key": CANARY, "token": CANARY, "client_secret": CANARY, "PASSWORD": CANARY, "dtype": "float32", "n_ctx": "2048"}
    assert redact_args(args) == {"api_key": MASK, "token": MASK, "client_secret": MASK, "PASSWORD": MASK,
                                 "dtype": "float32", "n_ctx": "2048"}


def test_command_lines_lose_key_value_pairs_and_the_api_key_flag() -> None:
    argv = ["run", "--model-args", f"dtype=float32,api_key={CANARY}", "--api-key", CANARY, f"--api-key={CANARY}",
            "--tag", "keep-me"]
    out = redact_argv(argv)
    assert CANARY not in " ".join(out)
    assert out == ["run", "--model-args", f"dtype=float32,api_key={MASK}", "--api-key", MASK, f"--api-key={MASK}",
                   "--tag", "keep-me"]


def test_backend_descriptions_and_run_metadata_are_redacted(tmp_path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"task_id": "t/0", "completion": "pass"}\n')
    backend = make_backend(parse_model_spec(f"replay:{answers}", f"secret_token={CANARY},label=x"))
    described = backend.describe()
    assert described["args"] == {"secret_token": MASK, "label": "x"}
    meta = collect(described, seed=1, argv=["run", "--model-args", f"secret_token={CANARY}"])
    assert CANARY not in repr(meta)
