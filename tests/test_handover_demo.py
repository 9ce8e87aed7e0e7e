"""``helpdesk demo`` ends with the hand-over: the card, an agent's reply, the close, the rating."""

from __future__ import annotations

import io

from rich.console import Console

from bot.config import Settings
from bot.demo import demo_settings, run_demo
from kb.encoder import TextEncoder


async def test_the_demo_shows_the_hand_over(settings: Settings, encoder: TextEncoder) -> None:
    out = io.StringIO()
    await run_demo(settings, Console(file=out, width=200, color_system=None), encoder=encoder)
    shown = out.getvalue()
    chat, forum = shown.split("The agents' forum", 1)
    assert "Did you mean one of these?" in chat  # the middle band, shown once
    assert "[pressed «🙋 Ask a person»]" in chat and "request #1" in chat
    assert "Bot: Hi Alex, Maria here." in chat  # the agent's reply reached the customer
    assert "marked request #1 as resolved" in chat and "[pressed «5 ⭐»]" in chat
    assert "You rated our help 5/5" in chat
    assert (
        "Source: How do I cancel my subscription?" in chat.split("You rated our help 5/5")[1]
    )  # the bot is back
    assert "📌 Bot: 🎫 Ticket #1 · waiting for an agent" in forum
    assert "Customer: Alex Novak · @alex_n · id 1001 · language en" in forum
    assert "[ 🙋 Claim ]  [ ✅ Close ]" in forum
    assert "Alex (via the bot): It's for a team lunch" in forum
    assert "Maria: /close" in forum and "resolved by Maria Kovacs" in forum
    assert "rated this ticket 5/5" in forum and "Rating: 5/5" in forum


async def test_the_demo_keeps_the_models_exports_where_the_kb_keeps_them(
    settings: Settings, tmp_path
) -> None:
    """The demo's KB is thrown away, its models' ONNX exports are not: `helpdesk ingest` after
    `make demo` loads them instead of exporting the three models again."""
    from bot.sandbox import BotAPISandbox

    folder = tmp_path / "demo"
    async with BotAPISandbox() as sandbox:
        demo = demo_settings(settings, folder, sandbox)
    assert demo.kb.index_dir == folder / "index"
    assert demo.kb.onnx_cache == settings.kb.onnx_cache
    assert demo.database.url.endswith(f"{folder}/demo.db")
    assert demo.telegram.api_url == sandbox.url
    default = settings.model_copy(update={"kb": settings.kb.model_copy(update={"onnx_dir": None})})
    assert demo_settings(default, folder, sandbox).kb.onnx_cache == default.kb.index_dir / "onnx"
