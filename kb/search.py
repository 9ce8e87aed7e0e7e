"""Search at run time: the encoder plus the on-disk index, kept in step with the database.

:class:`KnowledgeBase` answers ``search`` with typed :class:`Hit` s, one per article. Two
channels are fused into one score in [0, 1]: the best cosine similarity over the article's
question, alternatives and answer chunks (dense), and BM25 over the same text squashed to [0, 1)
(lexical, for rare exact words); see :meth:`KnowledgeBase.rank`. ``sync`` brings the in-memory index
to the database's KB revision: from the on-disk cache when that is current, else from the
``embeddings`` rows (encoding what the primary model has not embedded yet), then saved; the
live versions' titles and BM25 postings likewise (:mod:`kb.catalog`).

With a :class:`~kb.encoder.RoutedEncoder` there is one vector index per model (the primary's in
``index_dir``, the multilingual one's in ``index_dir/multilingual``, each stamped with its model),
and each query is searched in the index of the model its language is routed to; when its language
cannot be told, in both, keeping the better (calibrated) score per article. The secondary
model's vectors are embedded after ingest (:mod:`kb.backlog`): its index holds what is embedded
so far, and ``catch_up`` (a running bot's refresh) works on the rest.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb import heap, store
from kb.backlog import backfills
from kb.batching import DEFAULT_WINDOW, QueryBatcher
from kb.catalog import Catalog, Stamp, Version
from kb.encoder import TextEncoder, building, members, score_scale
from kb.errors import IndexMissingError
from kb.index import IndexOptions, Row, VectorIndex, read_meta
from kb.language import base_language, detect_language
from kb.models import ArticleVersion, EmbeddingKind
from kb.query_cache import QUERY_CACHE_SIZE, QueryCache
from kb.texts import embedding_items

log = logging.getLogger(__name__)

CANDIDATES = 64  # nearest vectors read per query (several per article)
LEXICAL_CANDIDATES = 20
# How much less a match with a translation in the query's own language counts than a match with
# an article's default-language version. On the English example KB with one Czech translation,
# unrelated Czech question pairs scored 0.44-0.60 where the right English entries scored
# 0.31-0.43 from Czech; the Czech translation's own question, asked, scores ~1.0. A first
# estimate from that probe (no labelled set with translations exists yet to fit it on).
SAME_LANGUAGE_HANDICAP = 0.2
LEXICAL_WEIGHT = 0.2  # measured on the eval sets: see benchmarks/RESULTS.md
# The second stage (a RoutedEncoder with a reranker): the first RERANK_DEPTH articles of a query
# the primary model searched are scored again as a weighted mean of each model's best cosine,
# measured on stackfaq and covid-faq-stanford (benchmarks/RESULTS.md): all-mpnet-base-v2 ranks
# English best, and multilingual-e5-small, weaker alone, is right where the other two are not.
RERANK_DEPTH = 10
RERANK_WEIGHTS = {"primary": 0.1, "rerank": 0.7, "multilingual": 0.2}
RERANK_MAX_BATCH = 8  # a bigger batch of queries (a saturated bot) keeps the first stage's ranking
RERANK_SURE_SCORE = 0.8  # ...and so does a first stage this sure (kb.search._sure)
RERANK_SURE_MARGIN = 0.15
CATCH_UP_SECONDS = 5.0  # per refresh of a running bot, on the secondary models' backlog
CATCH_UP_BATCH = 32
EARLY_KEPT = 256  # searches started early (start_search) and not claimed yet, at most
EARLY_SECONDS = 30.0  # ...and for at most this long

# A customer's message is told by its search (on a worker thread, as it arrives) and again by the
# answer's decision on the event loop (KnowledgeBase.cross_lingual, ~0.1-0.2 ms a time): the
# second reads the first's result.
_detected = functools.lru_cache(maxsize=4096)(detect_language)


@dataclass(frozen=True, slots=True)
class Hit:
    article_id: int
    article_key: str
    version_id: int
    version: int
    title: str
    language: str
    score: float
    matched: str  # question / alternative / answer

    def as_log(self) -> dict[str, object]:
        return {
            "article": self.article_key,
            "version_id": self.version_id,
            "version": self.version,
            "score": round(self.score, 4),
            "matched": self.matched,
        }


@dataclass(frozen=True, slots=True)
class _Early:
    task: asyncio.Future[list[Hit]]
    k: int
    started: float


@dataclass(frozen=True, slots=True)
class _Snapshot:
    indexes: tuple[VectorIndex, ...]  # one per model, as ``members(encoder)``
    catalog: Catalog


class KnowledgeBase:
    """Encoder + index + the live versions' titles; safe to share across handlers."""

    def __init__(
        self,
        encoder: TextEncoder,
        index_dir: Path | str,
        *,
        default_language: str = "en",
        lexical_weight: float = LEXICAL_WEIGHT,
        batch_window: float | None = DEFAULT_WINDOW,
        index_options: IndexOptions | None = None,
        query_cache: int = QUERY_CACHE_SIZE,
        rerank_max_batch: int = RERANK_MAX_BATCH,
    ) -> None:
        """``batch_window``: concurrent :meth:`search` calls are encoded and searched together
        (:mod:`kb.batching`), the first waiting this many seconds for company; None: one by one.
        ``index_options``: flat or HNSW by size (:mod:`kb.index`); ``query_cache``: query vectors
        kept per model for repeated questions (:mod:`kb.query_cache`; 0: none).
        ``rerank_max_batch``: a batch of more concurrent queries than this is not re-ranked."""
        self.encoder = encoder
        self.models = members(encoder)
        self.roles: tuple[str, ...] = getattr(encoder, "roles", ("primary",))
        self.rerank_max_batch = rerank_max_batch
        self.searched = 0  # queries searched, and how many of them the second stage re-ranked
        self.reranked = 0
        self.index_options = index_options or IndexOptions()
        self.query_caches = tuple(QueryCache(m, size=query_cache) for m, _ in self.models)
        self.index_dir = Path(index_dir)
        self.default_language = default_language
        self.lexical_weight = lexical_weight
        self._route = getattr(encoder, "route", None)
        self._reranks = getattr(encoder, "reranks", None)  # a RoutedEncoder with a reranker
        self._second_pool: ThreadPoolExecutor | None = None  # its models encode side by side
        self._snapshot = _Snapshot(
            tuple(
                VectorIndex(model_id=m.model_id, dim=m.dim, options=self._options(position))
                for position, (m, _) in enumerate(self.models)
            ),
            Catalog.empty(),
        )
        self._sync_lock = asyncio.Lock()
        # A bot works on the backlog newest first, in small batches: a query routed to the
        # secondary model waits for at most one batch (the model encodes one call at a time).
        self._backfills = backfills(encoder, batch=CATCH_UP_BATCH, newest_first=True)
        self._batcher: QueryBatcher[Hit] | None = None
        self._early: OrderedDict[tuple[str, str | None], _Early] = OrderedDict()
        if batch_window is not None:
            self._batcher = QueryBatcher(
                lambda texts, k, languages: self.search_sync(texts, k=k, languages=languages),
                window=batch_window,
            )

    @property
    def revision(self) -> int:
        return self._snapshot.indexes[0].revision

    @property
    def size(self) -> int:
        return len(self._snapshot.catalog.by_article)

    @property
    def vectors(self) -> tuple[int, ...]:
        """How many vectors each model's index holds (as :attr:`models`)."""
        return tuple(len(index) for index in self._snapshot.indexes)

    # -- keeping up with the database ---------------------------------------------------------

    async def sync(self, sessions: async_sessionmaker[AsyncSession], *, force: bool = False) -> bool:
        """Bring the index to the database's revision; True when something changed.

        ``force`` rebuilds from the database (``helpdesk kb rebuild``), working off the
        secondary models' backlog first; otherwise their indexes hold what is embedded so far.
        """
        async with self._sync_lock:
            if force:
                for backfill in backfills(self.encoder):
                    await backfill.run(sessions)
            async with sessions() as session:
                revision = await store.get_revision(session)
                if not force and revision == self.revision and self._snapshot.catalog.versions:
                    return False
                stamp = Stamp(revision, *await store.live_fingerprint(session), self.default_language)
                # Reading, building and installing run in worker threads: a running bot keeps
                # answering from the previous snapshot meanwhile. The bulk reads and builds run
                # with the collector paused (kb.heap); the encoding of missing vectors does not.
                with heap.collector_paused():
                    catalog = (
                        None if force else await asyncio.to_thread(Catalog.load, self.catalog_path, stamp)
                    )
                    live = None if catalog is not None else await store.live_versions(session)
                indexes = []
                for position, (model, with_answers) in enumerate(self.models):
                    path = self.index_path(position)
                    index = None
                    if not force:
                        index = await asyncio.to_thread(
                            self._load_cached, model, path, stamp, self._options(position)
                        )
                    if index is None:
                        if live is None:
                            with heap.collector_paused():
                                live = await store.live_versions(session)
                        index = await self._build(
                            session,
                            model,
                            with_answers,
                            live,
                            stamp,
                            embed_missing=position == 0,
                            options=self._options(position),
                        )
                        await session.commit()
                        await asyncio.to_thread(index.save, path)
                    indexes.append(index)
            if catalog is None:
                assert live is not None
                with heap.collector_paused():
                    catalog = await asyncio.to_thread(
                        Catalog.build, live, default_language=self.default_language
                    )
                await asyncio.to_thread(self._save_catalog, catalog, stamp)
            # One assignment: a search running meanwhile sees either the old snapshot or the new one.
            self._snapshot = _Snapshot(tuple(indexes), catalog)
            log.info("knowledge base at revision %d: %d articles", revision, self.size)
            return True

    async def catch_up(
        self, sessions: async_sessionmaker[AsyncSession], *, budget: float = CATCH_UP_SECONDS
    ) -> int:
        """Work on the secondary models' backlog for about ``budget`` seconds, newest versions
        first (a running bot calls this on every refresh; see :mod:`kb.backlog`); returns the
        versions embedded. The index follows at a later :meth:`sync`. A model still being
        made ready (:func:`kb.encoder.building`: a first start's ONNX export) waits for a later
        refresh."""
        return sum(
            [
                await backfill.run(sessions, budget=budget)
                for backfill in self._backfills
                if not building(backfill.model)
            ]
        )

    def index_path(self, position: int) -> Path:
        """Where the index of the ``position``-th model lives (the primary's: ``index_dir``,
        the others' in a folder named after their role)."""
        return self.index_dir if position == 0 else self.index_dir / self.roles[position]

    @property
    def catalog_path(self) -> Path:
        """Where the catalog of the live versions is cached (:mod:`kb.catalog`)."""
        return self.index_dir / "catalog"

    def _save_catalog(self, catalog: Catalog, stamp: Stamp) -> None:
        try:
            catalog.save(self.catalog_path, stamp)
        except OSError as exc:  # a cache: the next start builds it again
            log.warning("the KB catalog could not be saved in %s: %s", self.catalog_path, exc)

    def _options(self, position: int) -> IndexOptions:
        """How the ``position``-th model's index is built: the reranker's is only read for a few
        articles' vectors, never searched, so it is exact (no HNSW graph to build) and holds
        float16 vectors: all-mpnet-base-v2's 768 dimensions for 100,000 questions are 150 MB
        instead of 300 (its scores move by ~1e-3)."""
        if self.roles[position] == "rerank":
            return replace(self.index_options, half=True)
        return self.index_options

    def _load_cached(
        self, model: TextEncoder, path: Path, stamp: Stamp, options: IndexOptions
    ) -> VectorIndex | None:
        meta = read_meta(path)
        # The live versions' count and id sum tell a database changed under the same revision.
        if meta is None or meta.revision != stamp.revision or meta.live != stamp.live_key:
            return None
        if meta.kind != options.kind_for(meta.distinct):  # kb.hnsw_above changed
            return None
        try:
            # A model or dimension mismatch raises IndexMismatchError: the caller must rebuild.
            return VectorIndex.load(path, model_id=model.model_id, dim=model.dim, options=options)
        except IndexMissingError:
            return None

    async def _build(
        self,
        session: AsyncSession,
        model: TextEncoder,
        with_answers: bool,
        live: list[tuple[store.LiveVersion, store.LiveArticle]],
        stamp: Stamp,
        *,
        embed_missing: bool,
        options: IndexOptions,
    ) -> VectorIndex:
        """The index of ``model`` over the live versions' stored vectors; versions without any
        are embedded first when ``embed_missing`` (the primary model), else left to the backlog."""
        version_ids = [v.id for v, _ in live]
        rows = await store.embeddings_of(session, model_id=model.model_id, version_ids=version_ids)
        if not with_answers:
            rows = [r for r in rows if r.kind is not EmbeddingKind.ANSWER]
        embedded = {r.version_id for r in rows}
        missing = [(v, a) for v, a in live if v.id not in embedded]
        if missing and embed_missing:
            log.info("embedding %d versions for model %s", len(missing), model.model_id)
            rows.extend(await embed_versions(session, model, [v for v, _ in missing], answers=with_answers))
        elif missing:
            log.info(
                "%d of %d versions wait for vectors of model %s", len(missing), len(live), model.model_id
            )

        def build() -> VectorIndex:  # in a worker thread: a big KB takes seconds
            by_id = {v.id: (v, a) for v, a in live}
            vectors = np.frombuffer(b"".join(r.vector for r in rows), dtype=np.float32).reshape(
                len(rows), model.dim
            )
            index_rows = [
                Row(
                    r.id,
                    r.version_id,
                    by_id[r.version_id][1].id,
                    by_id[r.version_id][0].language,
                    r.kind.value,
                )
                for r in rows
            ]
            return VectorIndex.build(
                model_id=model.model_id,
                dim=model.dim,
                vectors=vectors,
                rows=index_rows,
                revision=stamp.revision,
                live=stamp.live_key,
                options=options,
            )

        return await asyncio.to_thread(build)

    # -- searching ----------------------------------------------------------------------------

    async def search(self, text: str, *, k: int = 5, language: str | None = None) -> list[Hit]:
        """Hits for a customer's message; translations are picked in the language the message
        is written in when that is clear, else in ``language`` (Telegram's), else the default.
        A search of the same text and language started by :meth:`start_search` is taken over."""
        early = self._early.pop((text, language), None)
        if early is not None and early.k >= k:
            try:
                return (await early.task)[:k]
            except Exception as exc:  # the search is made again, and fails again if it must
                log.debug("a search started early failed (%s); searching again", exc)
        return await self._search(text, k=k, language=language)

    def start_search(self, text: str, *, k: int = 5, language: str | None = None) -> None:
        """Start searching ``text`` now, for a :meth:`search` of the same text and language to
        take over soon: the bot starts it when a message arrives, so the search runs while the
        message is stored and routed to its handler. Searches not taken over within
        :data:`EARLY_SECONDS` (or beyond :data:`EARLY_KEPT`) are dropped."""
        key = (text, language)
        now = time.monotonic()
        while self._early:
            oldest = next(iter(self._early.values()))
            if len(self._early) < EARLY_KEPT and now - oldest.started < EARLY_SECONDS:
                break
            self._early.popitem(last=False)[1].task.cancel()
        if key in self._early:
            return
        task = asyncio.ensure_future(self._search(text, k=k, language=language))
        task.add_done_callback(_consume_failure)
        self._early[key] = _Early(task, k, now)

    async def _search(self, text: str, *, k: int, language: str | None) -> list[Hit]:
        if self._batcher is not None:
            return await self._batcher.search(text, k=k, language=language)
        return (await asyncio.to_thread(self.search_sync, [text], k=k, language=language))[0]

    def search_sync(
        self,
        texts: Sequence[str],
        *,
        k: int = 5,
        language: str | None = None,
        languages: Sequence[str | None] | None = None,
    ) -> list[list[Hit]]:
        """Like :meth:`search` for many texts at once (encoded in one batch per model);
        ``languages``: a fallback language per text, instead of ``language`` for all."""
        self.searched += len(texts)
        detected = [_detected(t) for t in texts]
        routes = [self._route(d) if self._route else (True,) for d in detected]
        vectors = []
        for position, cache in enumerate(self.query_caches):
            wanted = [i for i, route in enumerate(routes) if route[position]]
            encoded = cache.encode([texts[i] for i in wanted]) if wanted else None
            vectors.append((wanted, encoded))
        fallbacks = languages if languages is not None else [language] * len(texts)
        preferred = [self.language_of(t, language=f) for t, f in zip(texts, fallbacks, strict=True)]
        rerank: list[int] = []
        if (
            self._reranks is not None
            and len(texts) <= self.rerank_max_batch
            and not any(building(model) for model, _ in self.models[1:])  # a first start's export
        ):
            # By the language the message is written in, else the customer's (Telegram's).
            rerank = [i for i, lang in enumerate(preferred) if self._reranks(lang)]
        return self.rank(texts, vectors, k=k, languages=preferred, rerank=rerank)

    def forget_questions(self) -> None:
        """Drop the customers' texts this process keeps in memory to answer faster: the query
        vectors' caches and the languages told (both keyed by the text). A customer's
        ``/forget`` calls it: their rows are erased from the database, and their recent questions
        must not outlive them here. The caches hold everyone's recent questions; they refill as
        questions come."""
        for cache in self.query_caches:
            cache.clear()
        _detected.cache_clear()

    def language_of(self, text: str, *, language: str | None = None) -> str | None:
        """The language ``text`` is taken to be in, as :meth:`search` takes it: the one it is
        written in when that can be told, else ``language`` (the customer's, Telegram's); an
        ISO 639-1 code, or None when neither tells."""
        return _detected(text) or base_language(language)

    def cross_lingual(self, text: str, *, language: str | None = None) -> bool:
        """Whether ``text`` is taken to be in another language than the KB's default one
        (:meth:`language_of`): its question gets the cross-lingual suggest threshold (kb.decision)."""
        written = self.language_of(text, language=language)
        return written is not None and written != self.default_language

    def _second_vectors(
        self, texts: Sequence[str], again: list[int], vectors: list
    ) -> list[dict[int, np.ndarray]]:
        """Per model, the query vectors of the queries in ``again``: the first stage's where it
        encoded them, the others encoded now, each model on a thread of its own (both release
        the GIL: a lone query waits for the slower model, not for the two in turn)."""
        work = []
        for cache, (wanted, encoded) in zip(self.query_caches, vectors, strict=True):
            have = dict(zip(wanted, encoded, strict=True)) if encoded is not None else {}
            missing = [i for i in again if i not in have]
            work.append((have, missing, cache))
        pending = [(have, missing, cache) for have, missing, cache in work if missing]
        if len(pending) > 1:
            if self._second_pool is None:
                self._second_pool = ThreadPoolExecutor(2, thread_name_prefix="rerank")
            pool = self._second_pool
            futures = [pool.submit(cache.encode, [texts[i] for i in m]) for _, m, cache in pending]
            encoded_now = [future.result() for future in futures]
        else:
            encoded_now = [cache.encode([texts[i] for i in m]) for _, m, cache in pending]
        for (have, missing, _), fresh in zip(pending, encoded_now, strict=True):
            have.update(zip(missing, fresh, strict=True))
        return [{i: have[i] for i in again} for have, _, _ in work]

    def _dense(
        self, texts: Sequence[str], vectors: list, languages: Sequence[str | None] | None = None
    ) -> list[dict[int, tuple[float, str]]]:
        """Per query: article id -> (best calibrated cosine over the searched models, kind).

        An article is ranked by its version in the default language (see :meth:`_install`); a
        translation in the query's own language counts too, less :data:`SAME_LANGUAGE_HANDICAP`
        (two texts in one language score higher than a text and its translation: without the
        handicap a translated article would beat the untranslated ones on any question in its
        language; with it, a question close to the translation still finds it)."""
        snap = self._snapshot
        dense: list[dict[int, tuple[float, str]]] = [{} for _ in texts]
        for (model, _), index, (wanted, encoded) in zip(self.models, snap.indexes, vectors, strict=True):
            if encoded is None or not len(wanted):
                continue
            for qi, candidates in zip(wanted, index.search_batch(encoded, CANDIDATES), strict=True):
                self._best(dense[qi], candidates, score_scale(model), languages[qi] if languages else None)
        return dense

    def _best(
        self,
        best: dict[int, tuple[float, str]],
        candidates: list[tuple[Row, float]],
        scale: tuple[float, float],
        language: str | None,
    ) -> None:
        """Fold ``candidates`` (rows and cosines) into ``best``: article id -> (best calibrated
        score, kind); translations as :meth:`_dense` says."""
        snap = self._snapshot
        a, b = scale
        for row, cosine in candidates:
            score = cosine if (a, b) == (1.0, 0.0) else min(max(a * cosine + b, 0.0), 1.0)
            if row.version_id not in snap.catalog.ranked:
                if row.language != language or row.version_id not in snap.catalog.versions:
                    continue
                score -= SAME_LANGUAGE_HANDICAP
            if row.article_id not in best or score > best[row.article_id][0]:
                best[row.article_id] = (score, row.kind)

    def rank(
        self,
        texts: Sequence[str],
        vectors: list,
        *,
        k: int,
        languages: Sequence[str | None] | None = None,
        rerank: Sequence[int] = (),
    ) -> list[list[Hit]]:
        """Fuse both channels per article, best first.

        ``vectors``: per model (as :attr:`models`), ``(query positions, their query vectors)``.
        ``dense + w * lexical * (1 - dense)``: word overlap lifts a score towards 1 but never
        lowers it, so the cosine scale the thresholds were chosen on stays put for queries that
        share no rare words with the KB (most short, colloquial ones).

        ``rerank``: the positions of the queries a second stage may re-rank (a reranker in the
        encoder; see :data:`RERANK_WEIGHTS`). Those whose first stage is sure (:func:`_sure`) keep
        its ranking; for the others every model encodes the query, and the first
        ``max(k, RERANK_DEPTH)`` articles get as dense score the mean of each model's best
        calibrated cosine, weighted by :data:`RERANK_WEIGHTS` (a model that holds no vectors of an
        article yet, :mod:`kb.backlog`, sits that article out), then the same lexical lift.
        """
        snap = self._snapshot
        weight = self.lexical_weight
        postings = snap.catalog.lexical
        lexical_top = postings.top(texts, LEXICAL_CANDIDATES) if weight > 0 and len(postings) else None
        depth = max(k, RERANK_DEPTH)
        ranked: list[list[tuple[float, int, str]]] = []
        lexicals: list[dict[int, float]] = []
        for qi, dense in enumerate(self._dense(texts, vectors, languages)):
            lexical: dict[int, float] = {}
            if lexical_top is not None:
                for doc, value in lexical_top[qi]:
                    article_id = int(snap.catalog.owners[doc])
                    lexical[article_id] = max(value, lexical.get(article_id, 0.0))
            floor = min((score for score, _ in dense.values()), default=0.0)
            scored = {a: dense.get(a, (floor, "lexical")) for a in dense.keys() | lexical.keys()}
            ranked.append(_lifted(scored, lexical, weight))
            lexicals.append(lexical)
        again = [qi for qi in rerank if ranked[qi] and not _sure(ranked[qi])]
        if again:
            self.reranked += len(again)
            second = self._second_vectors(texts, again, vectors)
            for qi in again:
                head = [article_id for _, article_id, _ in ranked[qi][:depth]]
                language = languages[qi] if languages else None
                ranked[qi] = _lifted(self._rescore(qi, head, second, language), lexicals[qi], weight)
        results = []
        for qi, fused in enumerate(ranked):
            language = languages[qi] if languages else None
            hits = []
            for score, article_id, kind in fused[:k]:
                v = self._pick_language(snap.catalog.by_article[article_id], language)
                hits.append(Hit(article_id, v.key, v.id, v.number, v.question, v.language, score, kind))
            results.append(hits)
        return results

    def _rescore(
        self, qi: int, head: list[int], second: list[dict[int, np.ndarray]], language: str | None
    ) -> dict[int, tuple[float, str]]:
        """The second stage's dense score of each article of ``head`` (see :meth:`rank`), with
        the kind of the best match of the heaviest model that holds the article."""
        snap = self._snapshot
        totals = dict.fromkeys(head, 0.0)
        weights = dict.fromkeys(head, 0.0)
        kinds: dict[int, tuple[float, str]] = {}
        models = zip(self.models, self.roles, snap.indexes, second, strict=True)
        for (model, _), role, index, queries in models:
            share = RERANK_WEIGHTS.get(role, 0.0)
            if not share:
                continue
            best: dict[int, tuple[float, str]] = {}
            (candidates,) = index.score_articles(queries[qi][None, :], [head])
            self._best(best, candidates, score_scale(model), language)
            for article_id, (score, kind) in best.items():
                totals[article_id] += share * score
                weights[article_id] += share
                if article_id not in kinds or share > kinds[article_id][0]:
                    kinds[article_id] = (share, kind)
        return {a: (totals[a] / weights[a], kinds[a][1]) if weights[a] else (0.0, "lexical") for a in head}

    def _pick_language(self, translations: dict[str, Version], language: str | None) -> Version:
        for lang in (language, self.default_language):
            if lang and lang in translations:
                return translations[lang]
        return next(iter(translations.values()))


async def embed_versions(
    session: AsyncSession,
    encoder: TextEncoder,
    versions: Sequence[ArticleVersion | store.LiveVersion],
    *,
    answers: bool = True,
) -> list:
    """Encode and store the embedding rows of ``versions`` for ``encoder``'s model (no commit)."""
    plans = [
        embedding_items(question=v.question, alt_questions=v.alt_questions, answer=v.answer, answers=answers)
        for v in versions
    ]
    texts = [text for plan in plans for _, _, text in plan]
    vectors = await asyncio.to_thread(encoder.encode, texts)
    rows = []
    offset = 0
    for version, plan in zip(versions, plans, strict=True):
        rows += await store.add_embeddings(
            session,
            version_id=version.id,
            model_id=encoder.model_id,
            items=plan,
            vectors=vectors[offset : offset + len(plan)],
        )
        offset += len(plan)
    return rows


def _lifted(
    dense: dict[int, tuple[float, str]], lexical: dict[int, float], weight: float
) -> list[tuple[float, int, str]]:
    """(score, article id, kind), best first: each dense score lifted by the lexical channel."""
    fused = []
    for article_id, (cosine, kind) in dense.items():
        words = lexical.get(article_id, 0.0)
        fused.append((cosine + weight * words * (1.0 - cosine), article_id, kind))
    fused.sort(reverse=True)
    return fused


def _sure(fused: list[tuple[float, int, str]]) -> bool:
    """A first stage the second would not overturn: its top article scores at least
    :data:`RERANK_SURE_SCORE` and leads the next by :data:`RERANK_SURE_MARGIN` (on stackfaq and
    covid-faq-stanford, no such query's top article was changed by the second stage)."""
    top = fused[0][0]
    runner_up = fused[1][0] if len(fused) > 1 else 0.0
    return top >= RERANK_SURE_SCORE and top - runner_up >= RERANK_SURE_MARGIN


def _consume_failure(task: asyncio.Future[list[Hit]]) -> None:
    """An early search nobody took over may fail unseen: its error is read, not reported."""
    if not task.cancelled():
        task.exception()
