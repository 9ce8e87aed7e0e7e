"""A throwaway knowledge base for measurements: FAQ files loaded by the normal ingest."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.config import Settings
from bot.errors import HelpdeskError
from bot.runtime import Services, open_services
from ingest.pipeline import IngestOptions, ingest_paths
from kb import store
from kb.encoder import TextEncoder
from kb.evaluation import LabelledQuery
from kb.search import Hit

FAQS = "faqs.jsonl"
DOCUMENTS = "documents.txt"


def eval_sources(directory: Path) -> list[Path]:
    """What a labelled set's KB is built from: its ``faqs.jsonl`` (the shared sets' format), else
    the FAQ documents or folders ``documents.txt`` names, a path per line, relative to the set's
    folder (``#`` starts a comment), as an editor would ingest them."""
    if (directory / FAQS).is_file():
        return [directory / FAQS]
    listing = directory / DOCUMENTS
    if not listing.is_file():
        needs = f"eval needs {FAQS} or {DOCUMENTS}, and queries.jsonl"
        raise HelpdeskError(f"{directory / FAQS} not found ({needs})")
    sources = []
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        path = (directory / name).resolve()
        if not path.exists():
            raise HelpdeskError(f"{listing}:{number}: {name} not found (resolved to {path})")
        sources.append(path)
    if not sources:
        raise HelpdeskError(f"{listing} names no document")
    return sources


async def check_labels(services: Services, queries: Sequence[LabelledQuery], source: Path) -> None:
    """Raise a :class:`HelpdeskError` naming the entry keys the queries (read from ``source``)
    expect that the KB does not hold: a typo in a label would otherwise count as a miss of the
    search."""
    expected = {key for query in queries for key in query.expected}
    async with services.sessions() as session:
        known = await store.article_ids(session, keys=expected)
    unknown = sorted(expected - set(known))
    if unknown:
        shown = ", ".join(repr(key) for key in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise HelpdeskError(f"{source}: no entry of the KB has the key {shown}{more}")


def reranking_any_batch(settings: Settings) -> Settings:
    """``settings`` whose searches re-rank a batch of any size (``kb.rerank_max_batch`` lifted):
    a measurement's one big ``search_sync`` then ranks each query as it would come alone."""
    return settings.model_copy(update={"kb": settings.kb.model_copy(update={"rerank_max_batch": 10**9})})


@asynccontextmanager
async def throwaway_kb(
    settings: Settings, sources: Path | Sequence[Path], *, encoder: TextEncoder | None = None
) -> AsyncIterator[Services]:
    """Services over a temporary database and index holding just ``sources`` (FAQ files or
    folders); gone on exit."""
    with tempfile.TemporaryDirectory(prefix="helpdesk-eval-") as tmp:
        scratch = settings.model_copy(
            update={
                "database": settings.database.model_copy(
                    update={"url": f"sqlite+aiosqlite:///{tmp}/eval.db"}
                ),
                # The ONNX exports stay where the settings keep them: made once, not per run.
                "kb": settings.kb.model_copy(
                    update={"index_dir": Path(tmp) / "index", "onnx_dir": settings.kb.onnx_cache}
                ),
            }
        )
        async with open_services(scratch, encoder=encoder, sync=False) as services:
            options = IngestOptions(default_language=settings.kb.default_language)
            report = await ingest_paths(
                [sources] if isinstance(sources, Path) else list(sources),
                sessions=services.sessions,
                encoder=services.encoder,
                options=options,
            )
            if report.failed:
                failure = report.failed[0]
                raise HelpdeskError(f"{failure.path}:{failure.line}: {failure.error}")
            await services.kb.sync(services.sessions)
            yield services


@dataclass(frozen=True, slots=True)
class Halves:
    """A labelled set's queries searched in two KBs, each holding half of its entries."""

    half: dict[str, int]  # entry key -> the half (0 or 1) holding it
    hits: tuple[list[list[Hit]], list[list[Hit]]]  # per half, each query's hits
    foreign: list[bool]  # per query: written in another language than the KB's

    def own(self, query: LabelledQuery) -> int | None:
        """The half holding every entry ``query`` expects (None: out of scope, or split)."""
        halves = {self.half.get(key) for key in query.expected}
        return halves.pop() if len(halves) == 1 and None not in halves else None

    def held_out(self, queries: Sequence[LabelledQuery]) -> list[list[Hit] | None]:
        """Per query, its hits in the half without its entries: a question on the KB's subject
        that the KB cannot answer (None where there is no such half)."""
        found = []
        for i, query in enumerate(queries):
            mine = self.own(query)
            found.append(None if mine is None else self.hits[1 - mine][i])
        return found


def _write_halves(faqs: Path, scratch: Path) -> tuple[dict[str, int], tuple[Path, Path]]:
    records = [json.loads(line) for line in faqs.read_text("utf-8").splitlines() if line.strip()]
    half = {key: n % 2 for n, key in enumerate(sorted(str(r["id"]) for r in records))}
    paths = (scratch / f"{faqs.parent.name}-half0.jsonl", scratch / f"{faqs.parent.name}-half1.jsonl")
    for h, path in enumerate(paths):
        path.write_text("".join(json.dumps(r) + "\n" for r in records if half[str(r["id"])] == h), "utf-8")
    return half, paths


async def search_halves(
    settings: Settings, faqs: Path, queries: Sequence[LabelledQuery], scratch: Path, *, k: int = 10
) -> Halves:
    """Split the entries of ``faqs`` (a ``faqs.jsonl``) in two halves, alternately by id, load each
    into a throwaway KB (its file written in ``scratch``) and search every query in both. A set
    without unanswerable questions gets them this way: each answerable question, asked of the half
    that lacks its entries."""
    half, paths = await asyncio.to_thread(_write_halves, faqs, scratch)
    texts, languages = [q.text for q in queries], [q.lang for q in queries]
    found: list[list[list[Hit]]] = []
    foreign: list[bool] = []
    for h, path in enumerate(paths):
        async with throwaway_kb(settings, path) as services:
            found.append(await asyncio.to_thread(services.kb.search_sync, texts, k=k, languages=languages))
            if h == 0:  # the question's language and the KB's: the same in both halves
                pairs = zip(texts, languages, strict=True)
                foreign = [services.kb.cross_lingual(text, language=lang) for text, lang in pairs]
    return Halves(half, (found[0], found[1]), foreign)
