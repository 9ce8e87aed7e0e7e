"""``helpdesk demo``: the whole path on one machine, no token, no network.

Ingests the bundled example FAQ into a throwaway database, starts the sandbox Bot API on
127.0.0.1 and the real bot against it, with an agents' forum supergroup and one agent. Plays a
short conversation as a customer would, ending in a hand-over: the customer asks for a person,
the agent claims the ticket in its topic, answers, closes it, and the customer rates the help.
Prints the chat as the customer saw it and the ticket's topic as the agents saw it.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.text import Text

from bot.app import build_bot, polling
from bot.config import Settings
from bot.errors import HelpdeskError
from bot.pacing import Pacing
from bot.report_html import render_report
from bot.runtime import open_services
from bot.sandbox import BotAPISandbox, Chat, SentMessage, User
from ingest.pipeline import ingest_paths
from kb.analytics import service_report
from kb.encoder import TextEncoder
from kb.gaps import knowledge_gaps

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CUSTOMER = User(1001, "Alex", "Novak", username="alex_n", language_code="en")
AGENT = User(2001, "Maria", "Kovacs", username="maria_support", language_code="en")
FORUM = Chat.forum(-1001000002001, "Helpdesk agents")
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

    # -- the hand-over ----------------------------------------------------------------------------

    async def topic(self) -> int:
        """The ticket's topic, once the card is in it."""
        deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
        while True:
            for thread in self.sandbox.topics(FORUM.id):
                if self.sandbox.messages_to(FORUM.id, thread_id=thread):
                    await self.sandbox.wait_idle(timeout=STEP_TIMEOUT)
                    return thread
            if asyncio.get_running_loop().time() > deadline:
                raise HelpdeskError("the demo's ticket topic did not appear")
            await asyncio.sleep(0.05)

    def _in_topic(self, topic: int) -> int:
        return len(self.sandbox.messages_to(FORUM.id, thread_id=topic))

    async def customer_sends(self, topic: int, text: str | None = None, *, photo: bool = False) -> None:
        """While a person has the ticket, the customer's messages go to the topic."""
        before = self._in_topic(topic)
        if photo:
            self.sandbox.send_photo(chat=CUSTOMER.id, user=CUSTOMER, caption=text)
        else:
            self.sandbox.send_message(chat=CUSTOMER.id, user=CUSTOMER, text=text or "")
        await self.sandbox.wait_for_bot_message(FORUM.id, thread_id=topic, after=before, timeout=STEP_TIMEOUT)
        await self.sandbox.wait_idle(timeout=STEP_TIMEOUT)

    async def agent_presses(self, topic: int, label: str) -> None:
        card = self.sandbox.messages_to(FORUM.id, thread_id=topic)[0]
        answered = self._answered()
        self.sandbox.press_button(chat=FORUM, user=AGENT, message_id=card.message_id, button_text=label)
        await self.sandbox.wait_for(lambda c: c.method == "answerCallbackQuery", count=answered + 1)
        await self.sandbox.wait_idle(timeout=STEP_TIMEOUT)

    async def agent_says(self, topic: int, text: str, *, reaches_customer: bool) -> int:
        before = self._sent()
        self.sandbox.send_message(chat=FORUM, user=AGENT, text=text, message_thread_id=topic)
        message_id = 0
        if reaches_customer:
            reply = await self.sandbox.wait_for_bot_message(CUSTOMER.id, after=before, timeout=STEP_TIMEOUT)
            message_id = reply.message_id
        await self.sandbox.wait_idle(timeout=STEP_TIMEOUT)
        return message_id


async def play(sandbox: BotAPISandbox) -> tuple[int, SentMessage]:
    """The customer's conversation, then the hand-over; returns the ticket's topic and its card
    as it was when the ticket arrived."""
    script = _Script(sandbox)
    await script.say("/start")
    await script.say("How do I reset my password?")
    paraphrase = await script.say("i forgot my pwd and can't log in anymore")
    await script.press(paraphrase, label="👍 Helped")
    suggestions = await script.say("I want to change my account")
    await script.press(suggestions, index=0)
    await script.sticker()
    unknown = await script.say("Can you recommend a good pizza place near your office?")
    await script.press(unknown, index=0)  # "Ask a person"
    topic = await script.topic()
    card = sandbox.messages_to(FORUM.id, thread_id=topic)[0]
    await script.customer_sends(topic, "It's for a team lunch on Friday, about 12 people.")
    await script.customer_sends(topic, "This is the street we're on", photo=True)
    await script.agent_presses(topic, "🙋 Claim")
    await script.agent_says(
        topic, "// not a KB question; answering from the office list", reaches_customer=False
    )
    await script.agent_says(
        topic,
        "Hi Alex, Maria here. For 12 people I'd book Trattoria Da Enzo, two streets from us: "
        "they have a long table and take reservations.",
        reaches_customer=True,
    )
    rating = await script.agent_says(topic, "/close", reaches_customer=True)
    await script.press(rating, label="5 ⭐")
    await script.say("How do I cancel my subscription?")  # the bot answers again
    return topic, card


def print_chat(sandbox: BotAPISandbox, console: Console) -> None:
    console.rule("The chat, as the customer saw it")
    for who, text, buttons in sandbox.chat_transcript(CUSTOMER.id):
        style, name = ("cyan", f"{CUSTOMER.first_name}") if who != "bot" else ("green", "Bot")
        _print_line(console, name, style, text, buttons)


def print_topic(sandbox: BotAPISandbox, console: Console, topic: int, card: SentMessage) -> None:
    """The ticket's topic in the agents' forum: the pinned card (as it arrived), the relayed
    messages, the agent; then the card's lines that changed since."""
    name = sandbox.topics(FORUM.id).get(topic, "")
    console.rule(f"The agents' forum, topic «{name}», as the agents saw it")
    from_bot = list(sandbox.messages_to(FORUM.id, thread_id=topic))
    relayed = {
        copy["message_id"]
        for call in sandbox.calls
        if call.method in ("copyMessage", "copyMessages") and call.ok and call.chat_id == FORUM.id
        for copy in (call.result if isinstance(call.result, list) else [call.result])
    }
    mine = iter(from_bot)
    for who, text, buttons in sandbox.chat_transcript(FORUM.id):
        if text.startswith("[topic created"):
            continue
        if who != "bot":
            _print_line(console, AGENT.first_name, "magenta", text, buttons)
            continue
        message = next(mine)
        if message.message_id == card.message_id:
            labels = tuple(label for row in card.buttons for label in row)
            _print_line(console, "📌 Bot", "green", card.plain_text or "", labels)
        elif message.message_id in relayed:
            _print_line(console, f"{CUSTOMER.first_name} (via the bot)", "cyan", text, buttons)
        else:
            _print_line(console, ("📌 " if message.pinned else "") + "Bot", "green", text, buttons)
    now = sandbox.message(FORUM.id, card.message_id).plain_text or ""
    changed = [line for line in now.splitlines() if line not in (card.plain_text or "").splitlines()]
    if changed:
        console.print(Text("The pinned card now reads: " + " | ".join(changed), style="dim"))
        console.print()


def _print_line(console: Console, name: str, style: str, text: str, buttons: tuple[str, ...]) -> None:
    line = Text(f"{name}: ", style=f"bold {style}")
    line.append(text.strip())
    console.print(line)
    if buttons:
        console.print(Text("   " + "  ".join(f"[ {label} ]" for label in buttons), style="dim"))
    console.print()


def print_knowledge(console: Console, groups: list[dict], figures: dict, report_path: Path | None) -> None:
    """What the conversation taught: the knowledge gaps and the service report."""
    console.rule("What the helpdesk learned (helpdesk gaps, helpdesk report)")
    for group in groups:
        examples = "; ".join(group["examples"])
        answered = f" · an agent answered: {group['agent_answers'][0]}" if group["agent_answers"] else ""
        console.print(
            f"gap, asked by {group['customers']} customer(s): {examples}{answered}", highlight=False
        )
    rate = figures["self_service_rate"]
    console.print(
        f"{figures['conversations']} conversation(s), self-service "
        f"{'-' if rate is None else f'{rate:.0%}'}, {figures['tickets']} ticket(s), "
        f"CSAT {figures['csat']['average'] or '-'}, first response median "
        f"{figures['first_response']['median_s'] or '-'} s",
        highlight=False,
    )
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(render_report(figures, title="Helpdesk report (demo)"), encoding="utf-8")
        console.print(f"HTML report with charts: {report_path.resolve()}", highlight=False)


def demo_settings(settings: Settings, folder: Path, sandbox: BotAPISandbox) -> Settings:
    """``settings`` with a throwaway database and KB in ``folder``, against ``sandbox``."""
    return settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"url": f"sqlite+aiosqlite:///{folder}/demo.db"}),
            # a throwaway KB, but the models' ONNX exports are kept where the configured KB keeps
            # them (var/index/onnx): `helpdesk ingest` after the demo, and the next demo, load
            # them instead of exporting again (~1.5 min here)
            "kb": settings.kb.model_copy(
                update={"index_dir": folder / "index", "onnx_dir": settings.kb.onnx_cache}
            ),
            # the scripted customer types far faster than a person: no slow-down notice
            "security": settings.security.model_copy(update={"flood_burst": 100}),
            "telegram": settings.telegram.model_copy(
                update={
                    "api_url": sandbox.url,
                    "token": SecretStr(sandbox.token),
                    "poll_timeout": 1,
                    "agents_chat_id": FORUM.id,
                    "agents": [AGENT.id],
                }
            ),
        }
    )


async def run_demo(
    settings: Settings,
    console: Console,
    *,
    encoder: TextEncoder | None = None,
    report_path: Path | None = None,
) -> None:
    if not (EXAMPLES / "faq.md").is_file():
        raise HelpdeskError(
            f"the demo needs the example FAQ at {EXAMPLES / 'faq.md'} (run it from a checkout)"
        )
    with tempfile.TemporaryDirectory(prefix="helpdesk-demo-") as tmp:
        async with BotAPISandbox() as sandbox:
            demo = demo_settings(settings, Path(tmp), sandbox)
            sandbox.add_chat(FORUM, admins=[AGENT])
            console.print(f"Sandbox Bot API on {sandbox.url}; loading the model and the example FAQ...")
            async with open_services(demo, encoder=encoder) as services:
                report = await ingest_paths([EXAMPLES], sessions=services.sessions, encoder=services.encoder)
                await services.kb.sync(services.sessions)
                console.print(
                    f"Ingested {EXAMPLES.relative_to(EXAMPLES.parent)}: {report.added} articles "
                    f"(answer at score >= {demo.kb.answer_threshold}, "
                    f"suggest at >= {demo.kb.suggest_threshold})"
                )
                bot = build_bot(demo)
                try:
                    async with polling(services, bot, pacing=Pacing.fast()):
                        topic, card = await play(sandbox)
                finally:
                    await bot.session.close()
                groups = await knowledge_gaps(services.sessions, services.encoder, since_days=1)
                figures = await service_report(services.sessions, since_days=7)
            print_chat(sandbox, console)
            print_topic(sandbox, console, topic, card)
            print_knowledge(console, groups, figures, report_path)
            console.print(
                "Every message, decision and score is stored; the feedback presses, the ticket, the "
                "relayed messages, the agent's note and the rating too. Next: `helpdesk ingest "
                'YOUR_FAQ.md`, then `helpdesk ask "..."`; for agents, see "Agents\' guide" in the README.'
            )
