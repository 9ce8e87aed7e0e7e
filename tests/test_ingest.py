"""The ingest pipeline: idempotent, versioned, transactional per file; the index follows."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from bot.runtime import Services
from ingest.pipeline import ingest_paths
from kb.models import Article, ArticleVersion, Embedding, KbState

CSV = "question,answer,alt_questions,key\nHow do I pay?,By card.,Payment options|Can I pay by card,pay\n"


async def count(services: Services, model: type) -> int:
    async with services.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def ingest(services: Services, *paths: Path):
    return await ingest_paths(paths, sessions=services.sessions, encoder=services.encoder)


async def test_reingesting_the_same_file_changes_nothing(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "faq.md"
    doc.write_text("## How do I log in?\n\nUse your email.\n\n## How do I log out?\n\nClick your avatar.\n")
    first = await ingest(services, doc)
    assert (first.added, first.updated, first.unchanged, first.failed) == (2, 0, 0, [])
    revision = services.kb.revision
    second = await ingest(services, doc)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 2)
    assert await count(services, Article) == 2
    assert await count(services, ArticleVersion) == 2
    async with services.sessions() as session:
        assert await session.scalar(select(KbState.revision)) == 1, "no change, no new revision"
    assert services.kb.revision == revision


async def test_a_changed_entry_gets_a_new_version(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "faq.csv"
    doc.write_text(CSV)
    await ingest(services, doc)
    doc.write_text(CSV.replace("By card.", "By card or bank transfer."))
    report = await ingest(services, doc)
    assert (report.added, report.updated) == (0, 1)
    async with services.sessions() as session:
        versions = (await session.scalars(select(ArticleVersion).order_by(ArticleVersion.number))).all()
    assert [(v.number, v.is_current) for v in versions] == [(1, False), (2, True)]
    assert versions[1].answer == "By card or bank transfer."
    assert versions[1].alt_questions == ["Payment options", "Can I pay by card"]


async def test_two_files_of_one_name_keep_their_own_answers(services: Services, tmp_path: Path) -> None:
    """A faq.md per product: the same question in both derives one key; the second file's answer
    must not replace the first's. A file moved elsewhere takes its keys along."""
    a, b = tmp_path / "alpha" / "faq.md", tmp_path / "beta" / "faq.md"
    for doc, name in ((a, "Alpha"), (b, "Beta")):
        doc.parent.mkdir()
        doc.write_text(
            f"## How do I install it?\n\nRun the {name} installer.\n\n## What is {name}?\n\nA tool.\n"
        )
    report = await ingest(services, a, b)
    assert (report.added, report.updated, report.failed) == (4, 0, [])
    [warning] = [w for f in report.files for w in f.warnings]
    assert (
        "faq/how-do-i-install-it" in warning
        and str(a) in warning
        and "beta-faq/how-do-i-install-it" in warning
    )

    async def answers() -> dict[str, str]:
        async with services.sessions() as session:
            rows = await session.execute(
                select(Article.key, ArticleVersion.answer)
                .join(ArticleVersion, ArticleVersion.article_id == Article.id)
                .where(ArticleVersion.is_current.is_(True), Article.key.like("%install%"))
            )
            return dict(rows.all())

    installs = {
        "faq/how-do-i-install-it": "Run the Alpha installer.",
        "beta-faq/how-do-i-install-it": "Run the Beta installer.",
    }
    assert await answers() == installs
    again = await ingest(services, b, a)  # in either order, each file finds its own entries
    assert (again.added, again.updated, again.retired, again.unchanged) == (0, 0, 0, 4)
    assert await answers() == installs

    moved = tmp_path / "docs" / "faq.md"
    moved.parent.mkdir()
    a.rename(moved)  # alpha's file moved
    beta = await ingest(services, b)  # first: its own keys stay its own, though alpha's path is gone
    assert (beta.added, beta.updated, beta.unchanged) == (0, 0, 2)
    assert not [w for f in beta.files for w in f.warnings]
    after = await ingest(services, moved)  # alpha's entries follow it: nothing added
    assert (after.added, after.updated, after.unchanged) == (0, 0, 2)
    assert not [w for f in after.files for w in f.warnings]
    assert await answers() == installs
    assert await count(services, Article) == 4
    moved.write_text("## How do I install it?\n\nRun the Alpha installer.\n")  # an entry dropped
    edited = await ingest(services, moved)
    assert (edited.unchanged, edited.retired) == (1, 1), "the moved file's entries are its own now"


async def test_a_broken_file_writes_nothing_and_others_proceed(services: Services, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV)
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nFine?,Yes.\n   ,An answer without a question\n")
    report = await ingest(services, bad, good)
    assert report.added == 1
    [failure] = report.failed
    assert failure.path == str(bad) and failure.line == 3
    assert "question" in (failure.error or "")
    async with services.sessions() as session:
        keys = (await session.scalars(select(Article.key))).all()
    assert keys == ["pay"], "nothing of the broken file was written"


async def test_folders_are_walked_and_unknown_files_skipped(services: Services, tmp_path: Path) -> None:
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    (tmp_path / "docs" / "deep" / "a.md").write_text("## What is X?\n\nX is a thing.\n")
    (tmp_path / "docs" / "notes.bin").write_bytes(b"\x00\x01")
    report = await ingest(services, tmp_path / "docs")
    assert report.added == 1
    assert [(s.path, s.reason) for s in report.skipped] == [
        (str(tmp_path / "docs" / "notes.bin"), "unknown file type")
    ]


async def test_embeddings_cover_question_alternatives_and_answer(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "faq.csv"
    doc.write_text(CSV)
    await ingest(services, doc)
    async with services.sessions() as session:
        kinds = sorted((await session.scalars(select(Embedding.kind))).all())
    assert [k.value for k in kinds] == ["alternative", "alternative", "answer", "question"]


async def test_the_index_follows_the_database(services: Services, tmp_path: Path) -> None:
    doc = tmp_path / "faq.md"
    doc.write_text("## How do I export my invoices?\n\nGo to Billing and press Export.\n")
    await ingest(services, doc)
    assert await services.kb.sync(services.sessions) is True
    [top, *_] = await services.kb.search("download all my bills")
    assert top.title == "How do I export my invoices?"
    assert await services.kb.sync(services.sessions) is False, "nothing new: no rebuild"
