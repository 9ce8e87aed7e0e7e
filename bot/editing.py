"""Editors in Telegram: a document sent to the bot is ingested through the normal pipeline."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from aiogram import Bot
from aiogram.types import Document

from bot.runtime import Services
from ingest.pipeline import IngestOptions, IngestReport, ingest_paths
from kb import articles
from kb.files import replace_atomically

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB
_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


class UploadRefused(Exception):
    """The document cannot be ingested as sent (too large, no usable name)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _keep(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/name``, atomically (a half-written upload is never ingested)."""
    return replace_atomically(folder / name, lambda temporary: temporary.write_bytes(data))


@dataclass(slots=True)
class EditorDesk:
    services: Services
    options: IngestOptions
    uploads_dir: Path

    async def ingest_document(self, bot: Bot, document: Document, *, author: str) -> IngestReport:
        limit = min(self.options.max_file_bytes, TELEGRAM_DOWNLOAD_LIMIT)
        if document.file_size is not None and document.file_size > limit:
            raise UploadRefused(f"{document.file_size / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB")
        name = _UNSAFE.sub("_", Path(document.file_name or "upload").name).strip("._") or "upload"
        # Kept under a stable path: re-sending an edited file updates and retires like the CLI does.
        content = await bot.download(document)
        if content is None:
            raise UploadRefused("the file could not be downloaded from Telegram")
        path = await asyncio.to_thread(_keep, self.uploads_dir, name, content.getvalue())
        options = replace(self.options, author=author)
        report = await ingest_paths(
            [path], sessions=self.services.sessions, encoder=self.services.encoder, options=options
        )
        await self.services.kb.sync(self.services.sessions)
        log.info("editor %s ingested %s: %s", author, name, report.as_dict())
        return report

    async def overview(self) -> list[articles.ArticleInfo]:
        return await articles.list_articles(self.services.sessions)
