"""The vector index: a small facade over FAISS, persisted as a folder.

A folder holds ``vectors.faiss`` (inner product over L2-normalised vectors, keyed by embedding
row id), ``rows.json`` (what each id points at) and ``meta.json`` (model id, dimension, KB
revision). It is a cache of the ``embeddings`` table. Each save writes a new generation folder
and then repoints the ``current`` symlink with one atomic rename, so a reader (another process
included) never sees half an index.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from kb.errors import IndexMismatchError, IndexMissingError

FORMAT = 1
CURRENT = "current"


@dataclass(frozen=True, slots=True)
class Row:
    """What one vector stands for."""

    embedding_id: int
    version_id: int
    article_id: int
    language: str
    kind: str


@dataclass(frozen=True, slots=True)
class IndexMeta:
    model_id: str
    dim: int
    revision: int
    count: int
    built_at: str
    format: int = FORMAT


class VectorIndex:
    """Exact inner-product search over normalised vectors, addressable by embedding id."""

    def __init__(self, *, model_id: str, dim: int, revision: int = 0) -> None:
        self.model_id = model_id
        self.dim = dim
        self.revision = revision
        self._faiss = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.rows: dict[int, Row] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def build(
        cls, *, model_id: str, dim: int, vectors: np.ndarray, rows: list[Row], revision: int
    ) -> VectorIndex:
        index = cls(model_id=model_id, dim=dim, revision=revision)
        index.add(vectors, rows)
        return index

    def add(self, vectors: np.ndarray, rows: list[Row]) -> None:
        if len(rows) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rows), self.dim)
        ids = np.fromiter((r.embedding_id for r in rows), dtype=np.int64, count=len(rows))
        self._faiss.add_with_ids(vectors, ids)
        self.rows.update((r.embedding_id, r) for r in rows)

    def remove(self, embedding_ids: list[int]) -> None:
        if not embedding_ids:
            return
        self._faiss.remove_ids(np.asarray(embedding_ids, dtype=np.int64))
        for eid in embedding_ids:
            self.rows.pop(eid, None)

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[tuple[Row, float]]]:
        """The ``k`` nearest rows per query, best first, as (row, cosine similarity)."""
        if len(self.rows) == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        k = min(k, len(self.rows))
        scores, ids = self._faiss.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return [
            [(self.rows[int(i)], float(s)) for s, i in zip(srow, irow, strict=True) if i >= 0]
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def meta(self) -> IndexMeta:
        return IndexMeta(
            model_id=self.model_id,
            dim=self.dim,
            revision=self.revision,
            count=len(self.rows),
            built_at=datetime.now(UTC).isoformat(),
        )

    def save(self, path: Path) -> None:
        """Write a new generation folder, then point ``path/current`` at it in one rename."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        generation = Path(tempfile.mkdtemp(prefix="gen-", dir=path))
        faiss.write_index(self._faiss, str(generation / "vectors.faiss"))
        (generation / "rows.json").write_text(json.dumps([asdict(r) for r in self.rows.values()]))
        (generation / "meta.json").write_text(json.dumps(asdict(self.meta()), indent=2))
        link = path / f".current-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(generation.name)
        os.replace(link, path / CURRENT)
        for old in path.glob("gen-*"):
            if old.name != generation.name:
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: Path, *, model_id: str, dim: int) -> VectorIndex:
        path = Path(path)
        folder = (path / CURRENT).resolve()
        meta_file = folder / "meta.json"
        if not meta_file.exists():
            raise IndexMissingError(path)
        meta = json.loads(meta_file.read_text())
        if meta.get("model_id") != model_id or meta.get("dim") != dim:
            raise IndexMismatchError(
                path, index_model=meta.get("model_id"), index_dim=meta.get("dim"), model=model_id, dim=dim
            )
        index = cls(model_id=model_id, dim=dim, revision=int(meta["revision"]))
        index._faiss = faiss.read_index(str(folder / "vectors.faiss"))
        index.rows = {r["embedding_id"]: Row(**r) for r in json.loads((folder / "rows.json").read_text())}
        return index


def read_meta(path: Path) -> IndexMeta | None:
    meta_file = Path(path) / CURRENT / "meta.json"
    if not meta_file.exists():
        return None
    return IndexMeta(**json.loads(meta_file.read_text()))
