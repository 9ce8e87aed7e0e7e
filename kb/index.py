"""The vector index: a small facade over FAISS, persisted as a folder.

A folder holds ``vectors.faiss`` (inner product over L2-normalised vectors), ``rows.npz`` (what
each vector stands for, one numpy array per field, in FAISS's order) and ``meta.json`` (model id,
dimension, KB revision, the live versions' count and id sum, index kind). It is a cache of the
``embeddings`` table. Each save writes a new generation folder and then repoints the ``current``
symlink with one atomic rename (:mod:`kb.files`), so a reader (another process included) never
sees half an index.

The kind follows the size: up to ``hnsw_above`` distinct vectors an exact flat index (a scan
costs about 0.4 ms per 10,000 vectors on one core), above it HNSW (``faiss.IndexHNSWFlat``, inner
product), which reads a few thousand vectors per query whatever the size; ``ef_search`` keeps its
top hits those of the flat index (see ``benchmarks/search.py`` and benchmarks/RESULTS.md).
Identical vectors are stored once. The rows are kept as arrays, not one Python object per
vector: 200,000 rows cost about 6 MB. A search runs on one OpenMP thread, a build on all cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from kb.errors import IndexMismatchError, IndexMissingError
from kb.files import current_folder, publish_folder
from kb.machine import cores

FORMAT = 3  # older formats (1: rows.json and an IndexIDMap2) read as missing: rebuilt from the database
HNSW_ABOVE = 20_000  # vectors; up to this many, an exact flat index
HNSW_M = 48  # graph neighbours per vector (32 lost a cluster of near-duplicates at 200,000)
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 128  # candidates explored per query (at least the k asked for)

IndexKind = Literal["flat", "hnsw", "half"]


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
    kind: IndexKind = "flat"
    distinct: int = 0  # distinct vectors (rows sharing one vector count once)
    live: str = ""  # the live versions it was built for (kb.catalog.Stamp.live_key)


@dataclass(frozen=True, slots=True)
class IndexOptions:
    """How the index is chosen and searched (``kb.hnsw_above``, ``kb.hnsw_ef_search``)."""

    hnsw_above: int = HNSW_ABOVE
    ef_search: int = HNSW_EF_SEARCH
    m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION

    half: bool = False  # an exact index of float16 vectors, never HNSW (the re-ranker's: kb.search)

    def kind_for(self, count: int) -> IndexKind:
        if self.half:
            return "half"
        return "hnsw" if count > self.hnsw_above else "flat"


class _Rows:
    """The rows of an index as parallel arrays, position ``i`` describing FAISS's vector ``i``.

    Languages and kinds are few: each is stored as a small code into a list of names."""

    FIELDS = ("embedding_id", "version_id", "article_id")
    ARRAYS = (*FIELDS, "language", "kind", "position")

    def __init__(self) -> None:
        self.embedding_id = np.zeros(0, np.int64)
        self.version_id = np.zeros(0, np.int64)
        self.article_id = np.zeros(0, np.int64)
        self.language = np.zeros(0, np.int16)
        self.kind = np.zeros(0, np.int16)
        self.position = np.zeros(0, np.int64)  # the FAISS vector of each row (several may share one)
        self.languages: list[str] = []
        self.kinds: list[str] = []

    def __len__(self) -> int:
        return len(self.embedding_id)

    def extend(self, rows: list[Row]) -> None:
        n = len(rows)
        for name in self.FIELDS:
            fresh = np.fromiter((getattr(r, name) for r in rows), dtype=np.int64, count=n)
            setattr(self, name, np.concatenate([getattr(self, name), fresh]))
        self.language = np.concatenate([self.language, _codes(self.languages, (r.language for r in rows), n)])
        self.kind = np.concatenate([self.kind, _codes(self.kinds, (r.kind for r in rows), n)])

    def keep(self, mask: np.ndarray) -> None:
        for name in self.ARRAYS:
            setattr(self, name, getattr(self, name)[mask])

    def row(self, position: int) -> Row:
        return Row(
            int(self.embedding_id[position]),
            int(self.version_id[position]),
            int(self.article_id[position]),
            self.languages[self.language[position]],
            self.kinds[self.kind[position]],
        )

    def save(self, file: Path) -> None:
        with open(file, "wb") as out:
            np.savez(
                out,
                embedding_id=self.embedding_id,
                version_id=self.version_id,
                article_id=self.article_id,
                language=self.language,
                kind=self.kind,
                position=self.position,
                languages=np.array(self.languages, dtype=str),
                kinds=np.array(self.kinds, dtype=str),
            )

    @classmethod
    def load(cls, file: Path) -> _Rows:
        rows = cls()
        with np.load(file) as data:
            for name in cls.ARRAYS:
                setattr(rows, name, data[name])
            rows.languages = [str(x) for x in data["languages"]]
            rows.kinds = [str(x) for x in data["kinds"]]
        return rows


def _distinct(vectors: np.ndarray, *, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``vectors`` in order of first occurrence, and each row's number
    among them. Rows are told apart by two random projections (8 bytes a row), then checked
    equal in chunks, so no copy of all the vectors is made."""
    n = len(vectors)
    if n == 0:
        return vectors, np.zeros(0, np.int64)
    probe = np.random.default_rng(0).standard_normal((vectors.shape[1], 2)).astype(np.float32)
    keys = np.ascontiguousarray(vectors @ probe).view(np.int64).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    for start in range(0, n, chunk):  # equal keys, different vectors: each gets a slot of its own
        same = (vectors[start : start + chunk] == vectors[first[inverse[start : start + chunk]]]).all(axis=1)
        for row in np.flatnonzero(~same) + start:
            inverse[row] = len(first)
            first = np.append(first, row)
    order = np.argsort(first, kind="stable")  # number them in order of first occurrence
    rank = np.empty(len(first), np.int64)
    rank[order] = np.arange(len(first))
    return vectors[first[order]], rank[inverse].astype(np.int64)


def _codes(names: list[str], values: Iterable[str], count: int) -> np.ndarray:
    known = {name: code for code, name in enumerate(names)}
    out = np.empty(count, np.int16)
    for position, value in enumerate(values):
        code = known.get(value)
        if code is None:
            code = known[value] = len(names)
            names.append(value)
        out[position] = code
    return out


class VectorIndex:
    """Inner-product search over normalised vectors, exact (flat) or HNSW by size, whose rows
    are addressable by embedding id.

    Identical vectors (one boilerplate answer chunk shared by many articles) are stored once,
    each FAISS position standing for one or more rows: a graph index gets lost among many exact
    duplicates (benchmarks/RESULTS.md), and the memory is halved on such a KB."""

    def __init__(
        self,
        *,
        model_id: str,
        dim: int,
        revision: int = 0,
        options: IndexOptions | None = None,
        live: str = "",
    ) -> None:
        self.model_id = model_id
        self.dim = dim
        self.revision = revision
        self.live = live
        self.options = options or IndexOptions()
        self.kind: IndexKind = "flat"
        self._faiss: faiss.Index = faiss.IndexFlatIP(dim)
        self._rows = _Rows()
        self._members = np.zeros(0, np.int64)  # row numbers, grouped by FAISS position
        self._starts = np.zeros(1, np.int64)  # position p's rows: _members[_starts[p]:_starts[p + 1]]
        self._by_article: tuple[np.ndarray, np.ndarray] | None = None  # sorted article ids, rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def distinct(self) -> int:
        """How many distinct vectors FAISS holds (what the index kind is chosen by)."""
        return int(self._faiss.ntotal)

    @classmethod
    def build(
        cls,
        *,
        model_id: str,
        dim: int,
        vectors: np.ndarray,
        rows: list[Row],
        revision: int,
        options: IndexOptions | None = None,
        live: str = "",
    ) -> VectorIndex:
        index = cls(model_id=model_id, dim=dim, revision=revision, options=options, live=live)
        index.add(vectors, rows)
        return index

    def add(self, vectors: np.ndarray, rows: list[Row]) -> None:
        """Add ``vectors`` (the index is rebuilt, HNSW once past ``hnsw_above`` distinct ones)."""
        if len(rows) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rows), self.dim)
        if len(self):
            vectors = np.concatenate([self._row_vectors(), vectors])
        self._rows.extend(rows)
        self._fill(vectors)

    def remove(self, embedding_ids: list[int]) -> None:
        """Drop the vectors of ``embedding_ids`` (the index is rebuilt from the vectors kept)."""
        if not embedding_ids or not len(self):
            return
        keep = ~np.isin(self._rows.embedding_id, np.asarray(embedding_ids, dtype=np.int64))
        if keep.all():
            return
        vectors = self._row_vectors()[keep]
        self._rows.keep(keep)
        self._fill(vectors)

    def row(self, embedding_id: int) -> Row | None:
        positions = np.flatnonzero(self._rows.embedding_id == embedding_id)
        return self._rows.row(int(positions[0])) if len(positions) else None

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[tuple[Row, float]]]:
        """The ``k`` nearest rows per query, best first, as (row, cosine similarity)."""
        if len(self) == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        k = min(k, len(self))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        # One thread: a query is too small to share, and OpenMP threads waiting on each other
        # on a busy machine cost more than the search (4x on 2 cores; benchmarks/RESULTS.md).
        # The setting belongs to the calling thread.
        faiss.omp_set_num_threads(1)
        scores, positions = self._faiss.search(queries, min(k, self.distinct))
        results = []
        for srow, prow in zip(scores, positions, strict=True):
            found = prow >= 0  # HNSW may return fewer than asked
            prow, srow = prow[found], srow[found]
            counts = self._starts[prow + 1] - self._starts[prow]
            if (counts == 1).all():
                members = self._members[self._starts[prow]]
            else:  # shared vectors: each of their rows, in the vector's place, up to k in all
                members = np.concatenate([self._members[self._starts[p] : self._starts[p + 1]] for p in prow])
                members, srow = members[:k], np.repeat(srow, counts)[:k]
            results.append(self._scored(members, srow))
        return results

    def score_articles(
        self, queries: np.ndarray, articles: Sequence[Sequence[int]]
    ) -> list[list[tuple[Row, float]]]:
        """Per query, every row of the articles listed for it, as (row, cosine similarity):
        a re-ranker's look at a few candidates (:meth:`kb.search.KnowledgeBase.rank`), not a
        search. Articles without vectors here are left out."""
        if self._by_article is None:
            order = np.argsort(self._rows.article_id, kind="stable")
            self._by_article = (self._rows.article_id[order], order)
        keys, order = self._by_article
        results = []
        for query, wanted in zip(queries, articles, strict=True):
            wanted = np.asarray(wanted, dtype=np.int64)
            lo, hi = np.searchsorted(keys, wanted, "left"), np.searchsorted(keys, wanted, "right")
            spans = [order[a:b] for a, b in zip(lo, hi, strict=True)]
            members = np.concatenate(spans) if spans else np.zeros(0, np.int64)
            if not len(members):
                results.append([])
                continue
            vectors = self._faiss.reconstruct_batch(self._rows.position[members])
            results.append(self._scored(members, vectors @ np.asarray(query, dtype=np.float32)))
        return results

    def _scored(self, members: np.ndarray, scores: np.ndarray) -> list[tuple[Row, float]]:
        """(row, score) for the row numbers ``members`` and their ``scores``."""
        rows, languages, kinds = self._rows, self._rows.languages, self._rows.kinds
        fields = zip(
            rows.embedding_id[members].tolist(),
            rows.version_id[members].tolist(),
            rows.article_id[members].tolist(),
            rows.language[members].tolist(),
            rows.kind[members].tolist(),
            scores.tolist(),
            strict=True,
        )
        return [(Row(e, v, a, languages[g], kinds[d]), s) for e, v, a, g, d, s in fields]

    def _fill(self, vectors: np.ndarray) -> None:
        """FAISS over the distinct ``vectors`` (one per row, in row order)."""
        distinct, position = _distinct(vectors)
        self._rows.position = position
        self._group()
        self.kind = self.options.kind_for(len(distinct))
        index = self._empty(self.kind)
        faiss.omp_set_num_threads(cores())  # building is worth every core
        index.add(distinct)
        self._faiss = index

    def _group(self) -> None:
        self._by_article = None
        position = self._rows.position
        self._members = np.argsort(position, kind="stable")
        counts = np.bincount(position, minlength=int(position.max()) + 1 if len(position) else 0)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _row_vectors(self) -> np.ndarray:
        """One vector per row, in row order."""
        return self._faiss.reconstruct_n(0, self._faiss.ntotal)[self._rows.position]

    def meta(self) -> IndexMeta:
        return IndexMeta(
            model_id=self.model_id,
            dim=self.dim,
            revision=self.revision,
            count=len(self),
            built_at=datetime.now(UTC).isoformat(),
            kind=self.kind,
            distinct=self.distinct,
            live=self.live,
        )

    def _empty(self, kind: IndexKind) -> faiss.Index:
        if kind == "half":  # scores within ~1e-3 of float32's, in half the memory
            return faiss.IndexScalarQuantizer(
                self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        if kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        index = faiss.IndexHNSWFlat(self.dim, self.options.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.options.ef_construction
        index.hnsw.efSearch = self.options.ef_search
        return index

    def save(self, path: Path) -> None:
        """Write a new generation folder, then point ``path/current`` at it in one rename."""

        def write(generation: Path) -> None:
            faiss.write_index(self._faiss, str(generation / "vectors.faiss"))
            self._rows.save(generation / "rows.npz")
            (generation / "meta.json").write_text(json.dumps(asdict(self.meta()), indent=2))

        publish_folder(path, write)

    @classmethod
    def load(cls, path: Path, *, model_id: str, dim: int, options: IndexOptions | None = None) -> VectorIndex:
        """The index saved in ``path``; an index of an older format counts as missing."""
        folder = current_folder(path)
        meta_file = folder / "meta.json"
        if not meta_file.exists():
            raise IndexMissingError(path)
        meta = json.loads(meta_file.read_text())
        if meta.get("model_id") != model_id or meta.get("dim") != dim:
            raise IndexMismatchError(
                path, index_model=meta.get("model_id"), index_dim=meta.get("dim"), model=model_id, dim=dim
            )
        if meta.get("format") != FORMAT:
            raise IndexMissingError(path)
        index = cls(
            model_id=model_id,
            dim=dim,
            revision=int(meta["revision"]),
            options=options,
            live=str(meta.get("live", "")),
        )
        index._faiss = faiss.read_index(str(folder / "vectors.faiss"))
        index.kind = meta["kind"]
        if index.kind == "hnsw":
            faiss.downcast_index(index._faiss).hnsw.efSearch = index.options.ef_search
        index._rows = _Rows.load(folder / "rows.npz")
        index._group()
        return index


def read_meta(path: Path) -> IndexMeta | None:
    meta_file = current_folder(path) / "meta.json"
    if not meta_file.exists():
        return None
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        return None
    return IndexMeta(**meta)
