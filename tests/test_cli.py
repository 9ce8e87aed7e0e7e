"""The command line as a user meets it: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import load_settings
from tests.conftest import EXAMPLE_FAQ, StubEncoder

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default var/ paths land here
    for name in ("HELPDESK_CONFIG", "HELPDESK_TELEGRAM__TOKEN"):
        monkeypatch.delenv(name, raising=False)


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (None, "config file not found"),
        ("[kb\n", "invalid TOML"),
        ("[kb]\ncolour = 1\n", "unknown key kb.colour"),
        ("[kb]\nanswer_threshold = 2\n", "kb.answer_threshold"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(tmp_path: Path, toml: str | None, expected: str) -> None:
    path = tmp_path / "config.toml"
    if toml is not None:
        path.write_text(toml)
    result = runner.invoke(app, ["--config", str(path), "ask", "hello"])
    assert result.exit_code == 2
    assert expected in one_line_error(result)


def test_run_without_a_token_exits_2() -> None:
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2
    assert "HELPDESK_TELEGRAM__TOKEN" in one_line_error(result)


def test_ask_with_an_empty_question_exits_2() -> None:
    result = runner.invoke(app, ["ask", "   "])
    assert result.exit_code == 2
    assert "empty" in one_line_error(result)


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "helpdesk.db").is_file()


def test_ingest_reports_failures_with_file_and_line_and_keeps_the_rest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "Fine?", "answer": "Yes"}\n{"id": 2, "question": \n')
    result = runner.invoke(app, ["ingest", "--json", str(EXAMPLE_FAQ), str(bad)])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["added"] == 13 and summary["failed"] == 1
    failure = next(f for f in summary["files"] if f["error"])
    assert failure["path"] == str(bad) and failure["line"] == 2

    again = runner.invoke(app, ["ingest", str(EXAMPLE_FAQ), str(bad)])
    assert again.exit_code == 1
    assert f"{bad}:2:" in again.stderr
    assert "added 0, updated 0, unchanged 13, retired 0, skipped 0, failed 1 file(s)" in again.stdout


def test_ask_on_an_empty_kb_says_what_to_do() -> None:
    result = runner.invoke(app, ["ask", "--json", "I lost my password, what now?"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["decision"] == "escalate"
    assert "the knowledge base is empty: add entries with `helpdesk ingest FILE...`" in result.stderr


def test_ask_shows_the_decision_and_the_hits() -> None:
    assert runner.invoke(app, ["ingest", str(EXAMPLE_FAQ)]).exit_code == 0
    result = runner.invoke(app, ["ask", "--json", "I lost my password, what now?"])
    assert result.exit_code == 0, result.output
    assert "empty" not in result.stderr
    answer = json.loads(result.stdout)
    assert answer["decision"] == "answer"
    assert answer["hits"][0]["title"] == "How do I reset my password?"
    assert answer["hits"][0]["score"] >= answer["hits"][1]["score"]
    assert (answer["language"], answer["cross_lingual"], answer["suggest_threshold"]) == ("en", False, 0.5)
    # another language than the KB's: the cross-lingual suggest threshold, said in the output
    czech = runner.invoke(app, ["ask", "Jak si obnovím zapomenuté heslo?"])
    assert czech.exit_code == 0, czech.output
    assert czech.stdout.startswith("suggest: How do I reset my password?"), czech.stdout
    assert "taken to be in cs, not the KB's en: answer from 0.85" in czech.stdout
    assert '"did you mean" from 0.35' in czech.stdout
    # too short to tell: the customer's language, a Telegram tag read as its language
    short = json.loads(runner.invoke(app, ["ask", "--json", "--lang", "pt-BR", "senha"]).stdout)
    assert (short["language"], short["cross_lingual"], short["suggest_threshold"]) == ("pt", True, 0.35)
    # The defaults (kb.onnx_queries, kb.int8_queries): queries on the int8 copy of the export.
    assert len(list(load_settings().kb.onnx_cache.glob("*MiniLM*.int8e.onnx"))) == 1
    with_float = runner.invoke(
        app, ["ask", "--json", "I lost my password, what now?"], env={"HELPDESK_KB__INT8_QUERIES": "false"}
    )
    assert with_float.exit_code == 0, with_float.output
    on_float = json.loads(with_float.stdout)
    float_hits = on_float["hits"]
    # The same answer; the runners-up, far below it, may swap places (the second stage sums
    # three models' scores, each a little apart between int8 and float32).
    assert on_float["decision"] == "answer" and float_hits[0]["title"] == answer["hits"][0]["title"]
    assert abs(float_hits[0]["score"] - answer["hits"][0]["score"]) < 0.03
    scores = [(f["score"], i["score"]) for f, i in zip(float_hits[:3], answer["hits"][:3], strict=True)]
    assert any(f != i for f, i in scores), f"the second run is float32, the first int8: {scores}"


async def _rebuild_with_stub() -> None:
    from bot.runtime import open_services

    async with open_services(load_settings(), encoder=StubEncoder(), sync=False) as services:
        await services.kb.sync(services.sessions, force=True)  # stamps the index with the stub model


def test_an_index_built_with_another_model_is_a_clear_error(tmp_path: Path) -> None:
    assert runner.invoke(app, ["ingest", str(EXAMPLE_FAQ)]).exit_code == 0
    asyncio.run(_rebuild_with_stub())

    result = runner.invoke(app, ["ask", "password"])
    assert result.exit_code == 1
    message = one_line_error(result)
    assert "stub-hashing-64" in message and "helpdesk kb rebuild" in message

    rebuilt = runner.invoke(app, ["kb", "rebuild"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "13 articles" in rebuilt.stdout
    assert runner.invoke(app, ["ask", "password"]).exit_code == 0


def test_eval_reports_the_agreed_keys(tmp_path: Path) -> None:
    data = tmp_path / "mini"
    data.mkdir()
    faqs = [
        {"id": "pw", "question": "How do I reset my password?", "answer": "Use the forgot password link."},
        {"id": "pay", "question": "Which payment methods do you accept?", "answer": "Cards and PayPal."},
    ]
    queries = [
        {"query": "I forgot my password", "faq_id": "pw", "lang": "en"},
        {"query": "can I pay by card", "faq_id": "pay", "faq_ids": ["pay"], "lang": "en"},
        {"query": "what's the weather in Paris", "faq_id": None, "lang": "en"},
    ]
    (data / "faqs.jsonl").write_text("\n".join(json.dumps(f) for f in faqs))
    (data / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    result = runner.invoke(app, ["eval", str(data), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["recall_at_1"] == 1.0 and figures["mrr_at_10"] == 1.0 and figures["recall_at_3"] == 1.0
    assert figures["n_in_scope"] == 2
    assert figures["out_of_scope"] == {"n": 1, "answered_rate": 0.0}
    assert figures["by_lang"]["en"]["n"] == 2
    outcomes = ("answered_right", "answered_wrong", "offered_right", "offered_wrong", "escalated")
    english = {k: v for k, v in figures["by_lang"]["en"].items() if k.endswith("_rate")}
    for shares in (figures["in_scope"], english):
        assert set(shares) == {f"{o}_rate" for o in outcomes}
        assert sum(shares.values()) == pytest.approx(1.0)
    assert figures["thresholds"]["cross_lingual_suggest"] == 0.35
    assert figures["latency_ms"]["p50"] > 0 and figures["latency_ms"]["p95"] >= figures["latency_ms"]["p50"]


def test_eval_without_its_files_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 2
    assert "faqs.jsonl" in one_line_error(result)
