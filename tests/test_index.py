"""The vector index facade: build, search, add/remove, persistence and model checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kb.errors import IndexMismatchError, IndexMissingError
from kb.index import Row, VectorIndex, read_meta


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
    assert loaded.rows[3] == first.rows[3]
    assert loaded.search_batch(vectors[[2]], k=1)[0][0][0].embedding_id == 3

    second = VectorIndex.build(model_id="m", dim=8, vectors=vectors[:4], rows=rows(range(1, 5)), revision=8)
    second.save(tmp_path / "index")
    meta = read_meta(tmp_path / "index")
    assert meta is not None and meta.revision == 8 and meta.count == 4
    generations = [p for p in (tmp_path / "index").iterdir() if p.name.startswith("gen-")]
    assert len(generations) == 1, "old generations are cleaned up"


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
