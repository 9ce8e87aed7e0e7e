"""One pipeline for every format: parse -> normalise -> diff against the KB -> write.

Each source file is its own transaction: a file that fails writes nothing and keeps its
previous state; the other files go on. Unchanged entries (same content hash) cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingest.entry import Entry
from ingest.errors import IngestError, ParseError
from ingest.parsers import SUPPORTED_SUFFIXES, parse_file
from kb import store
from kb.encoder import TextEncoder
from kb.models import Article, ArticleStatus
from kb.texts import content_hash, embedding_items

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FileResult:
    path: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    error: str | None = None
    line: int | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(slots=True)
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def _sum(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files if not f.failed)

    @property
    def added(self) -> int:
        return self._sum("added")

    @property
    def updated(self) -> int:
        return self._sum("updated")

    @property
    def unchanged(self) -> int:
        return self._sum("unchanged")

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.failed]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": len(self.failed),
            "files": [
                {
                    "path": f.path,
                    "added": f.added,
                    "updated": f.updated,
                    "unchanged": f.unchanged,
                    "duplicates": f.duplicates,
                    "error": f.error,
                    "line": f.line,
                }
                for f in self.files
            ],
            "skipped": self.skipped,
        }


@dataclass(frozen=True, slots=True)
class _Planned:
    entry: Entry
    key: str
    language: str
    digest: str


def slugify(text: str, *, limit: int = 80) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "entry"


def derive_key(entry: Entry) -> str:
    """A stable key from the source file's name and the question."""
    return f"{slugify(Path(entry.source_file).stem, limit=40)}/{slugify(entry.question)}"


def collect_files(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Files to ingest (folders walked recursively, sorted) and the ones skipped."""
    files: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for candidate in candidates:
            if candidate.suffix.lower() in SUPPORTED_SUFFIXES or not path.is_dir():
                files.append(candidate)
            else:
                skipped.append(str(candidate))
    return files, skipped


def _plan(entries: Sequence[Entry], default_language: str, result: FileResult) -> list[_Planned]:
    planned: dict[tuple[str, str], _Planned] = {}
    for entry in entries:
        key = entry.key or derive_key(entry)
        language = (entry.lang or default_language).lower()
        digest = content_hash(
            question=entry.question, alt_questions=entry.alt_questions, answer=entry.answer, tags=entry.tags
        )
        if (key, language) in planned:
            result.duplicates += 1
            log.warning(
                "%s: duplicate entry %r (%s); the first one is kept", entry.source_file, key, language
            )
            continue
        planned[(key, language)] = _Planned(entry, key, language, digest)
    return list(planned.values())


async def ingest_file(
    path: Path,
    *,
    sessions: async_sessionmaker[AsyncSession],
    encoder: TextEncoder,
    default_language: str = "en",
    author: str = "ingest",
) -> FileResult:
    result = FileResult(path=str(path))
    try:
        entries = await asyncio.to_thread(parse_file, path)
    except ParseError as exc:
        result.error, result.line = exc.reason, exc.line
        return result
    except IngestError as exc:
        result.error = str(exc)
        return result
    except OSError as exc:
        result.error = exc.strerror or str(exc)
        return result

    planned = _plan(entries, default_language, result)
    async with sessions() as session:
        known = await store.current_hashes(session, keys=[p.key for p in planned])
    todo = [p for p in planned if known.get((p.key, p.language)) != p.digest]
    result.unchanged = len(planned) - len(todo)
    if not todo:
        return result

    plans = [
        embedding_items(question=p.entry.question, alt_questions=p.entry.alt_questions, answer=p.entry.answer)
        for p in todo
    ]
    vectors = await asyncio.to_thread(encoder.encode, [text for plan in plans for _, _, text in plan])
    try:
        async with sessions() as session, session.begin():
            offset = 0
            for item, plan in zip(todo, plans, strict=True):
                is_new, version_id = await _write(session, item, author)
                await store.add_embeddings(
                    session,
                    version_id=version_id,
                    model_id=encoder.model_id,
                    items=plan,
                    vectors=vectors[offset : offset + len(plan)],
                )
                offset += len(plan)
                if is_new:
                    result.added += 1
                else:
                    result.updated += 1
            await store.bump_revision(session)
    except SQLAlchemyError as exc:
        log.exception("ingest of %s failed; nothing of it was written", path)
        result.added = result.updated = 0
        result.error = f"database error: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return result


async def _write(session: AsyncSession, item: _Planned, author: str) -> tuple[bool, int]:
    """Write one planned entry; returns (is new in this language, the new version's id)."""
    entry = item.entry
    article = await store.find_article(session, key=item.key)
    if article is None:
        article = Article(key=item.key, language=item.language, tags=list(entry.tags))
        session.add(article)
        await session.flush()
    else:
        article.status = ArticleStatus.PUBLISHED
        article.tags = list(entry.tags)
    previous = await store.current_version(session, article_id=article.id, language=item.language)
    version = await store.add_version(
        session,
        article=article,
        language=item.language,
        question=entry.question,
        alt_questions=entry.alt_questions,
        answer=entry.answer,
        source_file=entry.source_file,
        source_anchor=entry.source_anchor,
        content_hash=item.digest,
        author=author,
    )
    return previous is None, version.id


async def ingest_paths(
    paths: Iterable[Path | str],
    *,
    sessions: async_sessionmaker[AsyncSession],
    encoder: TextEncoder,
    default_language: str = "en",
    author: str = "ingest",
) -> IngestReport:
    files, skipped = collect_files(Path(p) for p in paths)
    report = IngestReport(skipped=skipped)
    for path in files:
        report.files.append(
            await ingest_file(
                path, sessions=sessions, encoder=encoder, default_language=default_language, author=author
            )
        )
    return report
