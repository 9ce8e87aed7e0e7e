"""One pipeline for every format: parse -> normalise -> diff against the KB -> write.

Each source file is its own transaction: a file that fails writes nothing and keeps its
previous state; the other files go on. Unchanged entries (same content hash) cost one hash
comparison. Entries that vanished from a re-ingested file are retired unless ``keep_missing``.
An entry repeating another source's question and answer word for word is merged into it
(not stored twice) and reported. After the files, the whole live KB is checked for
near-duplicate questions and for the same question answered differently.

A file's transaction holds its entries with the primary model's vectors (each distinct text
encoded once, before the transaction opens): the KB answers from them as soon as it commits.
The secondary (multilingual) model's vectors come after all the files, a batch per transaction
(:mod:`kb.backlog`); with ``backfill=False`` they are left to a running bot or the next ingest.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingest.entry import Entry
from ingest.errors import IngestError, NoEntriesError, ParseError, ParseWarning
from ingest.parsers import SUPPORTED_SUFFIXES, parse_file
from kb import store
from kb.articles import Findings, check_consistency, normalise
from kb.backlog import backfills, backlogs
from kb.encoder import TextEncoder, encode_distinct, primary
from kb.language import base_language, detect_language
from kb.models import Article, ArticleVersion, EmbeddingKind
from kb.texts import content_hash, embedding_items

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class IngestOptions:
    default_language: str = "en"
    author: str = "ingest"
    keep_missing: bool = False
    max_file_bytes: int = 20 * MB
    near_duplicate_threshold: float = 0.88
    detect_languages: bool = True
    # Embed what the secondary (multilingual) model still lacks before returning; False leaves
    # that backlog to a running bot's refresh or the next ingest (see kb.backlog).
    backfill: bool = True


@dataclass(frozen=True, slots=True)
class Merged:
    path: str
    line: int | None
    key: str
    into: str


@dataclass(slots=True)
class FileResult:
    path: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0
    duplicates: int = 0
    merged: list[Merged] = field(default_factory=list)
    error: str | None = None
    line: int | None = None
    no_entries: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def fail(self, reason: str, line: int | None = None) -> FileResult:
        self.added = self.updated = self.retired = 0
        self.merged = []
        self.error, self.line = reason, line
        return self


@dataclass(slots=True)
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)
    backfilled: int = 0  # versions embedded by the secondary models after the files were written
    pending: int = 0  # versions still waiting for them (options.backfill off)

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
    def retired(self) -> int:
        return self._sum("retired")

    @property
    def merged(self) -> list[Merged]:
        return [m for f in self.files for m in f.merged]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.failed]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.retired)

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "retired": self.retired,
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "backfilled": self.backfilled,
            "pending": self.pending,
            "files": [
                {
                    "path": f.path,
                    "added": f.added,
                    "updated": f.updated,
                    "unchanged": f.unchanged,
                    "retired": f.retired,
                    "duplicates": f.duplicates,
                    "error": f.error,
                    "line": f.line,
                    "warnings": f.warnings,
                }
                for f in self.files
            ],
            "skipped_files": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "merged_duplicates": [
                {"path": m.path, "line": m.line, "key": m.key, "into": m.into} for m in self.merged
            ],
            **self.findings.as_dict(),
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


def qualified_keys(entry: Entry) -> tuple[str, str]:
    """Keys for an entry whose :func:`derive_key` another file holds (see :func:`_own_keys`): the
    file's folder and name (``b-faq/...``), then those and a digest of its path."""
    source = Path(entry.source_file)
    question = slugify(entry.question)
    folder = slugify(f"{source.parent.name}-{source.stem}", limit=40)
    digest = hashlib.sha256(str(source.absolute()).encode()).hexdigest()[:8]
    return f"{folder}/{question}", f"{folder}-{digest}/{question}"


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    reason: str


def collect_files(paths: Iterable[Path]) -> tuple[list[Path], list[Skipped], set[Path]]:
    """Files to ingest (folders walked recursively, sorted, symlinked folders not followed,
    so a symlink loop cannot trap the walk), the files skipped for their type, and which of
    the files were found in a folder rather than named."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    walked: set[Path] = set()
    for path in paths:
        path = path.absolute()
        if not path.is_dir():
            files.append(path)
            continue
        for root, dirs, names in os.walk(path, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                candidate = Path(root) / name
                if name.startswith("."):
                    continue
                if candidate.suffix.lower() in SUPPORTED_SUFFIXES:
                    files.append(candidate)
                    walked.add(candidate)
                else:
                    skipped.append(Skipped(str(candidate), "unknown file type"))
    return files, skipped, walked


LANGUAGE_SAMPLE = 40
ONE_LANGUAGE = 0.9  # share of a sample that must agree before the file counts as one language


def _file_language(entries: Sequence[Entry], options: IngestOptions) -> str | None:
    """The language of a file whose undeclared entries all look the same (most files): detected
    on an even sample, so a 10,000-entry file costs 40 detections, not 10,000."""
    undeclared = [e for e in entries if not e.lang]
    if not options.detect_languages or not undeclared:
        return None
    step = max(len(undeclared) // LANGUAGE_SAMPLE, 1)
    votes = Counter(detect_language(f"{e.question}\n{e.answer}") for e in undeclared[::step])
    language, count = votes.most_common(1)[0]
    return language if language and count >= ONE_LANGUAGE * sum(votes.values()) else None


def _language(entry: Entry, options: IngestOptions, file_language: str | None) -> str:
    declared = base_language(entry.lang)  # pt-BR: pt, the code customers' questions are told by
    if declared:
        return declared
    if file_language:
        return file_language
    if options.detect_languages:
        detected = detect_language(f"{entry.question}\n{entry.answer}")
        if detected:
            return detected
    return options.default_language


def _plan(entries: Sequence[Entry], options: IngestOptions, result: FileResult) -> list[_Planned]:
    planned: dict[tuple[str, str], _Planned] = {}
    file_language = _file_language(entries, options)
    for entry in entries:
        key = entry.key or derive_key(entry)
        language = _language(entry, options, file_language)
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


def _read(path: Path, options: IngestOptions, warnings: list[ParseWarning]) -> list[Entry]:
    """Parse one file, refusing empty and oversized ones before reading them."""
    size = path.stat().st_size
    if size == 0:
        raise ParseError(path, None, "empty file")
    if size > options.max_file_bytes:
        raise ParseError(
            path,
            None,
            f"file is {size / MB:.1f} MB; the limit is {options.max_file_bytes / MB:.0f} MB "
            "(ingest.max_file_mb)",
        )
    return parse_file(path, warnings=warnings)


async def ingest_file(
    path: Path,
    *,
    sessions: async_sessionmaker[AsyncSession],
    encoder: TextEncoder,
    options: IngestOptions = IngestOptions(),
) -> FileResult:
    result = FileResult(path=str(path))
    try:
        warnings: list[ParseWarning] = []
        entries = await asyncio.to_thread(_read, path, options, warnings)
        result.warnings = [str(w) for w in warnings]
    except NoEntriesError as exc:
        result.no_entries = True
        return result.fail(exc.reason)
    except ParseError as exc:
        return result.fail(exc.reason, exc.line)
    except IngestError as exc:
        return result.fail(str(exc))
    except OSError as exc:
        return result.fail(exc.strerror or str(exc))

    planned = _plan(entries, options, result)
    async with sessions() as session:
        planned = await _own_keys(session, planned, result)
        known = await store.current_hashes(session, keys=[p.key for p in planned])
        todo = [p for p in planned if known.get((p.key, p.language)) != p.digest]
        todo = await _merge_duplicates(session, todo, known, result)
        missing = [] if options.keep_missing else await _missing(session, str(path), planned)
    result.unchanged = len(planned) - len(todo) - len(result.merged)
    if not todo and not missing:
        return result

    model, answers = primary(encoder)
    plans = [
        embedding_items(
            question=p.entry.question,
            alt_questions=p.entry.alt_questions,
            answer=p.entry.answer,
            answers=answers,
        )
        for p in todo
    ]
    vectors = await asyncio.to_thread(encode_distinct, model, [text for plan in plans for _, _, text in plan])
    try:
        async with sessions() as session, session.begin():
            result.added, result.updated = await _write(
                session, todo, plans, vectors, model_id=model.model_id, author=options.author
            )
            result.retired = await _retire(session, missing)
            await store.bump_revision(session)
    except SQLAlchemyError as exc:
        log.exception("ingest of %s failed; nothing of it was written", path)
        return result.fail(f"database error: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return result


async def _own_keys(session: AsyncSession, planned: list[_Planned], result: FileResult) -> list[_Planned]:
    """A derived key is the file's name and the question, so two files of one name (a faq.md per
    product) give "How do I install it?" one key, and the second file's answer would replace the
    first's. An entry whose derived key another file holds, a file that still exists, is kept
    under :func:`qualified_keys` instead, with a warning (once: a key a file holds stays its).
    A file that is gone has moved: its keys, derived or explicit, go to the file they are found
    in now (so that file's later edits retire them). An editor's explicit keys are theirs to
    share: they are never qualified."""
    owners = await store.current_sources(session, keys=[p.key for p in planned])
    # Only an entry whose derived key another file holds (or held) looks further.
    candidates = {
        id(p): (p.key, *qualified_keys(p.entry))
        for p in planned
        if p.entry.key is None and owners.get((p.key, p.language), p.entry.source_file) != p.entry.source_file
    }
    if candidates:
        further = [k for keys in candidates.values() for k in keys[1:]]
        owners.update(await store.current_sources(session, keys=further))
    gone = functools.cache(_gone)  # one stat per other file, however many of its entries
    chosen: dict[int, _Planned] = {}
    moved: list[tuple[str, str]] = []  # (key, language) whose recorded file is gone: this one's now
    for item in planned:
        keys, source, language = candidates.get(id(item), (item.key,)), item.entry.source_file, item.language

        def free(key: str, source: str = source, language: str = language) -> bool:
            owner = owners.get((key, language))
            return owner is None or owner == source or gone(owner)

        held = [k for k in keys if owners.get((k, language)) == source]
        key = held[0] if held else next((k for k in keys if free(k)), keys[-1])
        owner = owners.get((key, language), source)
        if owner != source and gone(owner):  # not an explicit key another file shares
            moved.append((key, language))
        if key != item.key:
            chosen[id(item)] = replace(item, key=key)
            if not held:
                warning = (
                    f"{source}: {item.entry.question!r} would have the key {item.key}, which an entry "
                    f"of {owners[(item.key, language)]} has; kept as {key}"
                )
                log.warning("%s", warning)
                result.warnings.append(warning)
    if moved:  # every entry of a file names that file
        await store.move_source(session, pairs=moved, source_file=planned[0].entry.source_file)
        await session.commit()
    return [chosen.get(id(p), p) for p in planned]


def _gone(source: str) -> bool:
    return not Path(source).exists()


async def _merge_duplicates(
    session: AsyncSession, todo: list[_Planned], known: dict[tuple[str, str], str], result: FileResult
) -> list[_Planned]:
    """Drop new entries that repeat another article's question and answer word for word."""
    fresh = [p for p in todo if (p.key, p.language) not in known]
    if not fresh:
        return todo
    existing: dict[tuple[str, str, str], str] = {}
    for article, version in await store.live_by_question(
        session, questions=[p.entry.question for p in fresh]
    ):
        existing[(version.language, normalise(version.question), normalise(version.answer))] = article.key
    kept = []
    for item in todo:
        twin = existing.get((item.language, normalise(item.entry.question), normalise(item.entry.answer)))
        if twin is not None and twin != item.key and (item.key, item.language) not in known:
            result.merged.append(Merged(result.path, item.entry.line, item.key, twin))
        else:
            kept.append(item)
    return kept


async def _missing(session: AsyncSession, source_file: str, planned: list[_Planned]) -> list[tuple[int, int]]:
    present = {(p.key, p.language) for p in planned}
    return [
        (article_id, version_id)
        for article_id, key, version_id, language in await store.sources_current(
            session, source_file=source_file
        )
        if (key, language) not in present
    ]


async def _retire(session: AsyncSession, missing: list[tuple[int, int]]) -> int:
    retired = 0
    for article_id, version_id in missing:
        article = await session.get(Article, article_id)
        version = await session.get(ArticleVersion, version_id)
        if article is not None and version is not None and version.is_current:
            await store.retire_version(session, article=article, version=version)
            retired += 1
    return retired


async def _write(
    session: AsyncSession,
    todo: list[_Planned],
    plans: list[list[tuple[EmbeddingKind, int, str]]],
    vectors: np.ndarray,
    *,
    model_id: str,
    author: str,
) -> tuple[int, int]:
    """Write new and changed entries with their vectors (``plans[i]``: what entry ``i`` embeds,
    its rows of ``vectors`` in order); returns (added, updated).

    A few bulk statements per table, whatever the number of entries (a first ingest of
    thousands is common): new articles, then one new current version per entry (the one it
    supersedes, if any, stays in the history), then the vectors.
    """
    ids, created = await _articles(session, todo)
    version_ids, added, updated = await _versions(session, todo, ids, created, author=author)
    rows = []
    offset = 0
    for version_id, plan in zip(version_ids, plans, strict=True):
        rows += store.embedding_rows(
            version_id=version_id, model_id=model_id, items=plan, vectors=vectors[offset : offset + len(plan)]
        )
        offset += len(plan)
    await store.insert_embeddings(session, rows=rows)
    return added, updated


async def _articles(session: AsyncSession, todo: list[_Planned]) -> tuple[dict[str, int], set[str]]:
    """key -> article id for every entry, creating the articles that do not exist yet (language
    and tags from their first entry); and which keys were created."""
    ids = await store.article_ids(session, keys={p.key for p in todo})
    first: dict[str, _Planned] = {}
    for item in todo:
        if item.key not in ids:
            first.setdefault(item.key, item)
    rows = [{"key": p.key, "language": p.language, "tags": list(p.entry.tags)} for p in first.values()]
    ids |= await store.insert_articles(session, rows=rows)
    return ids, set(first)


async def _versions(
    session: AsyncSession, todo: list[_Planned], ids: dict[str, int], created: set[str], *, author: str
) -> tuple[list[int], int, int]:
    """A new current version per entry (existing articles are published again, with the entry's
    tags); returns the version ids in the order of ``todo``, and how many were added / updated."""
    existing = [p for p in todo if p.key not in created]
    state = await store.version_state(session, article_ids={ids[p.key] for p in existing})
    await store.supersede(session, pairs=[(ids[p.key], p.language) for p in existing])
    await store.republish_articles(session, tags={ids[p.key]: p.entry.tags for p in existing})
    added = updated = 0
    rows = []
    for item in todo:
        last, current = state.get((ids[item.key], item.language), (0, False))
        updated += current
        added += not current
        entry = item.entry
        rows.append(
            {
                "article_id": ids[item.key],
                "number": last + 1,
                "language": item.language,
                "question": entry.question,
                "alt_questions": list(entry.alt_questions),
                "answer": entry.answer,
                "source_file": entry.source_file,
                "source_anchor": entry.source_anchor,
                "content_hash": item.digest,
                "author": author,
            }
        )
    return await store.insert_versions(session, rows=rows), added, updated


async def ingest_paths(
    paths: Iterable[Path | str],
    *,
    sessions: async_sessionmaker[AsyncSession],
    encoder: TextEncoder,
    options: IngestOptions = IngestOptions(),
    on_file: Callable[[Path], None] | None = None,
    on_backfill: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest files and folders, then check the whole KB's consistency.

    Each file is written with the primary model's vectors: the KB answers from it as soon as the
    file is committed. The secondary models' vectors follow (``options.backfill``), a batch per
    transaction, ``on_backfill(versions)`` after each: see :mod:`kb.backlog`.
    """
    files, skipped, walked = collect_files(Path(p) for p in paths)
    report = IngestReport(skipped=skipped)
    for path in files:
        if on_file is not None:
            on_file(path)
        result = await ingest_file(path, sessions=sessions, encoder=encoder, options=options)
        if result.no_entries and path in walked:
            # A README.txt or package.json beside the FAQs in a folder: not an FAQ, not a failure.
            report.skipped.append(Skipped(result.path, result.error or "no entries found"))
        else:
            report.files.append(result)
    report.findings = await check_consistency(
        sessions, model_id=encoder.model_id, near_threshold=options.near_duplicate_threshold
    )
    if options.backfill:
        for backfill in backfills(encoder):
            report.backfilled += await backfill.run(sessions, on_batch=on_backfill)
    report.pending = sum(b.pending for b in await backlogs(sessions, encoder))
    return report
