"""``helpdesk demo``: the whole path on one machine, no token, no network.

Ingests the bundled example FAQ into a throwaway database, starts the sandbox Bot API on
127.0.0.1 and the real bot against it, plays a short conversation as a customer would, and
prints the chat as the customer saw it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.text import Text

from bot.app import build_bot, polling
from bot.config import Settings
from bot.errors import HelpdeskError
from bot.runtime import open_services
from bot.sandbox import BotAPISandbox, User
from ingest.pipeline import ingest_paths

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CUSTOMER = User(1001, "Alex", "Novak", username="alex_n", language_code="en")
STEP_TIMEOUT = 30.0


class _Script:
    """Plays the customer, step by step, waiting for the bot each time."""

    def __init__(self, sandbox: BotAPISandbox) -> None:
        self.sandbox = sandbox

    def _sent(self) -> int:
        return len(self.sandbox.messages_to(CUSTOMER.id))

    async def say(self, text: str) -> int:
        before = self._sent()
        self.sandbox.send_message(chat=CUSTOMER.id, user=CUSTOMER, text=text)
        reply = await self.sandbox.wait_for_bot_message(CUSTOMER.id, after=before, timeout=STEP_TIMEOUT)
        await self.sandbox.wait_idle(timeout=STEP_TIMEOUT)
        return reply.message_id

    async def sticker(self) -> None:
        before = self._sent()
        self.sandbox.send_sticker(chat=CUSTOMER.id, user=CUSTOMER, emoji="🐱")
        await self.sandbox.wait_for_bot_message(CUSTOMER.id, after=before, timeout=STEP_TIMEOUT)
        await self.sandbox.wait_idle(timeout=STEP_TIMEOUT)

    async def press(self, message_id: int, *, label: str | None = None, index: int = 0) -> None:
        message = self.sandbox.message(CUSTOMER.id, message_id)
        labels = [text for row in message.buttons for text in row]
        self.sandbox.press_button(
            chat=CUSTOMER.id, user=CUSTOMER, message_id=message_id, button_text=label or labels[index]
        )
        await self.sandbox.wait_for(lambda c: c.method == "answerCallbackQuery", count=self._answered() + 1)
        await self.sandbox.wait_idle(timeout=STEP_TIMEOUT)

    def _answered(self) -> int:
        return len(self.sandbox.calls_to("answerCallbackQuery"))


async def play(sandbox: BotAPISandbox) -> None:
    script = _Script(sandbox)
    await script.say("/start")
    await script.say("How do I reset my password?")
    paraphrase = await script.say("i forgot my pwd and can't log in anymore")
    await script.press(paraphrase, label="👍 Helped")
    suggestions = await script.say("change my login details")
    await script.press(suggestions, index=0)
    unknown = await script.say("Can you recommend a good pizza place near your office?")
    await script.press(unknown, index=0)
    await script.sticker()


def print_chat(sandbox: BotAPISandbox, console: Console) -> None:
    console.rule("The chat, as the customer saw it")
    for who, text, buttons in sandbox.chat_transcript(CUSTOMER.id):
        style, name = ("cyan", f"{CUSTOMER.first_name}") if who != "bot" else ("green", "Bot")
        line = Text(f"{name}: ", style=f"bold {style}")
        line.append(text.strip())
        console.print(line)
        if buttons:
            console.print(Text("   " + "  ".join(f"[ {label} ]" for label in buttons), style="dim"))
        console.print()


async def run_demo(settings: Settings, console: Console) -> None:
    if not (EXAMPLES / "faq.md").is_file():
        raise HelpdeskError(
            f"the demo needs the example FAQ at {EXAMPLES / 'faq.md'} (run it from a checkout)"
        )
    with tempfile.TemporaryDirectory(prefix="helpdesk-demo-") as tmp:
        async with BotAPISandbox() as sandbox:
            demo = settings.model_copy(
                update={
                    "database": settings.database.model_copy(
                        update={"url": f"sqlite+aiosqlite:///{tmp}/demo.db"}
                    ),
                    "kb": settings.kb.model_copy(update={"index_dir": Path(tmp) / "index"}),
                    "telegram": settings.telegram.model_copy(
                        update={"api_url": sandbox.url, "token": SecretStr(sandbox.token), "poll_timeout": 1}
                    ),
                }
            )
            console.print(f"Sandbox Bot API on {sandbox.url}; loading the model and the example FAQ...")
            async with open_services(demo) as services:
                report = await ingest_paths([EXAMPLES], sessions=services.sessions, encoder=services.encoder)
                await services.kb.sync(services.sessions)
                console.print(
                    f"Ingested {EXAMPLES.relative_to(EXAMPLES.parent)}: {report.added} articles "
                    f"(answer at score >= {demo.kb.answer_threshold}, "
                    f"suggest at >= {demo.kb.suggest_threshold})"
                )
                bot = build_bot(demo)
                try:
                    async with polling(services, bot):
                        await play(sandbox)
                finally:
                    await bot.session.close()
            print_chat(sandbox, console)
            console.print(
                "Every message, decision and score is stored; the feedback press and the request for a "
                'person too. Next: `helpdesk ingest YOUR_FAQ.md`, then `helpdesk ask "..."`.'
            )
