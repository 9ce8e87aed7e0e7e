"""The Bot API sandbox, driven by real aiogram over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    ChatMemberAdministrator,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)

from bot.sandbox import (
    BotAPISandbox,
    Chat,
    EntityParseError,
    SandboxError,
    SandboxTimeout,
    User,
    parse_entities,
)

ANN = User(501, "Ann", "Lee", username="ann", language_code="en")
BOB = User(502, "Bob", language_code="de")
AGENT = User(900, "Alice", username="alice_agent")
FORUM = Chat.forum(-1001234567890, "Agents")


@pytest.fixture
async def sandbox() -> AsyncIterator[BotAPISandbox]:
    async with BotAPISandbox() as running:
        yield running


@pytest.fixture
async def bot(sandbox: BotAPISandbox) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url))
    client = Bot(sandbox.token, session=session)
    yield client
    await client.session.close()


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton(text=text, callback_data=data) for text, data in pairs]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


# -- formatted text, without a server ------------------------------------------------------------


def test_html_parsing_gives_plain_text_and_entities() -> None:
    text, entities = parse_entities(
        '<b>Hi</b> <a href="https://x.org/?a=1&amp;b=2">link</a> &lt;3 &#128512;', "HTML"
    )
    assert text == "Hi link <3 😀"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 2},
        {"type": "text_link", "offset": 3, "length": 4, "url": "https://x.org/?a=1&b=2"},
    ]


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<br/>line", 'Unsupported start tag "br/" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("<a href=https://x>y</a>", "Unexpected end of name token at byte offset 8"),
    ],
)
def test_html_errors_are_telegrams(source: str, error: str) -> None:
    with pytest.raises(EntityParseError) as raised:
        parse_entities(source, "HTML")
    assert str(raised.value) == error


def test_markdown_v2_needs_escapes() -> None:
    assert parse_entities(r"*Done\.* ok", "MarkdownV2") == (
        "Done. ok",
        [{"type": "bold", "offset": 0, "length": 5}],
    )
    with pytest.raises(EntityParseError, match=r"Character '\.' is reserved"):
        parse_entities("Done.", "MarkdownV2")
    with pytest.raises(EntityParseError, match="Can't find end of Italic entity at byte offset 15"):
        parse_entities("see _snake_case_name", "MarkdownV2")
    with pytest.raises(EntityParseError, match="Can't find end of the entity starting at byte offset 9"):
        parse_entities("hey @user_name", "Markdown")


# -- the bot's side over HTTP --------------------------------------------------------------------


async def test_get_me(bot: Bot, sandbox: BotAPISandbox) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (sandbox.bot_id, "helpdesk_sandbox_bot", True)
    assert sandbox.calls[-1].method == "getMe"


async def test_send_edit_delete(bot: Bot, sandbox: BotAPISandbox) -> None:
    update = sandbox.send_message(chat=ANN, text="hello")
    assert update["message"]["message_id"] == 1
    sent = await bot.send_message(
        ANN.id, "<b>Hi</b> Ann", parse_mode=ParseMode.HTML, reply_markup=keyboard(("Yes", "y"), ("No", "n"))
    )
    assert sent.message_id == 2  # ids are per chat, shared with the customer
    assert sent.text == "Hi Ann" and sent.entities and sent.entities[0].type == "bold"
    [shown] = sandbox.messages_to(ANN.id)
    assert (shown.text, shown.plain_text, shown.parse_mode) == ("<b>Hi</b> Ann", "Hi Ann", "HTML")
    assert shown.buttons == [["Yes", "No"]] and shown.button_data == ["y", "n"]

    edited = await bot.edit_message_text(text="Thanks", chat_id=ANN.id, message_id=sent.message_id)
    assert isinstance(edited, Message) and edited.edit_date is not None
    [shown] = sandbox.messages_to(ANN.id)
    assert (shown.text, shown.reply_markup, shown.edit_count) == ("Thanks", None, 1)  # keyboard dropped
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(text="Thanks", chat_id=ANN.id, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(text="x", chat_id=ANN.id, message_id=99)

    assert await bot.delete_message(ANN.id, sent.message_id)
    assert sandbox.messages_to(ANN.id) == []
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(ANN.id, sent.message_id)
    assert [c.method for c in sandbox.calls_to("editMessageText", ok=False)] == ["editMessageText"] * 2
    assert sandbox.chat_transcript(ANN.id) == [("customer", "hello", ())]


async def test_validation_errors(bot: Bot, sandbox: BotAPISandbox) -> None:
    sandbox.add_chat(Chat.private(ANN))
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(ANN.id, "a" * 4097)
    assert (await bot.send_message(ANN.id, "a" * 4096)).text == "a" * 4096
    long_html = "<b>" + "&lt;" * 4096 + "</b>"  # 16 kB of markup, 4096 characters shown
    assert await bot.send_message(ANN.id, long_html, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="can't parse entities: Unsupported start tag"):
        await bot.send_message(ANN.id, "<div>x</div>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="can't parse entities: Can't find end tag"):
        await bot.send_message(ANN.id, "<b>x", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(ANN.id, "  ")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(777, "hi")
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(ANN.id, "x", reply_markup=keyboard(("Too long", "d" * 65)))
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(ANN.id, "x", reply_parameters=ReplyParameters(message_id=404))
    sandbox.block(ANN.id)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(ANN.id, "still there?")


async def test_unknown_method_is_404(sandbox: BotAPISandbox) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sandbox.url}/bot{sandbox.token}/sendTelepathy", data={"chat_id": "1"}
        ) as resp:
            assert resp.status == 404
            assert await resp.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found: method not found",
            }
    assert sandbox.calls[-1].method == "sendTelepathy" and not sandbox.calls[-1].ok


async def test_document_upload_is_recorded_with_bytes(bot: Bot, sandbox: BotAPISandbox) -> None:
    sandbox.add_chat(Chat.private(ANN))
    file = BufferedInputFile(b"line 1\nline 2\n", filename="notes.txt")
    sent = await bot.send_document(ANN.id, file, caption="<i>your notes</i>", parse_mode="HTML")
    assert sent.document is not None and sent.document.file_name == "notes.txt"
    assert sent.caption == "your notes"
    call = sandbox.calls[-1]
    assert call.method == "sendDocument"
    assert (call.params["document"].filename, call.params["document"].data) == (
        "notes.txt",
        b"line 1\nline 2\n",
    )
    [shown] = sandbox.messages_to(ANN.id)
    assert (shown.content_type, shown.document_name, shown.document_bytes) == (
        "document",
        "notes.txt",
        b"line 1\nline 2\n",
    )
    again = await bot.download(sent.document)
    assert again is not None and again.read() == b"line 1\nline 2\n"


async def test_customer_document_can_be_downloaded(bot: Bot, sandbox: BotAPISandbox) -> None:
    sandbox.send_document(chat=ANN, file_name="faq.md", content=b"# FAQ\n")
    [update] = await bot.get_updates(timeout=1)
    assert update.message is not None and update.message.document is not None
    assert update.message.document.file_name == "faq.md"
    downloaded = await bot.download(update.message.document)
    assert downloaded is not None and downloaded.read() == b"# FAQ\n"


async def test_long_poll_returns_early_and_honours_offset(bot: Bot, sandbox: BotAPISandbox) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()
    started = time.monotonic()
    queued = sandbox.send_message(chat=ANN, text="anyone?")
    updates = await asyncio.wait_for(poll, 4)
    assert time.monotonic() - started < 3, "back before the 5 s poll ran out, even on a loaded machine"
    assert [u.update_id for u in updates] == [queued["update_id"]]
    assert updates[0].message is not None and updates[0].message.text == "anyone?"
    assert sandbox.pending_updates == 1  # delivered, not yet confirmed

    second = sandbox.send_message(chat=BOB, text="hallo")
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [
        queued["update_id"],
        second["update_id"],
    ]
    assert [u.update_id for u in await bot.get_updates(offset=second["update_id"], timeout=0)] == [
        second["update_id"]
    ]
    assert await bot.get_updates(offset=second["update_id"] + 1, timeout=0) == []
    assert sandbox.pending_updates == 0


async def test_fail_next_429_raises_retry_after(bot: Bot, sandbox: BotAPISandbox) -> None:
    sandbox.add_chat(Chat.private(ANN))
    sandbox.fail_next("sendMessage", retry_after=3)
    with pytest.raises(TelegramRetryAfter) as raised:
        await bot.send_message(ANN.id, "first try")
    assert raised.value.retry_after == 3
    assert (await bot.send_message(ANN.id, "second try")).message_id == 1
    assert [(c.ok, c.error_code) for c in sandbox.calls_to("sendMessage", ok=None)] == [
        (False, 429),
        (True, None),
    ]


async def test_forum_topics_and_copies(bot: Bot, sandbox: BotAPISandbox) -> None:
    sandbox.add_chat(FORUM, admins=[AGENT])
    customer = sandbox.send_message(chat=ANN, text="my order is late")
    topic = await bot.create_forum_topic(FORUM.id, "Ann Lee #1")
    assert topic.message_thread_id == 1 and topic.icon_color == 7322096
    copied = await bot.copy_message(
        FORUM.id,
        from_chat_id=ANN.id,
        message_id=customer["message"]["message_id"],
        message_thread_id=topic.message_thread_id,
    )
    assert copied.message_id == 2
    [shown] = sandbox.messages_to(FORUM.id, thread_id=topic.message_thread_id)
    assert (shown.plain_text, shown.thread_id) == ("my order is late", topic.message_thread_id)

    reply = sandbox.send_message(
        chat=FORUM, user=AGENT, text="On its way", message_thread_id=topic.message_thread_id
    )
    message = reply["message"]
    assert message["is_topic_message"] and message["message_thread_id"] == topic.message_thread_id
    assert message["reply_to_message"]["forum_topic_created"]["name"] == "Ann Lee #1"
    assert await bot.close_forum_topic(FORUM.id, topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="TOPIC_NOT_MODIFIED"):
        await bot.close_forum_topic(FORUM.id, topic.message_thread_id)
    assert await bot.delete_forum_topic(FORUM.id, topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(FORUM.id, "late", message_thread_id=topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="the chat is not a forum"):
        await bot.create_forum_topic(ANN.id, "nope")


async def test_other_methods_validate_against_aiogram_types(bot: Bot, sandbox: BotAPISandbox) -> None:
    sandbox.add_chat(FORUM, admins=[AGENT])
    sandbox.send_message(chat=ANN, text="hi")
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert sandbox.pending_updates == 0
    assert (await bot.get_webhook_info()).url == ""
    assert await bot.set_my_commands([BotCommand(command="start", description="Start")])
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    assert await bot.send_chat_action(ANN.id, "typing")
    assert (await bot.get_chat(FORUM.id)).is_forum
    assert isinstance(await bot.get_chat_member(FORUM.id, AGENT.id), ChatMemberAdministrator)
    assert len(await bot.get_chat_administrators(FORUM.id)) == 2
    photo = await bot.send_photo(ANN.id, BufferedInputFile(b"\xff\xd8jpeg", "p.jpg"), caption="pic")
    assert photo.photo and await bot.pin_chat_message(ANN.id, photo.message_id)
    assert await bot.unpin_chat_message(ANN.id)
    assert (await bot.send_voice(ANN.id, BufferedInputFile(b"OggS", "v.ogg"))).voice
    assert (await bot.send_sticker(ANN.id, BufferedInputFile(b"RIFF", "s.webp"))).sticker
    assert (await bot.send_location(ANN.id, 52.5, 13.4)).location
    group = await bot.send_media_group(
        ANN.id,
        [
            InputMediaPhoto(media=BufferedInputFile(b"1", "a.jpg")),
            InputMediaPhoto(media=photo.photo[-1].file_id),
        ],
    )
    assert len({m.media_group_id for m in group}) == 1
    forwarded = await bot.forward_message(FORUM.id, from_chat_id=ANN.id, message_id=1)
    assert forwarded.forward_origin is not None and forwarded.text == "hi"
    assert await bot.log_out() and await bot.close()


async def test_dispatcher_polls_the_sandbox(bot: Bot, sandbox: BotAPISandbox) -> None:
    router = Router()

    @router.message(F.text)
    async def on_text(message: Message) -> None:
        await message.answer(f"echo: {message.text}", reply_markup=keyboard(("Helpful", "vote:up")))

    @router.callback_query(F.data.startswith("vote:"))
    async def on_vote(callback: CallbackQuery) -> None:
        await callback.answer("Thanks!")
        assert isinstance(callback.message, Message)
        await callback.message.edit_text("voted")

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    polling = asyncio.create_task(dispatcher.start_polling(bot, handle_signals=False, polling_timeout=5))
    try:
        sandbox.send_message(chat=ANN, text="hello")
        sandbox.send_message(chat=BOB, text="hallo")
        sandbox.send_sticker(chat=ANN)  # no handler: ignored
        first = await sandbox.wait_for_bot_message(ANN.id)
        assert (first.text, first.buttons) == ("echo: hello", [["Helpful"]])
        assert (await sandbox.wait_for_bot_message(BOB.id)).text == "echo: hallo"

        sandbox.press_button(chat=ANN, message_id=first.message_id, data="vote:up")
        [answer] = await sandbox.wait_for(lambda c: c.method == "answerCallbackQuery")
        assert answer.params["text"] == "Thanks!"
        await sandbox.wait_for(lambda c: c.method == "editMessageText")
        await sandbox.wait_idle(quiet=0.1)
        assert sandbox.pending_updates == 0
        [sent] = [c for c in sandbox.calls_to("sendMessage") if c.params["chat_id"] == ANN.id]
        assert sent.params["text"] == "echo: hello" and sent.params["reply_markup"]["inline_keyboard"]
        assert sandbox.chat_transcript(ANN.id) == [
            ("customer", "hello", ()),
            ("customer", "[sticker 👍]", ()),
            ("bot", "voted", ()),
            ("customer", "[pressed «Helpful»]", ()),
        ]
    finally:
        await dispatcher.stop_polling()
        await asyncio.wait_for(polling, 5)
    assert polling.done() and polling.exception() is None


async def test_waits_time_out_readably(bot: Bot, sandbox: BotAPISandbox) -> None:
    await bot.get_me()
    with pytest.raises(SandboxTimeout, match=r"recent calls:\n  getMe\(\) -> ok"):
        await sandbox.wait_for(lambda c: c.method == "sendMessage", timeout=0.1)
    with pytest.raises(TimeoutError):
        await sandbox.wait_for_bot_message(ANN.id, timeout=0.1)
    sandbox.send_message(chat=ANN, text="nobody polls")
    with pytest.raises(SandboxTimeout, match="1 updates pending"):
        await sandbox.wait_idle(timeout=0.2)
    with pytest.raises(SandboxError, match="no bot message"):
        sandbox.press_button(chat=ANN, message_id=1, data="x")
