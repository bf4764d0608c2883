"""`harness recipe run`: check the whole recipe, make its checkpoints, then evaluate and report.

Everything a user can get wrong is found by `plan` before anything is written: the YAML, step
kinds and parameters (each step's own `check`), that every step's input is a format it takes,
the parent, the evaluation tasks, the fidelity corpus, and the disk space the steps need.

A step is keyed by its inputs' hashes (the parent artifact's content id, the step kind, its
validated parameters, the data fingerprint, the seed and the library versions). A step whose key
has a stored child is not redone, so `harness recipe run` after a kill -9 redoes only the step
that was cut off (its staging directory is removed; nothing under an artifact id is half-written).
Evaluation runs resume the same way (harness.run.evaluator), and an edge report already stored
for this recipe id is kept.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends.artifact import artifact_fingerprint
from harness.core.config import RayOptions
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.recipe import roots
from harness.recipe.measure import measured
from harness.recipe.spec import Recipe, load_recipe, recipe_id
from harness.steps.base import PRODUCES, Step, make_step
from harness.store import artifacts, lineage
from harness.store.artifacts import Artifact
from harness.store.db import Store

log = logging.getLogger("harness.recipe")

# Bytes a step writes, as a share of the parent's weights (the disk-space check; generous on purpose).
WRITE_SHARE = {"lora_sft": 0.1, "merge": 1.0, "export_gguf": 1.0, "quantize_gguf": 0.35, "quantize_torch": 0.5}


@dataclass(frozen=True)
class PlannedStep:
    name: str
    kind: str
    step: Step
    source: str  # the node it reads: "parent" or an earlier step's name
    params: dict
    data_fingerprint: str | None


@dataclass(frozen=True)
class Plan:
    path: Path
    recipe: Recipe
    recipe_id: str
    parent: roots.ParentSource
    steps: list[PlannedStep]


@dataclass
class RecipeResult:
    recipe_id: str
    nodes: dict[str, Artifact]  # "parent" and each step's name -> its checkpoint
    edges: list[tuple[str, str]]  # (parent id, child id) of every edge the recipe reports on
    made: list[str] = field(default_factory=list)  # steps run now
    reused: list[str] = field(default_factory=list)  # steps whose checkpoint was already stored
    reports: dict[tuple[str, str], dict] = field(default_factory=dict)

    @property
    def gate_passed(self) -> bool:
        return all(r.get("gate", {}).get("passed", True) for r in self.reports.values())


# The extra that installs each library a step imports when it runs or checks.
EXTRAS = {"peft": "recipes", "trl": "recipes", "torchao": "recipes", "datasets": "recipes", "llama_cpp": "gguf"}
IMPORT_NAMES = {"llama_cpp_python": "llama_cpp"}  # distribution -> module, where they differ


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def check_libraries(kind: str, step: Step) -> None:
    """Every library the step records is installed, found without importing it (a step's heavy
    imports happen only when it runs, after the checkpoints of earlier steps are written)."""
    for distribution in step.libraries:
        module = IMPORT_NAMES.get(distribution, distribution)
        if not _importable(module):
            raise UsageError(f"step {kind} needs the {module} package: pip install 'harness[{EXTRAS.get(module, 'recipes')}]'")


def missing_library(kind: str, error: ImportError) -> UsageError:
    """A step's library is not installed: one line naming the extra that brings it. Our own
    modules failing to import is a bug, and is raised as it is."""
    name = (error.name or "").split(".")[0]
    if not name or name == "harness":
        raise error
    extra = EXTRAS.get(name, "recipes")
    return UsageError(f"step {kind} needs the {name} package: pip install 'harness[{extra}]'")


def _step_of(kind: str) -> Step:
    try:
        return make_step(kind)
    except ImportError as error:
        raise missing_library(kind, error) from None


def plan(name_or_path: str, parent: str | None = None) -> Plan:
    """The checked recipe; UsageError for anything wrong with it, before anything is written."""
    path, recipe = load_recipe(name_or_path, parent)
    source = roots.locate(recipe.parent)
    model_dir = roots.checkpoint_dir(source)
    formats = {"parent": source.format}
    planned: list[PlannedStep] = []
    for index, spec in enumerate(recipe.steps):
        step = _step_of(spec.kind)
        check_libraries(spec.kind, step)
        input_name = recipe.input_of(index)
        if formats[input_name] not in step.accepts:
            raise UsageError(f"recipe {path}: step {spec.name} ({spec.kind}) takes {' or '.join(step.accepts)}, "
                             f"but its input {input_name} is {formats[input_name]}")
        try:
            params = step.check(spec.params, model_dir or source.path or Path("."))
        except ImportError as error:
            raise missing_library(spec.kind, error) from None
        planned.append(PlannedStep(spec.name, spec.kind, step, input_name, params, step.data_fingerprint(params)))
        formats[spec.name] = PRODUCES[spec.kind]
    _check_evaluation(recipe)
    _check_space(planned, _base_bytes(source, model_dir))
    return Plan(path, recipe, recipe_id(recipe), source, planned)


def _check_evaluation(recipe: Recipe) -> None:
    from harness import tasks as catalog

    for selection in recipe.evaluate.selections():
        catalog.expand([selection.name])  # unknown task -> UsageError naming it
    if recipe.fidelity is not None:
        from harness.tasks.corpora import corpus_names

        if recipe.fidelity.corpus not in corpus_names():
            raise UsageError(f"unknown fidelity corpus {recipe.fidelity.corpus!r}: expected one of {', '.join(corpus_names())}")


def _base_bytes(source: roots.ParentSource, model_dir: Path | None) -> int:
    """The size of the parent's weights: the float32 safetensors of an hf checkpoint, else the GGUF."""
    if model_dir is not None and source.format == "hf":
        return sum(p.stat().st_size for p in Path(model_dir).rglob("*.safetensors"))
    if source.path is not None and source.path.is_file():
        return source.path.stat().st_size
    return 0


def _check_space(steps: list[PlannedStep], base_bytes: int) -> None:
    needed = int(sum(WRITE_SHARE.get(s.kind, 1.0) for s in steps) * base_bytes)
    root = artifacts.artifacts_root()
    existing = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise UsageError(f"not enough disk space for the recipe's checkpoints: {needed / 1e6:.0f} MB needed, "
                         f"{free / 1e6:.0f} MB free under {root} (set HARNESS_ARTIFACTS_DIR elsewhere, or free space)")


def step_key(planned: PlannedStep, parent: Artifact, seed: int) -> str:
    return sha256_json({"kind": planned.kind, "params": planned.params, "parent": parent.artifact_id,
                        "data": planned.data_fingerprint, "seed": seed, "versions": planned.step.versions()})


def _run_step(store: Store, planned: PlannedStep, parent: Artifact, key: str, plan_: Plan) -> Artifact:
    store.release()  # readers (and `harness lineage`) may look while a step runs
    try:
        with artifacts.staging(planned.name) as out, measured() as cost:
            output = planned.step.run(parent, planned.params, plan_.recipe.seed, out)
            parameters, bits = output.parameters, output.bits_per_weight
            if parameters is None and output.format == "hf":  # a full checkpoint: counted from its headers
                parameters, bits = roots.safetensors_size(out)
            child = artifacts.commit(out, output.format, parameters=parameters, bits_per_weight=bits, metadata=output.metadata)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise UsageError(f"no space left on device while step {planned.name} wrote its checkpoint under "
                             f"{artifacts.artifacts_root()}; nothing of the step was kept") from None
        raise
    lineage.register_artifact(store, child, artifact_fingerprint(child))
    lineage.add_edge(store, lineage.Edge(
        child=child.artifact_id, parent=parent.artifact_id, relation=output.relation, step_key=key,
        recipe_id=plan_.recipe_id, step=planned.name, step_kind=planned.kind, params=planned.params,
        data_fingerprint=output.data_fingerprint or planned.data_fingerprint, seed=plan_.recipe.seed,
        versions=planned.step.versions(), wall_seconds=round(cost.wall_seconds, 3), peak_memory_bytes=cost.peak_rss_bytes))
    store.release()
    return child


def make_checkpoints(plan_: Plan, db_path: Path) -> RecipeResult:
    store = Store(db_path)
    try:
        parent = roots.import_parent(store, plan_.parent, artifact_fingerprint)
        root_edge = lineage.parent_edge(store, parent.artifact_id)
        edges = [(root_edge["parent"], parent.artifact_id)] if root_edge and root_edge["relation"] == "dequantized" else []
        result = RecipeResult(plan_.recipe_id, {"parent": parent}, edges)
        for planned in plan_.steps:
            source = result.nodes[planned.source]
            key = step_key(planned, source, plan_.recipe.seed)
            done = lineage.find_step(store, key)
            if done is not None:
                result.nodes[planned.name] = artifacts.load(done)
                result.reused.append(planned.name)
                log.info("step %s: reusing %s", planned.name, done[:12])
            else:
                log.info("step %s (%s) from %s", planned.name, planned.kind, planned.source)
                result.nodes[planned.name] = _run_step(store, planned, source, key, plan_)
                result.made.append(planned.name)
            result.edges.append((source.artifact_id, result.nodes[planned.name].artifact_id))
        return result
    finally:
        store.close()


def run_recipe(name_or_path: str, db_path: Path, parent: str | None = None, show_progress: bool = True,
               on_report: Any = None, ray: RayOptions | None = None) -> RecipeResult:
    """Check, make the checkpoints, evaluate every checkpoint (concurrently on Ray replicas with `ray`),
    and store one report per edge."""
    from harness.recipe.edges import report_edges

    checked = plan(name_or_path, parent)
    result = make_checkpoints(checked, db_path)
    report_edges(checked.recipe, result, db_path, show_progress=show_progress, on_report=on_report, ray=ray)
    return result
