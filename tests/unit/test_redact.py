"""The one redactor (harness.core.redact): secrets by construction, not by name."""

from __future__ import annotations

import pytest

from harness.backends.base import make_backend, parse_model_args, parse_model_spec
from harness.core.errors import UsageError
from harness.core.metadata import collect
from harness.core.redact import MASK, redact_args, redact_argv, split_userinfo, strip_userinfo

CANARY = "sk-canary-5f1e"


def test_only_harmless_argument_names_keep_their_values() -> None:
    args = {"api_key": CANARY, "label": CANARY, "body.authorization": CANARY, "body.temperature": "0.5",
            "x_custom": CANARY, "dtype": "float32", "n_ctx": "2048", "concurrency": "4", "api_key_env": "MY_KEY"}
    assert redact_args(args) == {"api_key": MASK, "label": MASK, "body.authorization": MASK, "body.temperature": MASK,
                                 "x_custom": MASK, "dtype": "float32", "n_ctx": "2048", "concurrency": "4",
                                 "api_key_env": "MY_KEY"}


@pytest.mark.parametrize("url, shown, auth", [
    ("http://user:tok%40en@host:8000/v1", "http://***@host:8000/v1", ("user", "tok@en")),
    ("https://:onlypass@host/v1", "https://***@host/v1", ("", "onlypass")),
    ("http://host:8000/v1", "http://host:8000/v1", None),
    ("http://[::1]:8000/v1", "http://[::1]:8000/v1", None),
])
def test_url_credentials_are_split_off_for_the_request_and_masked_for_display(url, shown, auth) -> None:
    clean, credentials = split_userinfo(url)
    assert credentials == auth and "@" not in clean.replace("[::1]", "")
    assert strip_userinfo(f"openai:m@{url}") == f"openai:m@{shown}"


def test_command_lines_keep_only_harmless_values() -> None:
    argv = ["run", "--model", f"openai:m@http://u:{CANARY}@127.0.0.1:9/v1", "--model-args",
            f"dtype=float32,body.authorization={CANARY},api_key_env=K", f"--judge-args=temperature=0,body.x={CANARY}",
            "--api-key", CANARY, f"--api-key={CANARY}", f"--endpoint=http://u:{CANARY}@h/v1", "--tag", "keep-me"]
    out = redact_argv(argv)
    assert CANARY not in " ".join(out)
    assert out == ["run", "--model", "openai:m@http://***@127.0.0.1:9/v1", "--model-args",
                   f"dtype=float32,body.authorization={MASK},api_key_env=K", f"--judge-args=temperature=0,body.x={MASK}",
                   "--api-key", MASK, f"--api-key={MASK}", "--endpoint=http://***@h/v1", "--tag", "keep-me"]


def test_backend_descriptions_specs_and_run_metadata_are_redacted(tmp_path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"task_id": "t/0", "completion": "pass"}\n')
    backend = make_backend(parse_model_spec(f"replay:{answers}", f"secret_token={CANARY},dtype=float32"))
    described = backend.describe()
    assert described["args"] == {"secret_token": MASK, "dtype": "float32"}
    meta = collect(described, seed=1, argv=["run", "--model-args", f"secret_token={CANARY}"])
    assert CANARY not in repr(meta)
    assert parse_model_spec(f"openai:m@http://u:{CANARY}@h:1/v1").text == "openai:m@http://***@h:1/v1"


def test_a_repeated_model_arg_is_an_error_not_last_wins() -> None:
    with pytest.raises(UsageError, match="dtype twice"):
        parse_model_args("dtype=float32,n_ctx=8,dtype=bfloat16")
    with pytest.raises(UsageError) as error:
        parse_model_args(f"body.authorization={CANARY},broken")
    assert CANARY not in str(error.value)
