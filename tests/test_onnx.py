"""Queries on ONNX Runtime: the same vectors as torch, exported once, torch whenever it cannot be."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kb.encoder import SentenceEncoder
from kb.files import replace_atomically
from kb.onnx import (
    INT8_PLANS,
    INT8_SUFFIX,
    OnnxQueries,
    _kept_float,
    _load_session,
    _open,
    _smooth,
    pick_int8,
)

ROOT = Path(__file__).resolve().parents[1]
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
    assert list(tmp_path.glob(".*.part-*")) == []

    # Exports in progress / left by a killed process:
    fresh, stale = tmp_path / f".{graph.name}.part-a", tmp_path / f".{graph.name}.part-b"
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
    # The shared encoder's own export first: hiding onnxruntime while it runs on its thread
    # left every later test of the worker on torch (seen when this test came first).
    assert encoder.onnx_queries() is not None
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


def test_a_later_start_runs_queries_without_loading_torch(encoder: SentenceEncoder, tmp_path: Path) -> None:
    """The first start exported the graph and wrote its manifest; a new process then answers
    queries and embeds passages with the same vectors without ever importing torch."""
    assert encoder.onnx_queries() is not None  # the first start's export done (alone, it may not be yet)
    cache = encoder.onnx_cache
    assert list(cache.glob("*.quick.json")), "the first start writes the manifest beside the graph"
    # more than one pass (kb.onnx.CHUNK) of passages of different lengths
    passages = [f"Passage number {n} about refunds and invoices." + " More." * n for n in range(40)]
    script = f"""
import json, sys
from pathlib import Path
from kb.encoder import SentenceEncoder
encoder = SentenceEncoder(onnx_cache=Path({str(cache)!r}))
queries = [encoder.encode([text], kind="query")[0].tolist() for text in {QUERIES[:2]!r}]
batch = encoder.encode({QUERIES * 4!r}, kind="query").tolist()  # batched customers' questions
before = "torch" in sys.modules or "sentence_transformers" in sys.modules
passages = encoder.encode({passages!r}, kind="passage").tolist()
print(json.dumps({{"torch_before": before, "torch_after": "torch" in sys.modules, "dim": encoder.dim,
                  "queries": queries, "batch": batch, "passages": passages}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["torch_before"] is False, "queries must not need torch after the first start"
    assert out["torch_after"] is False, "passages run on ONNX Runtime too"
    assert out["dim"] == encoder.dim
    with_torch = encoder._encode_with(encoder._model, QUERIES[:2])
    assert np.abs(np.asarray(out["queries"], dtype=np.float32) - with_torch).max() < 1e-5
    batch_with_torch = encoder._encode_with(encoder._model, QUERIES * 4)
    assert np.abs(np.asarray(out["batch"], dtype=np.float32) - batch_with_torch).max() < 1e-5
    with_torch = encoder._encode_with(encoder._model, passages)
    assert np.abs(np.asarray(out["passages"], dtype=np.float32) - with_torch).max() < 1e-5


def test_queries_go_on_while_passages_are_embedded(encoder: SentenceEncoder) -> None:
    """Passages (a document, the backlog) run on ONNX Runtime outside the encoder's lock: a
    customer's query meanwhile is answered instead of waiting for the whole run of passages."""
    assert encoder.onnx_queries() is not None  # the first start's export, and its manifest
    quick = SentenceEncoder(onnx_cache=encoder.onnx_cache)
    onnx = quick.onnx_queries()
    assert onnx is not None and quick._torch_model is None, "a start without torch"
    passing, release = threading.Event(), threading.Event()
    real_run = onnx._run

    def held_run(feeds, session):
        if session is onnx._session and len(feeds["input_ids"]) > 1:  # a pass of passages
            passing.set()
            release.wait(60)
        return real_run(feeds, session)

    onnx._run = held_run  # type: ignore[method-assign]
    passages: list[np.ndarray] = []
    texts = [f"Passage {n} about invoices." for n in range(40)]  # a document: several passes
    embedder = threading.Thread(target=lambda: passages.append(quick.encode(texts, kind="passage")))
    embedder.start()
    try:
        assert passing.wait(30)
        asked: list[np.ndarray] = []
        asker = threading.Thread(target=lambda: asked.append(quick.encode([QUERIES[0]], kind="query")))
        asker.start()
        asker.join(10)
        assert not asker.is_alive(), "the query waited for the passages"
        assert asked[0].shape == (1, encoder.dim)
    finally:
        release.set()
        embedder.join(120)
    assert len(passages) == 1 and passages[0].shape == (len(texts), encoder.dim)
    assert np.abs(passages[0] - encoder._encode_with(encoder._model, texts)).max() < 1e-5


def test_a_manifest_that_no_longer_gives_torchs_vectors_sends_the_start_to_torch(
    encoder: SentenceEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    location = Path(encoder._location)
    assert OnnxQueries.quick(location, tmp_path, encoder.model_id) is None  # no manifest: silent
    for file in encoder.onnx_cache.iterdir():
        shutil.copy(file, tmp_path / file.name)
    assert OnnxQueries.quick(location, tmp_path, encoder.model_id) is not None
    (manifest,) = tmp_path.glob("*.quick.json")
    raw = json.loads(manifest.read_text())
    raw["probes"][3][0] += 0.01  # as if the tokenizer had changed under the model
    manifest.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        assert OnnxQueries.quick(location, tmp_path, encoder.model_id) is None
    assert "vectors differ from torch's" in caplog.text
    manifest.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        assert OnnxQueries.quick(location, tmp_path, encoder.model_id) is None
    assert "no start without torch: JSONDecodeError" in caplog.text


def test_int8_queries_keep_the_ranking_and_passages_stay_float32(
    encoder: SentenceEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """kb.int8_queries: queries run on an int8 copy of the graph made once beside it, their
    vectors close to torch's (not equal: it is really the copy) and ranking FAQ entries as
    torch's do; passages, the index's vectors, stay exactly torch's."""
    model = encoder._model
    made = OnnxQueries.build(model, tmp_path, "m", int8=True)
    assert made is not None and made.int8
    (copy,) = tmp_path.glob(f"*{INT8_SUFFIX}")
    questions = [
        "How do I reset my password?",
        "Can I get a refund for my order?",
        "Do you ship to Canada?",
        "How do I cancel my subscription?",
        "Where can I download my invoice?",
        "Is my payment information stored securely?",
    ]
    asked = [
        "forgot my password, how do I change it",
        "I want my money back for the order",
        "do you deliver to canada",
        "stop my subscription please",
        "where is the invoice for my purchase",
        "do you keep my card details safe",
    ]
    entries = encoder._encode_with(model, questions)
    on_int8 = made.encode(asked, query=True)
    with_torch = encoder._encode_with(model, asked)
    cosines = (on_int8 * with_torch).sum(axis=1)
    assert cosines.min() > 0.98 and np.abs(on_int8 - with_torch).max() > 1e-4, cosines
    assert ((on_int8 @ entries.T).argmax(axis=1) == (with_torch @ entries.T).argmax(axis=1)).all()
    assert ((on_int8 @ entries.T).argmax(axis=1) == np.arange(len(asked))).all()
    assert np.abs(made.encode(asked) - with_torch).max() < 1e-5, "passages must stay float32"
    # A question's vector does not depend on the questions batched with it (kb.batching).
    assert np.abs(made.encode(asked[:1], query=True) - on_int8[:1]).max() < 1e-6
    assert np.abs(made.encode(asked * 6, workers=2, query=True) - np.vstack([on_int8] * 6)).max() < 1e-6

    written = copy.stat().st_mtime_ns
    again = OnnxQueries.build(model, tmp_path, "m", int8=True)
    assert again is not None and again.int8 and copy.stat().st_mtime_ns == written, "quantized once"
    quick = OnnxQueries.quick(Path(encoder._location), tmp_path, "m", int8=True)
    assert quick is not None and quick[0].int8, "a start without torch uses the copy too"
    assert np.abs(quick[0].encode(asked, query=True) - on_int8).max() < 1e-5

    copy.write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        mended = OnnxQueries.build(model, tmp_path, "m", int8=True)
    assert mended is not None and mended.int8 and "quantizing it again" in caplog.text


def test_an_int8_copy_that_strays_from_torch_is_not_used(
    encoder: SentenceEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("kb.onnx.INT8_MIN_COSINE", 0.99999)  # stricter than int8 can be
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        made = OnnxQueries.build(encoder._model, tmp_path, "m", int8=True)
    assert made is not None and not made.int8
    assert "queries stay on float32: int8 vectors reach only cosine" in caplog.text
    with_torch = encoder._encode_with(encoder._model, QUERIES)
    assert np.abs(made.encode(QUERIES, query=True) - with_torch).max() < 1e-5
    # Each plan was tried (every MatMul; every MatMul after smoothing; the later feed-forward
    # outputs kept float32; all of them), refused, deleted and noted, so the next start
    # quantizes nothing again.
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.glob("*.refused")) == [
        "int8e-ffn.onnx.refused",
        "int8e-late.onnx.refused",
        "int8e-smooth.onnx.refused",
        "int8e.onnx.refused",
    ]
    assert not list(tmp_path.glob("*.int8*.onnx"))
    again = OnnxQueries.build(encoder._model, tmp_path, "m", int8=True)
    assert again is not None and not again.int8 and not list(tmp_path.glob("*.int8*.onnx"))


def test_the_int8_plans_keep_the_later_feed_forward_outputs_float32(
    encoder: SentenceEncoder, tmp_path: Path
) -> None:
    made = OnnxQueries.build(encoder._model, tmp_path, "m")
    assert made is not None
    (graph,) = (p for p in tmp_path.glob("*.onnx") if ".int8" not in p.name)
    late, every = _kept_float(graph, "late"), _kept_float(graph, "ffn-out")
    assert _kept_float(graph, "all") == []
    assert len(every) == 6 and all("/output/dense/MatMul" in n and "attention" not in n for n in every)
    assert sorted(late) == sorted(n for n in every if any(f"layer.{i}/" in n for i in (3, 4, 5)))


def test_smoothing_keeps_the_function_and_its_copy_is_taken_when_plain_int8_is_refused(
    encoder: SentenceEncoder, tmp_path: Path
) -> None:
    """The "smooth" plan: each constant-weight MatMul's input divided per channel by a scale
    measured on the probes, its weights multiplied by it (the float32 graph gives the same
    vectors), then every MatMul quantized. Taken when plain int8 is refused; a later plan's copy
    left by an earlier version goes."""
    import onnx
    import onnxruntime

    made = OnnxQueries.build(encoder._model, tmp_path, "m")
    assert made is not None
    (graph,) = (p for p in tmp_path.glob("*.onnx") if ".int8" not in p.name)
    feeds = [made._feeds([text]) for text in QUERIES]
    plain = np.vstack([made._run(one, made._session) for one in feeds])
    smoothed = tmp_path / "smoothed.onnx"
    _smooth(graph, smoothed, lambda session: np.vstack([made._run(one, session) for one in feeds]))
    nodes = onnx.load(str(smoothed), load_external_data=False).graph.node
    matmuls = [n for n in nodes if n.op_type == "MatMul" and "/smoothed" in n.input[0]]
    assert len(matmuls) == 6 * 6, "q, k, v, attention output, two feed-forward per layer"
    assert len([n for n in nodes if n.name.endswith("/Smooth")]) == 6 * 4, "q, k, v share one input"
    again = np.vstack([made._run(one, _load_session(onnxruntime, smoothed)) for one in feeds])
    assert np.abs(again - plain).max() < 1e-4

    base = graph.name.removesuffix(".onnx")
    (tmp_path / f"{base}{INT8_SUFFIX}.refused").write_text("0.8600")
    stale = tmp_path / f"{base}{INT8_PLANS['late']}"
    stale.write_bytes(b"an earlier version's choice")
    chosen = OnnxQueries.build(encoder._model, tmp_path, "m", int8=True)
    assert chosen is not None and chosen.int8
    assert (tmp_path / f"{base}{INT8_PLANS['smooth']}").exists() and not stale.exists()
    on_int8 = chosen.encode(QUERIES, query=True)
    assert (on_int8 * plain).sum(axis=1).min() > 0.98 and np.abs(on_int8 - plain).max() > 1e-4


def test_an_accepted_copy_is_taken_at_the_next_start_without_the_probes(
    encoder: SentenceEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cosine a start measured for an int8 copy is noted beside it; the next start takes the
    copy on that note, without running the probes through it, unless the copy, the probe
    vectors or ONNX Runtime changed since."""
    import onnxruntime

    made = OnnxQueries.build(encoder._model, tmp_path, "m", int8=True)
    assert made is not None and made.int8
    (graph,) = (p for p in tmp_path.glob("*.onnx") if ".int8" not in p.name)
    copy = tmp_path / (graph.name.removesuffix(".onnx") + INT8_SUFFIX)
    assert (tmp_path / f"{copy.name}.accepted").is_file()
    feeds = [made._feeds([text]) for text in QUERIES]
    expected = np.vstack([made._run(one, made._session) for one in feeds])
    passes: list[object] = []

    def vectors(session: object) -> np.ndarray:
        passes.append(session)
        return np.vstack([made._run(one, session) for one in feeds])

    first = pick_int8(graph, vectors, expected, "m")  # other probes than the build's: measured
    assert first is not None and len(passes) == 1
    second = pick_int8(graph, vectors, expected, "m")
    assert second is not None and len(passes) == 1, "taken on the note, no probe pass"
    assert (vectors(second) * expected).sum(axis=1).min() > 0.98
    passes.clear()

    written = copy.stat().st_mtime_ns
    os.utime(copy, ns=(written, written + 1_000_000))  # the copy written again
    assert pick_int8(graph, vectors, expected, "m") is not None and len(passes) == 1
    nudged = expected + 1e-3
    nudged /= np.linalg.norm(nudged, axis=1, keepdims=True)  # the float32 graph's vectors changed
    assert pick_int8(graph, vectors, nudged, "m") is not None and len(passes) == 2
    (tmp_path / f"{copy.name}.accepted").write_text("{not json")  # a damaged note: measured
    assert pick_int8(graph, vectors, nudged, "m") is not None and len(passes) == 3
    assert pick_int8(graph, vectors, nudged, "m") is not None and len(passes) == 3
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.0")  # another ONNX Runtime: measured
    assert pick_int8(graph, vectors, nudged, "m") is not None and len(passes) == 4
    assert pick_int8(graph, vectors, nudged, "m") is not None and len(passes) == 4


def test_a_plan_that_fails_gives_way_to_the_next(
    encoder: SentenceEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Smoothing a graph it cannot read fails that plan alone: the next plan's copy is used, and
    nothing notes the failure as a refusal (a start tries it again)."""
    made = OnnxQueries.build(encoder._model, tmp_path, "m")
    assert made is not None
    (graph,) = (p for p in tmp_path.glob("*.onnx") if ".int8" not in p.name)
    base = graph.name.removesuffix(".onnx")
    (tmp_path / f"{base}{INT8_SUFFIX}.refused").write_text("0.8600")

    def unreadable(*_: object) -> None:
        raise ValueError("a graph the smoothing cannot read")

    monkeypatch.setattr("kb.onnx._smooth", unreadable)
    with caplog.at_level(logging.WARNING, logger="kb.onnx"):
        chosen = OnnxQueries.build(encoder._model, tmp_path, "m", int8=True)
    assert chosen is not None and chosen.int8
    assert (
        "int8e-smooth.onnx failed (ValueError: a graph the smoothing cannot read); next plan" in caplog.text
    )
    assert (tmp_path / f"{base}{INT8_PLANS['late']}").exists()
    left = [p.name for p in tmp_path.glob("*smooth*") if not p.name.endswith(".lock")]  # a lock is no note
    assert not left, "no copy, no note: the next start tries it again"


def test_two_models_exporting_at_once_both_get_their_graphs(encoder: SentenceEncoder, tmp_path: Path) -> None:
    """A first start exports the KB's model and the re-ranker's on two threads; torch's exporter
    keeps its state in globals, so one export at a time (else: "in_onnx_export must be False")."""
    with ThreadPoolExecutor(2) as pool:
        made = list(
            pool.map(
                lambda folder: OnnxQueries.build(encoder._model, folder, "m"),
                [tmp_path / "a", tmp_path / "b"],
            )
        )
    assert all(m is not None for m in made)
    for m in made:
        assert np.abs(m.encode(QUERIES) - encoder._encode_with(encoder._model, QUERIES)).max() < 1e-5


def test_starts_finding_a_graph_missing_together_make_it_once(
    encoder: SentenceEncoder, tmp_path: Path
) -> None:
    """Replicas (or test workers) starting together on one folder: the first makes the graph,
    the others wait on its lock file and then load what it made. Threads stand for processes
    here: each takes the lock through a file handle of its own, as a process does."""
    import onnxruntime

    assert encoder.onnx_queries() is not None
    (source,) = (p for p in encoder.onnx_cache.glob("*.onnx") if ".int8" not in p.name)
    target = tmp_path / "shared" / source.name
    made: list[str] = []
    started = threading.Barrier(3)

    def make() -> None:
        made.append(threading.current_thread().name)
        time.sleep(0.5)  # an export takes a while: the others arrive meanwhile
        replace_atomically(target, lambda temporary: shutil.copyfile(source, temporary))

    def start() -> object:
        started.wait(10)
        return _open(onnxruntime, target, make, "exporting")

    with ThreadPoolExecutor(3) as pool:
        sessions = list(pool.map(lambda _: start(), range(3)))
    assert len(made) == 1, made
    assert all(s is not None for s in sessions)
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{target.name}.lock", target.name]
