"""The vector index facade: build, search, add/remove, persistence and model checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kb.errors import IndexMismatchError, IndexMissingError
from kb.index import FORMAT, IndexOptions, Row, VectorIndex, read_meta


def unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(ids: range) -> list[Row]:
    return [Row(i, i * 10, i * 100, "en", "question") for i in ids]


def test_search_finds_the_nearest_and_reports_cosine() -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng, 20)
    index = VectorIndex.build(model_id="m", dim=8, vectors=vectors, rows=rows(range(1, 21)), revision=3)
    results = index.search_batch(vectors[[4, 9]], k=3)
    assert [r[0][0].embedding_id for r in results] == [5, 10]
    assert results[0][0][1] == pytest.approx(1.0, abs=1e-5)
    assert results[0][0][1] >= results[0][1][1] >= results[0][2][1]


def test_add_and_remove_by_embedding_id() -> None:
    rng = np.random.default_rng(2)
    vectors = unit(rng, 5)
    index = VectorIndex.build(model_id="m", dim=8, vectors=vectors[:3], rows=rows(range(1, 4)), revision=1)
    index.add(vectors[3:], rows(range(4, 6)))
    assert len(index) == 5
    index.remove([2, 4])
    found = {r.embedding_id for r, _ in index.search_batch(vectors[[1]], k=5)[0]}
    assert found == {1, 3, 5}


def test_empty_index_returns_no_hits() -> None:
    index = VectorIndex(model_id="m", dim=8)
    assert index.search_batch(np.zeros((2, 8), dtype=np.float32), k=5) == [[], []]


def test_save_load_round_trip_and_atomic_swap(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng, 10)
    first = VectorIndex.build(model_id="m", dim=8, vectors=vectors, rows=rows(range(1, 11)), revision=7)
    first.save(tmp_path / "index")
    loaded = VectorIndex.load(tmp_path / "index", model_id="m", dim=8)
    assert loaded.revision == 7 and len(loaded) == 10
    assert loaded.row(3) == first.row(3) == Row(3, 30, 300, "en", "question")
    assert loaded.search_batch(vectors[[2]], k=1)[0][0][0].embedding_id == 3

    second = VectorIndex.build(model_id="m", dim=8, vectors=vectors[:4], rows=rows(range(1, 5)), revision=8)
    second.save(tmp_path / "index")
    meta = read_meta(tmp_path / "index")
    assert meta is not None and meta.revision == 8 and meta.count == 4
    generations = [p for p in (tmp_path / "index").iterdir() if p.name.startswith("gen-")]
    assert len(generations) == 2, "the generation just replaced stays for its readers (kb.files)"


def test_model_or_dimension_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    VectorIndex.build(
        model_id="model-a",
        dim=8,
        vectors=unit(np.random.default_rng(4), 2),
        rows=rows(range(1, 3)),
        revision=1,
    ).save(tmp_path / "index")
    with pytest.raises(IndexMismatchError, match="helpdesk kb rebuild") as caught:
        VectorIndex.load(tmp_path / "index", model_id="model-b", dim=8)
    assert "model-a" in str(caught.value) and "model-b" in str(caught.value)
    with pytest.raises(IndexMismatchError):
        VectorIndex.load(tmp_path / "index", model_id="model-a", dim=16)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError, match="helpdesk kb rebuild"):
        VectorIndex.load(tmp_path / "nothing", model_id="m", dim=8)


def clustered(rng: np.random.Generator, n: int, dim: int = 32, centres: int = 50) -> np.ndarray:
    """Near-duplicates around a few centres, like paraphrased FAQ questions (hard for a graph)."""
    middle = unit(rng, centres, dim)
    v = middle[rng.integers(0, centres, n)] + 0.15 * unit(rng, n, dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_hnsw_above_the_threshold_finds_what_flat_finds(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vectors = clustered(rng, 3000)
    queries = vectors[rng.integers(0, 3000, 40)] + 0.05 * unit(rng, 40, 32)  # paraphrases of entries
    flat = VectorIndex.build(model_id="m", dim=32, vectors=vectors, rows=rows(range(1, 3001)), revision=1)
    options = IndexOptions(hnsw_above=2000)
    hnsw = VectorIndex.build(
        model_id="m", dim=32, vectors=vectors, rows=rows(range(1, 3001)), revision=1, options=options
    )
    assert (flat.kind, hnsw.kind) == ("flat", "hnsw")
    exact, approximate = flat.search_batch(queries, k=10), hnsw.search_batch(queries, k=10)
    assert [r[0][0] for r in approximate] == [r[0][0] for r in exact]
    overlap = [
        len({row for row, _ in a} & {row for row, _ in e}) for a, e in zip(approximate, exact, strict=True)
    ]
    assert sum(overlap) >= 0.98 * 10 * len(queries)

    hnsw.save(tmp_path / "index")
    meta = read_meta(tmp_path / "index")
    assert meta is not None and meta.kind == "hnsw" and meta.count == 3000
    loaded = VectorIndex.load(tmp_path / "index", model_id="m", dim=32, options=options)
    assert loaded.kind == "hnsw"
    assert [r[0][0] for r in loaded.search_batch(queries, k=10)] == [r[0][0] for r in exact]


def test_adding_past_the_threshold_switches_to_hnsw_and_removing_below_back_to_flat() -> None:
    rng = np.random.default_rng(6)
    vectors = unit(rng, 30)
    index = VectorIndex.build(
        model_id="m",
        dim=8,
        vectors=vectors[:20],
        rows=rows(range(1, 21)),
        revision=1,
        options=IndexOptions(hnsw_above=25),
    )
    assert index.kind == "flat"
    index.add(vectors[20:], rows(range(21, 31)))
    assert index.kind == "hnsw" and len(index) == 30
    assert index.search_batch(vectors[[25]], k=1)[0][0][0].embedding_id == 26
    index.remove([1, 2, 3, 26, 27])
    assert index.kind == "flat" and len(index) == 25 and index.row(26) is None
    found = index.search_batch(vectors[[25, 29]], k=1)
    assert found[0][0][0].embedding_id != 26 and found[1][0][0].embedding_id == 30
    assert index.row(30) == Row(30, 300, 3000, "en", "question")


def test_an_index_of_an_older_format_reads_as_missing(tmp_path: Path) -> None:
    VectorIndex.build(
        model_id="m", dim=8, vectors=unit(np.random.default_rng(7), 2), rows=rows(range(1, 3)), revision=1
    ).save(tmp_path / "index")
    meta_file = tmp_path / "index" / "current" / "meta.json"
    meta_file.write_text(meta_file.read_text().replace(f'"format": {FORMAT}', '"format": 1'))
    assert read_meta(tmp_path / "index") is None
    with pytest.raises(IndexMissingError):
        VectorIndex.load(tmp_path / "index", model_id="m", dim=8)


def test_shared_vectors_are_stored_once_and_each_row_is_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    boilerplate = unit(rng, 1, 32)  # one answer chunk shared by 400 articles
    questions = clustered(rng, 600)
    vectors = np.concatenate([questions, np.repeat(boilerplate, 400, axis=0)])
    options = IndexOptions(hnsw_above=300)
    index = VectorIndex.build(model_id="m", dim=32, vectors=vectors, rows=rows(range(1, 1001)), revision=1)
    hnsw = VectorIndex.build(
        model_id="m", dim=32, vectors=vectors, rows=rows(range(1, 1001)), revision=1, options=options
    )
    assert (len(index), index.distinct, hnsw.kind) == (1000, 601, "hnsw")

    shared = index.search_batch(boilerplate, k=5)[0]
    assert [r.embedding_id for r, _ in shared] == [601, 602, 603, 604, 605]
    assert [s for _, s in shared] == pytest.approx([1.0] * 5, abs=1e-5)
    queries = questions[:50] + 0.05 * unit(rng, 50, 32)
    exact, approximate = index.search_batch(queries, k=3), hnsw.search_batch(queries, k=3)
    assert [r[0][0] for r in approximate] == [r[0][0] for r in exact]

    hnsw.save(tmp_path / "index")
    meta = read_meta(tmp_path / "index")
    assert meta is not None and (meta.count, meta.distinct) == (1000, 601)
    loaded = VectorIndex.load(tmp_path / "index", model_id="m", dim=32, options=options)
    assert [r[0][0] for r in loaded.search_batch(queries, k=3)] == [r[0][0] for r in exact]
    loaded.remove(list(range(601, 1001)))
    assert (len(loaded), loaded.distinct, loaded.kind) == (600, 600, "hnsw")
    assert loaded.search_batch(boilerplate, k=5)[0][0][0].embedding_id <= 600


def test_a_half_precision_index_scores_articles_close_to_float32_and_survives_a_save(tmp_path: Path) -> None:
    """The re-ranker's index (kb.search): exact, float16, read by article rather than searched."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((60, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [Row(i + 1, i + 1, i // 3, "en", "question") for i in range(60)]  # 3 vectors an article
    half = VectorIndex.build(
        model_id="m", dim=32, vectors=vectors, rows=rows, revision=1, options=IndexOptions(half=True)
    )
    assert half.kind == "half"
    half.save(tmp_path / "index")
    loaded = VectorIndex.load(tmp_path / "index", model_id="m", dim=32, options=IndexOptions(half=True))
    query = vectors[7]
    (scored,) = loaded.score_articles(query[None, :], [[2, 5, 99]])  # 99: not in the index
    assert sorted(row.embedding_id for row, _ in scored) == [7, 8, 9, 16, 17, 18]
    for row, score in scored:
        assert abs(score - float(vectors[row.embedding_id - 1] @ query)) < 2e-3
    assert dict((r.embedding_id, s) for r, s in scored)[8] == pytest.approx(1.0, abs=2e-3)
