"""A throwaway knowledge base for measurements: FAQ files loaded by the normal ingest."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from bot.config import Settings
from bot.errors import HelpdeskError
from bot.runtime import Services, open_services
from ingest.pipeline import IngestOptions, ingest_paths
from kb import store
from kb.encoder import TextEncoder
from kb.evaluation import LabelledQuery

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
