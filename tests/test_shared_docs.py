"""The real FAQ documents in ../shared/data/docs, as an editor would ingest them (skipped without it)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.runtime import Services
from ingest.pipeline import ingest_paths
from kb.decision import Action, decide
from tests.conftest import shared_path

EXPECTED = {  # entries per document
    "7zip-faq/docs/chm/general/faq.htm": 10,
    "csv-faq/faq_db.csv": 129,
    "electron-faq/docs/faq.md": 10,
    "homebrew-faq/docs/FAQ.md": 28,
    "jhu-covid-faq-jsonl/data/scraping/schema_v0.3/FDA_v0.3.jsonl": 84,
    "jhu-covid-faq-jsonl/data/scraping/schema_v0.3/CanadaPublicHealth_v0.3.jsonl": 27,
    "jhu-covid-faq-jsonl/data/scraping/schema_v0.3/WhoMyth_v0.3.jsonl": 31,
    "rclone-faq/docs/content/faq.md": 18,
}
PARAPHRASES = {
    "is it ok to use 7-zip at my company for free": "Can I use 7-Zip in a commercial organization?",
    "are the covid vaccines safe for me": "Are COVID-19 vaccines safe?",
    "my tray icon vanished after a few minutes in electron": "My app's tray disappeared after a few minutes.",
    "how can I remove brew from my machine completely": "How do I uninstall Homebrew?",
    "does hand sanitizer work against the coronavirus": "Is hand sanitizer effective against COVID-19?",
    "can rclone go through an http proxy": "Can I use rclone with an HTTP proxy?",
}


async def test_every_shared_document_ingests_and_answers(services: Services, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(shared_path("docs"), docs)
    report = await ingest_paths([docs], sessions=services.sessions, encoder=services.encoder)
    added = {str(Path(f.path).relative_to(docs)): f.added for f in report.files if not f.failed}
    for name, count in EXPECTED.items():
        assert added.get(name) == count, (name, added.get(name))
    assert not report.failed
    # the scraper's README is a page of headings, none a question: not a FAQ, skipped with the reason
    skipped = {str(Path(s.path).relative_to(docs)): s.reason for s in report.skipped}
    readme = skipped["jhu-covid-faq-jsonl/data/scraping/schema_v0.2/README_public.md"]
    assert "no heading reads as a question (the first: 'Scraped data')" in readme
    # Two scraped files hold one question whose answer is empty: skipped with a warning naming it.
    warned = [w for f in report.files for w in f.warnings]
    assert len(warned) == 2 and all("question without an answer" in w for w in warned), warned
    await services.kb.sync(services.sessions)
    for question, title in PARAPHRASES.items():
        decision = decide(await services.kb.search(question), services.thresholds)
        assert decision.action is Action.ANSWER and decision.chosen[0].title == title, question

    again = await ingest_paths([docs], sessions=services.sessions, encoder=services.encoder)
    assert (again.added, again.updated, again.retired) == (0, 0, 0)
    assert again.unchanged == report.added

    faq = docs / "homebrew-faq" / "docs" / "FAQ.md"
    text = faq.read_text()
    text = text.replace("run the [uninstall script", "run the [official uninstall script")
    start = text.index("## Why do you compile everything?")
    end = text.index("## Why should I install Homebrew in the default location?")
    faq.write_text(text[:start] + text[end:])
    edited = await ingest_paths([docs], sessions=services.sessions, encoder=services.encoder)
    assert (edited.added, edited.updated, edited.retired) == (0, 1, 1)
