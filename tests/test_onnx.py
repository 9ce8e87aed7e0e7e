"""Queries on ONNX Runtime: the same vectors as torch, exported once, torch whenever it cannot be."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kb.encoder import SentenceEncoder
from kb.onnx import OnnxQueries

QUERIES = [
    "How do I reset my password?",
    "can I cancel my subscription after the trial, and will I get a refund for the rest of the month",
    "hi",
    "Jak zruším své předplatné?",
    "最大文件大小是多少？",
]


def test_queries_get_torchs_vectors(encoder: SentenceEncoder) -> None:
    assert encoder.onnx_queries() is not None, "the bundled model should run its queries on ONNX Runtime"
    for query in QUERIES:
        on_onnx = encoder.encode([query], kind="query")  # one text: the query path
        with_torch = encoder._encode_with(encoder._model, [query])
        assert on_onnx.shape == (1, encoder.dim) and on_onnx.dtype == np.float32
        assert np.abs(on_onnx - with_torch).max() < 1e-5, query
        assert abs(float(np.linalg.norm(on_onnx)) - 1.0) < 1e-5


def test_exported_once_then_read_and_a_damaged_file_is_exported_again(
    encoder: SentenceEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = encoder._model
    first = OnnxQueries.build(model, tmp_path, "m")
    assert first is not None
    (graph,) = tmp_path.glob("*.onnx")
    written = graph.stat().st_mtime_ns
    assert OnnxQueries.build(model, tmp_path, "m") is not None
    assert graph.stat().st_mtime_ns == written, "a second start must read the export, not redo it"
    assert list(tmp_path.glob("*.part")) == []

    fresh, stale = tmp_path / "a.onnx.part", tmp_path / "b.onnx.part"  # exports in progress / killed
    fresh.write_bytes(b"half")
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    graph.write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        again = OnnxQueries.build(model, tmp_path, "m")
    assert again is not None and "unreadable" in caplog.text
    assert fresh.exists() and not stale.exists(), "only an old unfinished export is removed"
    assert np.abs(again.encode(["hi"]) - first.encode(["hi"])).max() < 1e-6


def test_without_onnxruntime_the_model_stays_on_torch(
    encoder: SentenceEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        assert OnnxQueries.build(encoder._model, tmp_path, "m") is None
    assert "keeps torch: ModuleNotFoundError" in caplog.text


def test_a_pipeline_it_cannot_reproduce_stays_on_torch(encoder: SentenceEncoder, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    transformer = encoder._model[0]
    pooling = Pooling(encoder.dim, pooling_mode="max")
    max_pooled = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    assert OnnxQueries.build(max_pooled, tmp_path, "max") is None
    assert list(tmp_path.iterdir()) == [], "nothing is exported for a model that stays on torch"
