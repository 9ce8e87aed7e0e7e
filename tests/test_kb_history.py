"""Editors' guarantees: retirement, rollback, translations, duplicates, bad files, live updates."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.runtime import Services
from bot.sandbox import User
from ingest.pipeline import IngestOptions, ingest_paths
from kb import articles
from kb.errors import ArticleNotFoundError, VersionNotFoundError
from kb.models import Article, ArticleStatus, ArticleVersion
from tests.conftest import BotHarness

THREE = """## How do I log in?

Use your email and password.

## How do I log out?

Click your avatar, then Sign out.

## How do I change my avatar?

Open Profile and upload a picture.
"""


async def ingest(services: Services, *paths: Path, **options: object):
    report = await ingest_paths(
        paths, sessions=services.sessions, encoder=services.encoder, options=IngestOptions(**options)
    )
    await services.kb.sync(services.sessions)
    return report


async def titles(services: Services, question: str) -> list[str]:
    return [hit.title for hit in await services.kb.search(question, k=3)]


async def test_an_entry_removed_from_its_file_is_retired(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "account.md"
    doc.write_text(THREE)
    assert (await ingest(services, doc)).added == 3
    doc.write_text(THREE.split("## How do I change my avatar?")[0])
    report = await ingest(services, doc)
    assert (report.added, report.updated, report.unchanged, report.retired) == (0, 0, 2, 1)
    assert "How do I change my avatar?" not in await titles(services, "change my profile picture")
    async with services.sessions() as session:
        avatar = await session.scalar(
            select(Article).where(Article.key == "account/how-do-i-change-my-avatar")
        )
    assert avatar is not None and avatar.status == ArticleStatus.RETIRED, "kept in history"

    doc.write_text(THREE)
    again = await ingest(services, doc)
    assert (again.added, again.retired) == (1, 0), "a returning entry comes back"
    assert "How do I change my avatar?" in await titles(services, "change my profile picture")


async def test_keep_missing_keeps_vanished_entries(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "account.md"
    doc.write_text(THREE)
    await ingest(services, doc)
    doc.write_text(THREE.split("## How do I log out?")[0])
    report = await ingest(services, doc, keep_missing=True)
    assert report.retired == 0
    assert "How do I log out?" in await titles(services, "sign out")


async def test_rollback_restores_the_old_answer_as_a_new_version(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "account.md"
    doc.write_text(THREE)
    await ingest(services, doc)
    doc.write_text(THREE.replace("Use your email and password.", "Use the magic link we email you."))
    assert (await ingest(services, doc)).updated == 1
    key = "account/how-do-i-log-in"
    number = await articles.rollback(services.sessions, key, 1)
    assert number == 3
    detail = await articles.show_article(services.sessions, key)
    assert [(v.number, v.is_current) for v in detail.versions] == [(1, False), (2, False), (3, True)]
    assert detail.versions[-1].answer == "Use your email and password."
    assert detail.versions[-1].author == "rollback"
    await services.kb.sync(services.sessions)
    [top, *_] = await services.kb.search("how do I log in")
    assert top.version == 3
    with pytest.raises(VersionNotFoundError):
        await articles.rollback(services.sessions, key, 9)
    with pytest.raises(ArticleNotFoundError):
        await articles.rollback(services.sessions, "nope", 1)


async def test_retire_by_key(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "account.md"
    doc.write_text(THREE)
    await ingest(services, doc)
    assert await articles.retire(services.sessions, "account/how-do-i-log-out") is True
    assert await articles.retire(services.sessions, "account/how-do-i-log-out") is False
    await services.kb.sync(services.sessions)
    assert "How do I log out?" not in await titles(services, "sign out")
    listed = {a.key: a.status for a in await articles.list_articles(services.sessions)}
    assert listed["account/how-do-i-log-out"] == "retired"


async def test_translations_share_a_key_and_follow_the_customer(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "faq.jsonl"
    rows = [
        {"key": "reset", "lang": "en", "question": "How do I reset my password?",
         "answer": "Use Forgot password."},
        {"key": "reset", "lang": "de_DE", "question": "Wie setze ich mein Passwort zurück?",
         "answer": "Nutzen Sie „Passwort vergessen“."},
    ]  # fmt: skip
    doc.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    report = await ingest(services, doc)
    assert report.added == 2
    async with services.sessions() as session:
        assert len((await session.scalars(select(Article))).all()) == 1
        versions = (await session.scalars(select(ArticleVersion))).all()
        assert sorted(v.language for v in versions) == ["de", "en"], "de_DE is German, as detected"
    [german] = await services.kb.search("Ich habe mein Passwort vergessen, was nun?", k=1)
    assert german.language == "de" and german.title.startswith("Wie setze")
    for telegram in ("de", "de-at", "DE_ch"):  # Telegram sends IETF tags
        [by_setting] = await services.kb.search("password", k=1, language=telegram)
        assert by_setting.language == "de", telegram
    [english] = await services.kb.search("I forgot my password, what now?", k=1, language="de")
    assert english.language == "en", "the language the message is written in wins"
    [fallback] = await services.kb.search("password", k=1, language="fr")
    assert fallback.language == "en"
    # the suggest threshold follows the same language: written, else Telegram's
    kb = services.kb
    assert kb.cross_lingual("password", language="de-at")
    assert not kb.cross_lingual("password", language="en-GB")
    assert not kb.cross_lingual("password") and not kb.cross_lingual("password", language="")
    assert kb.cross_lingual("Ich habe mein Passwort vergessen, was nun?", language="en")
    assert not kb.cross_lingual("I forgot my password, what now?", language="de")


async def test_consistency_findings(services: Services, tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_text(
        "question,answer\n"
        "How do I export my data?,Go to Settings and press Export.\n"
        "What are your opening hours?,We are open 9 to 5.\n"
    )
    second = tmp_path / "b.csv"
    second.write_text(
        "question,answer\n"
        "How do I export my data?,Go to Settings and press Export.\n"
        "What are your opening hours?,We are open around the clock.\n"
        "How can I export all of my data?,Use the export button.\n"
    )
    report = await ingest(services, first, second)
    [merged] = report.merged
    assert merged.key == "b/how-do-i-export-my-data" and merged.into == "a/how-do-i-export-my-data"
    assert report.added == 4, "the word-for-word duplicate is not stored twice"
    [contradiction] = report.findings.contradictions
    assert contradiction.keys == ("a/what-are-your-opening-hours", "b/what-are-your-opening-hours")
    pairs = {(n.first, n.second) for n in report.findings.near_duplicates}
    assert ("a/how-do-i-export-my-data", "b/how-can-i-export-all-of-my-data") in pairs
    assert report.as_dict()["near_duplicates"]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.md", b"", "empty file"),
        ("garbage.csv", bytes(range(256)) * 8, "cannot be decoded"),
        ("noheader.csv", b"foo,bar\n1,2\n", "missing column"),
        ("nothing.md", b"Just some text without any headings.\n", "no questions found"),
    ],
)
async def test_bad_files_fail_clearly_and_write_nothing(
    services: Services, tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    doc = tmp_path / name
    doc.write_bytes(content)
    report = await ingest(services, doc)
    [failure] = report.failed
    assert failure.error and reason in failure.error
    async with services.sessions() as session:
        assert (await session.scalars(select(Article))).all() == []


async def test_an_oversized_file_is_refused_with_the_limit_named(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "big.csv"
    doc.write_text("question,answer\n" + "Why?,Because.\n" * 100_000)
    report = await ingest(services, doc, max_file_bytes=1024 * 1024)
    [failure] = report.failed
    assert "the limit is 1 MB" in (failure.error or "")


async def test_a_symlink_loop_in_a_folder_is_not_followed(services: Services, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "faq.md").write_text(THREE)
    os.symlink(folder, folder / "loop")
    report = await ingest(services, folder)
    assert report.added == 3 and not report.failed


async def test_a_running_bot_follows_ingest_without_a_restart(harness: BotHarness, tmp_path: Path) -> None:
    customer = User(777, "Eve")
    doc = tmp_path / "news.md"
    doc.write_text(
        "## Do you ship to Iceland?\n\nYes, Iceland is in our EU shipping zone: 3-5 working days.\n"
    )
    services = harness.services
    assert (await ingest_paths([doc], sessions=services.sessions, encoder=services.encoder)).added == 1
    # No sync here: the bot's refresher must notice within 5 s (it checks every kb.refresh_seconds).
    await asyncio.sleep(services.settings.kb.refresh_seconds + 1.0)
    reply = await harness.say(customer, "can you deliver to Iceland?")
    assert "Iceland is in our EU shipping zone" in reply.plain_text

    doc.write_text("## Do we have a cat?\n\nNo.\n")
    assert (await ingest_paths([doc], sessions=services.sessions, encoder=services.encoder)).retired == 1
    await asyncio.sleep(services.settings.kb.refresh_seconds + 1.0)
    gone = await harness.say(customer, "can you deliver to Iceland?")
    assert "Iceland is in our EU shipping zone" not in gone.plain_text
