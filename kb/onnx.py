"""A sentence-transformers model's transformer on ONNX Runtime, for the customer's query.

A customer's question is a dozen tokens. torch spends most of such a pass on per-operator
overhead, so ONNX Runtime runs the same network about twice as fast on one CPU thread (all-MiniLM-
L6-v2: ~15 -> ~7.5 ms; ``benchmarks/RESULTS.md``) and gives the same vectors (float32, the same
weights; checked at load). Only queries use it (:meth:`kb.encoder.SentenceEncoder._encode_alone`):
ingest's long batches keep torch, whose batched passes are already efficient.

The graph is exported once from the model's own weights (nothing is downloaded) into a cache folder
(``<kb.index_dir>/onnx``) under a name derived from the model's files and the library versions, so
a changed model or upgrade exports afresh. Any failure (``onnxruntime`` or ``onnx`` missing, a model
whose pipeline is not transformer -> mean or CLS pooling -> normalise, an export error, vectors that
differ from torch's) leaves the model on torch, with the reason logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Texts whose vectors must match torch's before the graph is used: short, long, one word.
PROBES = (
    "How do I reset my password?",
    "a",
    " ".join(["Customers sometimes write long messages that explain their whole situation"] * 12),
)
STALE_PART_SECONDS = 600  # an unfinished export this old belongs to a process that is gone
TOLERANCE = 1e-4  # largest difference allowed in any coordinate of a normalised vector


class OnnxQueries:
    """The transformer of a loaded ``SentenceTransformer`` as an ONNX Runtime session, with the
    model's own tokenizer and pooling; ``encode`` returns L2-normalised float32 rows."""

    def __init__(self, session: Any, model: Any, inputs: tuple[str, ...], pooling: str) -> None:
        self._session = session
        self._model = model  # its tokenizer applies the model's own max length and casing
        self._inputs = inputs
        self._pooling = pooling

    @classmethod
    def build(cls, model: Any, cache: Path, model_id: str) -> OnnxQueries | None:
        """The model on ONNX Runtime, or None (logged) when it cannot be had exactly."""
        try:
            pooling = _pooling(model)
            if pooling is None:
                log.info(
                    "onnx: %s keeps torch (a pipeline other than transformer, pooling, normalise)", model_id
                )
                return None
            import onnxruntime

            inputs = tuple(k for k in _tokenize(model, [PROBES[0]]) if k in _INPUT_NAMES)
            path = cache / f"{_slug(model_id)}-{_fingerprint(model, inputs)}.onnx"
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1  # one query, one thread (see SentenceEncoder._encode_alone)
            options.inter_op_num_threads = 1
            options.log_severity_level = 3

            def load() -> Any:
                return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

            session = None
            if path.exists():
                try:
                    session = load()
                except Exception as exc:  # a damaged file: export it again
                    log.warning("onnx: %s is unreadable (%s); exporting it again", path, exc)
                    path.unlink()
            if session is None:
                _export(model, inputs, path)
                session = load()
            made = cls(session, model, inputs, pooling)
            difference = made.difference_from_torch()
        except Exception as exc:
            log.warning("onnx: %s keeps torch: %s: %s", model_id, type(exc).__name__, exc)
            return None
        if difference > TOLERANCE:
            log.warning("onnx: %s keeps torch: vectors differ from torch's by %.2g", model_id, difference)
            return None
        log.info(
            "onnx: %s queries on ONNX Runtime (%s; vectors within %.1g of torch's)",
            model_id,
            path,
            difference,
        )
        return made

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        features = _tokenize(self._model, texts)
        feeds = {name: features[name].numpy().astype(np.int64) for name in self._inputs}
        (hidden,) = self._session.run(None, feeds)
        if self._pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.ascontiguousarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)

    def difference_from_torch(self) -> float:
        expected = self._model.encode(list(PROBES), normalize_embeddings=True, show_progress_bar=False)
        got = np.vstack([self.encode([text]) for text in PROBES])
        return float(np.abs(got - expected).max())


_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _tokenize(model: Any, texts: Sequence[str]) -> dict[str, Any]:
    """The model's own tokenisation (its max length, casing): ``preprocess`` since
    sentence-transformers 6, ``tokenize`` before."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return preprocess(list(texts))


def _pooling(model: Any) -> str | None:
    """ "mean" or "cls" when the pipeline is transformer -> that pooling (-> normalise), else None."""
    from sentence_transformers.models import Normalize, Pooling, Transformer

    modules = list(model)
    if (
        len(modules) not in (2, 3)
        or not isinstance(modules[0], Transformer)
        or not isinstance(modules[1], Pooling)
    ):
        return None
    if len(modules) == 3 and not isinstance(modules[2], Normalize):
        return None
    pooling = modules[1]
    if getattr(pooling, "include_prompt", True) is False:  # a prompt left out of the mean
        return None
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers >= 5; before: a method
    if not isinstance(mode, str):
        mode = pooling.get_pooling_mode_str()
    return mode if mode in ("mean", "cls") else None


def _slug(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[-60:]


def _fingerprint(model: Any, inputs: tuple[str, ...]) -> str:
    """Changes with the model's files, its max length and the libraries that make the graph."""
    import onnxruntime
    import torch

    parts = [torch.__version__, onnxruntime.__version__, str(model.max_seq_length), ",".join(inputs)]
    folder = Path(str(getattr(model[0].auto_model.config, "name_or_path", "") or "."))
    if folder.is_dir():
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                stat = file.stat()
                parts.append(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    else:
        parts.append(str(folder))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _export(model: Any, inputs: tuple[str, ...], path: Path) -> None:
    """Export the transformer (token ids -> last hidden state); written under a temporary name
    and renamed, so replicas starting together never load half a file."""
    import torch

    transformer = model[0].auto_model

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(inputs, args, strict=True))).last_hidden_state

    features = _tokenize(model, [PROBES[0], PROBES[2]])
    example = tuple(features[name] for name in inputs)
    axes = {name: {0: "batch", 1: "tokens"} for name in inputs}
    axes["hidden"] = {0: "batch", 1: "tokens"}
    path.parent.mkdir(parents=True, exist_ok=True)
    for left in path.parent.glob("*.onnx.part"):  # an export a killed process left half written
        with contextlib.suppress(OSError):
            if time.time() - left.stat().st_mtime > STALE_PART_SECONDS:
                left.unlink()
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".onnx.part")
    os.close(handle)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Hidden().eval(),
                example,
                temporary,
                input_names=list(inputs),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
