"""A throwaway knowledge base for measurements: an FAQ file loaded by the normal ingest."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.config import Settings
from bot.errors import HelpdeskError
from bot.runtime import Services, open_services
from ingest.pipeline import IngestOptions, ingest_paths
from kb.encoder import TextEncoder


def reranking_any_batch(settings: Settings) -> Settings:
    """``settings`` whose searches re-rank a batch of any size (``kb.rerank_max_batch`` lifted):
    a measurement's one big ``search_sync`` then ranks each query as it would come alone."""
    return settings.model_copy(update={"kb": settings.kb.model_copy(update={"rerank_max_batch": 10**9})})


@asynccontextmanager
async def throwaway_kb(
    settings: Settings, faqs: Path, *, encoder: TextEncoder | None = None
) -> AsyncIterator[Services]:
    """Services over a temporary database and index holding just ``faqs``; gone on exit."""
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
                [faqs], sessions=services.sessions, encoder=services.encoder, options=options
            )
            if report.failed:
                failure = report.failed[0]
                raise HelpdeskError(f"{failure.path}:{failure.line}: {failure.error}")
            await services.kb.sync(services.sessions)
            yield services
