"""Bad recipes are refused before anything is stored: one line on stderr, exit 2, no database
rows, no artifact directory (complete or not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli.main import main
from tests.conftest import require_or_skip

GOOD = {
    "parent": "hf:smollm2-135m-instruct",
    "steps": [{"name": "f32", "kind": "export_gguf"}, {"name": "q8", "kind": "quantize_gguf", "params": {"type": "Q8_0"}}],
    "evaluate": {"data": "fixture", "tasks": [{"name": "hellaswag", "limit": 2}]},
    "fidelity": None,
    "speed": None,
}


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    return tmp_path


def _write(tmp_path: Path, recipe: dict | str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return path


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture, recipe: dict | str, *extra: str) -> str:
    db = tmp_path / "results.duckdb"
    code = main(["recipe", "run", str(_write(tmp_path, recipe)), "--db", str(db), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("harness: error: ")
    assert not db.exists(), "nothing may be stored for a refused recipe"
    root = tmp_path / "artifacts"
    assert not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")], "no artifact may be left"
    return err


def _with_step(**changes: object) -> dict:
    recipe = yaml.safe_load(yaml.safe_dump(GOOD))
    recipe["steps"][1].update(changes)
    return recipe


def test_malformed_yaml(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    err = _refused(isolated, capsys, "parent: hf:x\nsteps: [ {name: a\n")
    assert "malformed recipe" in err and "line" in err


def test_unknown_top_level_key(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    assert "stepz" in _refused(isolated, capsys, {**GOOD, "stepz": []})


def test_unknown_step_kind(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    err = _refused(isolated, capsys, _with_step(kind="distill"))
    assert "unknown step kind 'distill'" in err and "quantize_gguf" in err


def test_unknown_quant_type(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    err = _refused(isolated, capsys, _with_step(params={"type": "Q9_9"}))
    assert "Q9_9" in err and "Q4_0" in err


def test_quant_type_the_model_cannot_take(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    """IQ2_XXS needs an importance matrix, which a recipe does not provide."""
    assert "imatrix" in _refused(isolated, capsys, _with_step(params={"type": "IQ2_XXS"}))


def test_step_input_of_the_wrong_format(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = _with_step(kind="merge", params={})
    err = _refused(isolated, capsys, recipe)
    assert "step q8 (merge) takes hf-adapter" in err and "gguf" in err


def test_from_names_no_earlier_step(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    assert "names no earlier step" in _refused(isolated, capsys, _with_step(**{"from": "nowhere"}))


def test_parent_that_does_not_exist(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    err = _refused(isolated, capsys, GOOD, "--from", "hf:/no/such/checkpoint")
    assert "/no/such/checkpoint" in err


def test_artifact_parent_that_does_not_exist(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    assert "no artifact abcdef12" in _refused(isolated, capsys, {**GOOD, "parent": "artifact:abcdef12"})


def test_lora_target_module_the_model_lacks(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = {**GOOD, "steps": [{"name": "sft", "kind": "lora_sft",
                                 "params": {"data": "task:gsm8k", "limit": 4, "steps": 1, "target_modules": ["q_projx"]}}]}
    err = _refused(isolated, capsys, recipe)
    assert "q_projx" in err and "q_proj" in err


def test_dataset_that_does_not_exist(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = {**GOOD, "steps": [{"name": "sft", "kind": "lora_sft", "params": {"data": str(isolated / "missing.jsonl"), "steps": 1}}]}
    assert "missing.jsonl" in _refused(isolated, capsys, recipe)


def test_unknown_evaluation_task(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    assert "hellaswagg" in _refused(isolated, capsys, {**GOOD, "evaluate": {"tasks": ["hellaswagg"]}})


def test_unknown_fidelity_corpus(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    assert "unknown fidelity corpus" in _refused(isolated, capsys, {**GOOD, "fidelity": {"corpus": "nope"}})


MOUNT_TINY = "mount -t tmpfs -o size=2m tmpfs \"$0\" && exec \"$@\""


def _tiny_filesystem_runner() -> list[str] | None:
    """A command prefix that runs a command with a 2 MB tmpfs mounted at its first argument: as root
    (CI runs .ci/run as root) in a private mount namespace, else in a user namespace; None if neither works."""
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "sh", "-c", MOUNT_TINY, "/tmp", "true"], capture_output=True)
        if probe.returncode == 0:
            return [*prefix, "sh", "-c", MOUNT_TINY]
    return None


def test_no_disk_space(isolated: Path) -> None:
    """The checkpoints cannot fit: refused before any step, by the space check."""
    import sys

    from tests.conftest import REPO

    runner = _tiny_filesystem_runner()
    require_or_skip(runner is not None, "mounting a tmpfs in a mount namespace (unshare)", "run the tests as root, as .ci/run does")
    assert runner is not None
    artifacts_dir = isolated / "small"
    artifacts_dir.mkdir()
    db = isolated / "results.duckdb"
    env = {**os.environ, "HARNESS_ARTIFACTS_DIR": str(artifacts_dir)}
    result = subprocess.run([*runner, str(artifacts_dir), "sh", "-c",
                             f'df -k "{artifacts_dir}" | tail -1 > "{isolated}/df.txt"; exec "$@"', "sh",
                             sys.executable, "-m", "harness", "recipe", "run", str(_write(isolated, GOOD)), "--db", str(db),
                             "--no-progress"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert "tmpfs" in (isolated / "df.txt").read_text(), "the harness ran on the small filesystem"
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough disk space" in lines[0] and "MB free" in lines[0], result.stderr
    assert not db.exists()
    assert list(artifacts_dir.iterdir()) == []  # nothing was written beside the tmpfs either


@pytest.mark.parametrize("package, kind, params, extra", [
    ("peft", "lora_sft", {"data": "task:gsm8k", "steps": 1}, "recipes"),
    ("llama_cpp", "quantize_gguf", {"type": "Q8_0"}, "gguf"),
])
def test_a_missing_library_names_its_extra(isolated: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                           package: str, kind: str, params: dict, extra: str) -> None:
    """A core-only install (`make run`) has neither peft nor llama.cpp: the recipe says which extra to install."""
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails as if it were not installed
    for name in [m for m in sys.modules if m.startswith("harness.steps.") and m != "harness.steps.base"]:
        monkeypatch.delitem(sys.modules, name)
    steps = [{"name": "f32", "kind": "export_gguf"}] if kind == "quantize_gguf" else []
    recipe = {**GOOD, "steps": [*steps, {"name": "s", "kind": kind, "params": params}]}
    err = _refused(isolated, capsys, recipe)
    assert f"needs the {package} package: pip install 'harness[{extra}]'" in err
