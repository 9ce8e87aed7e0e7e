"""A local Telegram Bot API sandbox: an aiohttp server on 127.0.0.1 that real aiogram talks to.

The bot under test points its session at the sandbox
(``AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url))``) and long-polls it over HTTP
like the real ``api.telegram.org``; Python code plays the customers and agents and reads back
what the bot did::

    async with BotAPISandbox() as sandbox:
        bot = Bot(sandbox.token, session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url)))
        sandbox.send_message(chat=User(42, "Ann"), text="hello")      # a customer writes
        reply = await sandbox.wait_for_bot_message(42)                 # the bot answers

What it implements
    * URLs as Telegram has them: ``{url}/bot{token}/{method}`` (any token, method names
      case-insensitive) and ``{url}/file/bot{token}/{file_path}`` for downloads; parameters from
      the query string, urlencoded or multipart forms (``attach://`` uploads) or a JSON body.
    * Answers shaped like Telegram's: ``{"ok": true, "result": ...}`` or ``{"ok": false,
      "error_code": N, "description": "...", "parameters": {"retry_after": N}}`` with the HTTP
      status equal to the error code; results validate against aiogram's types.
    * getUpdates long polling with offset confirmation, ``limit``, ``timeout`` and
      ``allowed_updates`` (updates of other kinds are dropped, as Telegram does); a second poller
      ends the first one with 409 Conflict; getUpdates is refused with 409 while a webhook is set.
    * Messages: sendMessage, sendDocument/Photo/Voice/Video/Sticker/Location, sendMediaGroup,
      copyMessage, copyMessages (albums stay albums), forwardMessage,
      editMessageText/Caption/ReplyMarkup, deleteMessage(s),
      pin/unpin, answerCallbackQuery, sendChatAction; forum topics (create, edit, close, reopen,
      delete); getFile; getMe, getChat, getChatMember, getChatAdministrators; commands, menu
      button and webhook bookkeeping; close and logOut.
    * The checks a bot author trips over, with Telegram's descriptions: empty or too long text
      and captions, HTML / MarkdownV2 / Markdown that does not parse (with byte offsets), unknown
      chat, blocked bot, missing message to edit / delete / copy / reply to, "message is not
      modified", callback data over 64 bytes, stale callback queries, unknown forum topics.
    * Message ids per chat, shared by both sides; forum messages carry ``message_thread_id``,
      ``is_topic_message`` and the topic's creation message as ``reply_to_message``.
    * Fault injection: the next calls fail (:meth:`BotAPISandbox.fail_next`), a share of all
      calls fail with 429/500 or lose their connection (:meth:`BotAPISandbox.chaos`), a call is
      held before it is acted on (:meth:`BotAPISandbox.stall`); blocking (:meth:`BotAPISandbox.block`).
    * Webhook delivery: after setWebhook, updates are POSTed to the URL one at a time with the
      ``X-Telegram-Bot-Api-Secret-Token`` header and retried until the bot answers 2xx.
    * The bot's own status in a group (:meth:`BotAPISandbox.set_bot_rights`): without
      ``can_manage_topics`` it cannot create or manage forum topics, without
      ``can_pin_messages`` it cannot pin, as in Telegram.
    * People send albums (:meth:`BotAPISandbox.send_album`: one update per part, one
      ``media_group_id``), delete their messages (:meth:`BotAPISandbox.delete_message`) and forum
      topics (:meth:`BotAPISandbox.delete_topic`); Telegram tells bots nothing, but what is gone
      can no longer be copied, replied to or posted into.

What it does not implement
    Inline mode, payments, polls, business connections, reactions, chat
    administration beyond reading members, rate limits (inject them with ``fail_next``), file
    download from URLs (a URL is stored as an empty file), inline_message_id edits, expiry of
    callback queries and of edit windows, and exact parity of entity offsets for nested Markdown.

Errors: :class:`SandboxError` (a :class:`bot.errors.HelpdeskError`) for misuse of the Python side,
:class:`SandboxTimeout` (also a :class:`TimeoutError`) when a wait runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import mimetypes
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.web_request import FileField

from bot.errors import HelpdeskError

logger = logging.getLogger(__name__)

__all__ = [
    "ApiCall",
    "BotAPISandbox",
    "Chat",
    "EntityParseError",
    "SandboxError",
    "SandboxTimeout",
    "SentMessage",
    "StoredFile",
    "UploadedFile",
    "User",
    "parse_entities",
]

JSON = dict[str, Any]
_Handler = TypeVar("_Handler", bound=Callable[..., Any])

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
DOWNLOAD_LIMIT = 20 * 1024 * 1024
UPLOAD_LIMIT = 50 * 1024 * 1024
DEFAULT_ICON_COLOR = 7322096
_DEFAULT_ALLOWED = frozenset(
    {
        "message", "edited_message", "channel_post", "edited_channel_post", "inline_query",
        "chosen_inline_result", "callback_query", "shipping_query", "pre_checkout_query", "poll",
        "poll_answer", "my_chat_member", "chat_join_request", "business_connection",
        "business_message", "edited_business_message", "deleted_business_messages",
        "purchased_paid_media", "removed_chat_boost", "chat_boost",
    }
)  # fmt: skip
_CHAT_ACTIONS = frozenset(
    {
        "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
        "upload_document", "choose_sticker", "find_location", "record_video_note",
        "upload_video_note",
    }
)  # fmt: skip
_CONTENT_KEYS = (
    "text", "photo", "document", "voice", "video", "sticker", "location", "contact", "animation",
    "audio", "video_note", "venue", "poll", "dice",
)  # fmt: skip
_SERVICE_KEYS = (
    "forum_topic_created", "forum_topic_edited", "forum_topic_closed", "forum_topic_reopened",
    "pinned_message", "new_chat_members", "left_chat_member",
)  # fmt: skip
_BUTTON_ACTIONS = (
    "callback_data", "url", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "callback_game", "pay",
    "copy_text",
)  # fmt: skip
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


# -- errors ----------------------------------------------------------------------------------------


class SandboxError(HelpdeskError):
    """The sandbox was used wrongly from Python (unknown chat, no such button, ...)."""


class SandboxTimeout(SandboxError, TimeoutError):
    """A ``wait_*`` call ran out of time; the message lists the recent Bot API calls."""


class EntityParseError(ValueError):
    """Formatted text does not parse; the message is Telegram's, without the prefix."""


class _ApiError(Exception):
    """A Bot API error answer; raised inside method handlers, turned into the JSON reply."""

    def __init__(self, error_code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad_request(detail: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {detail}")


# -- people ----------------------------------------------------------------------------------------


def _compact(values: JSON) -> JSON:
    return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class User:
    """A Telegram account played by the test: a customer or an agent."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "en"
    is_bot: bool = False

    def to_dict(self) -> JSON:
        return _compact(
            {
                "id": self.id,
                "is_bot": self.is_bot,
                "first_name": self.first_name,
                "last_name": self.last_name,
                "username": self.username,
                "language_code": self.language_code,
            }
        )


@dataclass(frozen=True)
class Chat:
    """A chat; ``Chat.private(user)`` for a customer's chat, ``Chat.forum(...)`` for the agents."""

    id: int
    type: str = "private"
    title: str | None = None
    is_forum: bool = False
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None

    @classmethod
    def private(cls, user: User) -> Chat:
        return cls(
            id=user.id,
            first_name=user.first_name,
            last_name=user.last_name,
            username=user.username,
        )

    @classmethod
    def forum(cls, id: int = -1001000000001, title: str = "Helpdesk agents") -> Chat:
        return cls(id=id, type="supergroup", title=title, is_forum=True)

    def to_dict(self) -> JSON:
        return _compact(
            {
                "id": self.id,
                "type": self.type,
                "title": self.title,
                "username": self.username,
                "first_name": self.first_name,
                "last_name": self.last_name,
                "is_forum": True if self.is_forum else None,
            }
        )


# -- records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request, as the bot uploaded it."""

    filename: str
    data: bytes
    content_type: str | None = None

    def __repr__(self) -> str:
        return f"UploadedFile({self.filename!r}, <{len(self.data)} bytes>)"


@dataclass(frozen=True)
class StoredFile:
    """A file the sandbox knows: uploaded by the bot or sent by a customer; served by getFile."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_name: str | None = None
    mime_type: str | None = None

    def __repr__(self) -> str:
        return f"StoredFile({self.file_path!r}, {self.file_name!r}, <{len(self.data)} bytes>)"


@dataclass(frozen=True)
class ApiCall:
    """One Bot API request the bot made (getUpdates excluded) and how the sandbox answered it."""

    method: str
    params: JSON
    result: Any
    time: float  # time.monotonic() when the request arrived
    ok: bool = True
    error_code: int | None = None
    description: str | None = None

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    def describe(self) -> str:
        shown = ", ".join(f"{key}={_short(value)}" for key, value in self.params.items())
        outcome = "ok" if self.ok else f"{self.error_code} {self.description}"
        return f"{self.method}({shown}) -> {outcome}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class SentMessage:
    """A snapshot of a message in a chat, as it is now (after edits).

    ``text`` and ``caption`` are what the bot sent (markup included, ``parse_mode`` tells which);
    ``plain_text`` / ``plain_caption`` are what the person sees. ``file_*`` describe the attached
    file, if any, with its bytes.
    """

    message_id: int
    chat_id: int
    thread_id: int | None
    content_type: str
    text: str | None
    plain_text: str | None
    parse_mode: str | None
    entities: tuple[JSON, ...]
    caption: str | None
    plain_caption: str | None
    reply_markup: JSON | None
    reply_to_message_id: int | None
    file_id: str | None
    file_name: str | None
    file_bytes: bytes | None
    from_bot: bool
    edit_count: int
    pinned: bool
    deleted: bool
    raw: JSON = field(repr=False)

    @property
    def document_name(self) -> str | None:
        return self.file_name

    @property
    def document_bytes(self) -> bytes | None:
        return self.file_bytes

    @property
    def buttons(self) -> list[list[str]]:
        """Button labels, row by row (inline keyboard or reply keyboard)."""
        return [[_button_label(button) for button in row] for row in _keyboard_rows(self.reply_markup)]

    @property
    def button_data(self) -> list[str]:
        """callback_data of every inline button, in reading order."""
        return [
            button["callback_data"]
            for row in _keyboard_rows(self.reply_markup)
            for button in row
            if isinstance(button, dict) and "callback_data" in button
        ]


def _keyboard_rows(markup: JSON | None) -> list[list[Any]]:
    if not markup:
        return []
    rows = markup.get("inline_keyboard") or markup.get("keyboard") or []
    return [row for row in rows if isinstance(row, list)]


def _button_label(button: Any) -> str:
    return str(button.get("text", "")) if isinstance(button, dict) else str(button)


@dataclass
class _Stored:
    """The sandbox's own record of a message (either side)."""

    chat_id: int
    message_id: int
    from_bot: bool
    data: JSON
    source_text: str | None = None
    source_caption: str | None = None
    parse_mode: str | None = None
    file: StoredFile | None = None
    deleted: bool = False
    edit_count: int = 0
    pinned: bool = False
    reply_keyboard: JSON | None = None  # a reply keyboard / removal / force_reply: not in Message

    @property
    def content_type(self) -> str:
        return _content_type(self.data)

    @property
    def thread_id(self) -> int | None:
        return self.data.get("message_thread_id")

    def snapshot(self) -> SentMessage:
        reply = self.data.get("reply_to_message")
        return SentMessage(
            message_id=self.message_id,
            chat_id=self.chat_id,
            thread_id=self.thread_id,
            content_type=self.content_type,
            text=self.source_text if self.source_text is not None else self.data.get("text"),
            plain_text=self.data.get("text"),
            parse_mode=self.parse_mode,
            entities=tuple(self.data.get("entities") or self.data.get("caption_entities") or ()),
            caption=self.source_caption if self.source_caption is not None else self.data.get("caption"),
            plain_caption=self.data.get("caption"),
            reply_markup=copy.deepcopy(self.data.get("reply_markup") or self.reply_keyboard),
            reply_to_message_id=reply["message_id"] if reply else None,
            file_id=self.file.file_id if self.file else None,
            file_name=self.file.file_name if self.file else None,
            file_bytes=self.file.data if self.file else None,
            from_bot=self.from_bot,
            edit_count=self.edit_count,
            pinned=self.pinned,
            deleted=self.deleted,
            raw=copy.deepcopy(self.data),
        )


def _content_type(data: JSON) -> str:
    for key in (*_CONTENT_KEYS, *_SERVICE_KEYS):
        if key in data:
            return key
    return "unknown"


@dataclass
class _Topic:
    thread_id: int
    name: str
    icon_color: int
    icon_custom_emoji_id: str | None = None
    closed: bool = False
    deleted: bool = False

    def to_dict(self) -> JSON:
        return _compact(
            {
                "message_thread_id": self.thread_id,
                "name": self.name,
                "icon_color": self.icon_color,
                "icon_custom_emoji_id": self.icon_custom_emoji_id,
            }
        )


@dataclass
class _Fault:
    error: _ApiError
    remaining: int


@dataclass
class _Callback:
    chat_id: int
    message_id: int
    label: str
    answered: bool = False


# -- formatted text: HTML, MarkdownV2, Markdown ----------------------------------------------------


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, position: int) -> int:
    return len(text[:position].encode("utf-8"))


_HTML_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
     "code", "pre", "blockquote", "tg-emoji"}
)  # fmt: skip
_HTML_ENTITY_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "span": "spoiler", "tg-spoiler": "spoiler", "code": "code", "pre": "pre",
    "blockquote": "blockquote", "a": "text_link", "tg-emoji": "custom_emoji",
}  # fmt: skip
_HTML_ENTITY_RE = re.compile(r"&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|(lt|gt|amp|quot));")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _decode_html_entity(match: re.Match[str]) -> str | None:
    decimal, hexadecimal, named = match.groups()
    if named:
        return _NAMED_ENTITIES[named]
    code = int(decimal) if decimal else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def _decode_attribute(value: str) -> str:
    return _HTML_ENTITY_RE.sub(lambda m: _decode_html_entity(m) or m.group(0), value)


@dataclass
class _OpenTag:
    name: str
    argument: str
    offset: int  # UTF-16 offset in the output
    byte_offset: int
    language: str | None = None


class _TextBuilder:
    """Output text plus entities, with UTF-16 offsets as Telegram counts them."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.offset = 0
        self.entities: list[JSON] = []

    def emit(self, text: str) -> None:
        self.parts.append(text)
        self.offset += _utf16_len(text)

    def add_entity(self, entity_type: str, start: int, **extra: Any) -> None:
        if self.offset > start:
            self.entities.append(
                {"type": entity_type, "offset": start, "length": self.offset - start, **extra}
            )

    def result(self) -> tuple[str, list[JSON]]:
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), entities


class _HtmlParser:
    """Telegram's HTML subset, with the error messages of TDLib's ``parse_html``."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0
        self.out = _TextBuilder()
        self.open: list[_OpenTag] = []

    def parse(self) -> tuple[str, list[JSON]]:
        while self.pos < len(self.src):
            char = self.src[self.pos]
            if char == "<":
                self._tag()
            elif char == "&":
                self._entity()
            else:
                self.out.emit(char)
                self.pos += 1
        if self.open:
            raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{self.open[-1].name}"')
        return self.out.result()

    def _at(self, position: int) -> int:
        return _byte_offset(self.src, position)

    def _entity(self) -> None:
        match = _HTML_ENTITY_RE.match(self.src, self.pos)
        decoded = _decode_html_entity(match) if match else None
        if match and decoded is not None:
            self.out.emit(decoded)
            self.pos = match.end()
        else:
            self.out.emit("&")
            self.pos += 1

    def _tag(self) -> None:
        if self.src.startswith("</", self.pos):
            self._end_tag()
        else:
            self._start_tag()

    def _skip_spaces(self, i: int) -> int:
        while i < len(self.src) and self.src[i].isspace():
            i += 1
        return i

    def _start_tag(self) -> None:
        begin, i = self.pos, self.pos + 1
        while i < len(self.src) and not self.src[i].isspace() and self.src[i] != ">":
            i += 1
        if i >= len(self.src):
            raise EntityParseError(f"Unclosed start tag at byte offset {self._at(begin)}")
        name = self.src[begin + 1 : i].lower()
        if name not in _HTML_TAGS:
            raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {self._at(begin)}')
        attributes, i = self._attributes(i, name, begin)
        argument = self._argument(name, attributes, begin)
        self.open.append(_OpenTag(name, argument, self.out.offset, self._at(begin)))
        self.pos = i + 1

    def _attributes(self, i: int, tag: str, begin: int) -> tuple[dict[str, str], int]:
        attributes: dict[str, str] = {}
        while True:
            i = self._skip_spaces(i)
            if i >= len(self.src):
                raise EntityParseError(f"Unclosed start tag at byte offset {self._at(begin)}")
            if self.src[i] == ">":
                return attributes, i
            name_start = i
            while i < len(self.src) and not self.src[i].isspace() and self.src[i] not in "=>":
                i += 1
            name = self.src[name_start:i].lower()
            if not name:
                raise EntityParseError(
                    f'Empty attribute name in the tag "{tag}" at byte offset {self._at(begin)}'
                )
            i = self._skip_spaces(i)
            if i < len(self.src) and self.src[i] != "=" and tag == "blockquote" and name == "expandable":
                attributes[name] = ""
                continue
            if i >= len(self.src) or self.src[i] != "=":
                raise EntityParseError(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" '
                    f"at byte offset {self._at(begin)}"
                )
            attributes[name], i = self._attribute_value(self._skip_spaces(i + 1), begin)

    def _attribute_value(self, i: int, begin: int) -> tuple[str, int]:
        if i >= len(self.src):
            raise EntityParseError(f"Unclosed start tag at byte offset {self._at(begin)}")
        quote = self.src[i]
        if quote in "'\"":
            end = self.src.find(quote, i + 1)
            if end < 0:
                raise EntityParseError(f"Unclosed end of attribute value at byte offset {self._at(i)}")
            return _decode_attribute(self.src[i + 1 : end]), end + 1
        start = i
        while i < len(self.src) and (self.src[i].isalnum() or self.src[i] in ".-"):
            i += 1
        if i >= len(self.src) or not (self.src[i].isspace() or self.src[i] == ">"):
            raise EntityParseError(f"Unexpected end of name token at byte offset {self._at(start)}")
        return self.src[start:i].lower(), i

    def _argument(self, tag: str, attributes: dict[str, str], begin: int) -> str:
        if tag == "a":
            return attributes.get("href", "")
        if tag == "code":
            css = attributes.get("class", "")
            return css.removeprefix("language-") if css.startswith("language-") else ""
        if tag == "span":
            if attributes.get("class") != "tg-spoiler":
                raise EntityParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {self._at(begin)}'
                )
            return ""
        if tag == "tg-emoji":
            if not attributes.get("emoji-id"):
                raise EntityParseError(
                    f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {self._at(begin)}'
                )
            return attributes["emoji-id"]
        if tag == "blockquote":
            return "expandable" if "expandable" in attributes else ""
        return ""

    def _end_tag(self) -> None:
        begin = self.pos
        if not self.open:
            raise EntityParseError(f"Unexpected end tag at byte offset {self._at(begin)}")
        i = begin + 2
        while i < len(self.src) and not self.src[i].isspace() and self.src[i] != ">":
            i += 1
        name = self.src[begin + 2 : i].lower()
        i = self._skip_spaces(i)
        if i >= len(self.src) or self.src[i] != ">":
            raise EntityParseError(f"Unclosed end tag at byte offset {self._at(begin)}")
        tag = self.open.pop()
        if name and name != tag.name:
            raise EntityParseError(
                f'Unmatched end tag at byte offset {self._at(begin)}, expected "</{tag.name}>", '
                f'found "</{name}>"'
            )
        self._close(tag)
        self.pos = i + 1

    def _close(self, tag: _OpenTag) -> None:
        parent = self.open[-1] if self.open else None
        if tag.name == "code" and tag.argument and parent is not None and parent.name == "pre":
            parent.language = tag.argument
            return
        entity_type = _HTML_ENTITY_TYPES[tag.name]
        extra: JSON = {}
        if tag.name == "a":
            if not tag.argument:
                return
            extra["url"] = tag.argument
        elif tag.name == "pre" and tag.language:
            extra["language"] = tag.language
        elif tag.name == "tg-emoji":
            extra["custom_emoji_id"] = tag.argument
        elif tag.name == "blockquote" and tag.argument:
            entity_type = "expandable_blockquote"
        self.out.add_entity(entity_type, tag.offset, **extra)


_MDV2_RESERVED = "_*[]()~`>#+-=|{}.!"
_MDV2_NAMES = {
    "bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
    "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}  # fmt: skip


class _MarkdownV2Parser:
    """Telegram's MarkdownV2, after TDLib's ``parse_markdown_v2`` (blockquote markers accepted)."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0
        self.out = _TextBuilder()
        self.open: list[_OpenTag] = []

    def _peek(self, offset: int) -> str:
        index = self.pos + offset
        return self.src[index] if index < len(self.src) else ""

    def parse(self) -> tuple[str, list[JSON]]:
        while self.pos < len(self.src):
            char = self.src[self.pos]
            if char == "\\" and self._peek(1) and 0 < ord(self._peek(1)) <= 126:
                self.out.emit(self._peek(1))
                self.pos += 2
            elif char not in _MDV2_RESERVED:
                self.out.emit(char)
                self.pos += 1
            elif self.open and self.open[-1].name in ("code", "pre") and char != "`":
                self.out.emit(char)
                self.pos += 1
            elif char == ">" and (self.pos == 0 or self.src[self.pos - 1] == "\n"):
                self.pos += 1  # blockquote marker
            elif self._ends_open_entity(char):
                self._close()
            else:
                self._open(char)
        if self.open:
            tag = self.open[-1]
            raise EntityParseError(
                f"Can't find end of {_MDV2_NAMES[tag.name]} entity at byte offset {tag.byte_offset}"
            )
        return self.out.result()

    def _ends_open_entity(self, char: str) -> bool:
        if not self.open:
            return False
        name = self.open[-1].name
        return {
            "bold": char == "*",
            "italic": char == "_" and self._peek(1) != "_",
            "underline": char == "_" and self._peek(1) == "_",
            "strikethrough": char == "~",
            "spoiler": char == "|" and self._peek(1) == "|",
            "code": char == "`",
            "pre": char == "`" and self._peek(1) == "`" and self._peek(2) == "`",
            "text_link": char == "]",
            "custom_emoji": char == "]",
        }[name]

    def _reserved(self, char: str) -> EntityParseError:
        return EntityParseError(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")

    def _open(self, char: str) -> None:
        begin = _byte_offset(self.src, self.pos)
        step, name = 1, ""
        if char == "_":
            name, step = ("underline", 2) if self._peek(1) == "_" else ("italic", 1)
        elif char in "*~[":
            name = {"*": "bold", "~": "strikethrough", "[": "text_link"}[char]
        elif char == "|" and self._peek(1) == "|":
            name, step = "spoiler", 2
        elif char == "!" and self._peek(1) == "[":
            name, step = "custom_emoji", 2
        elif char == "`" and self._peek(1) == "`" and self._peek(2) == "`":
            self._open_pre(begin)
            return
        elif char == "`":
            name = "code"
        else:
            raise self._reserved(char)
        self.open.append(_OpenTag(name, "", self.out.offset, begin))
        self.pos += step

    def _open_pre(self, begin: int) -> None:
        self.pos += 3
        newline = self.src.find("\n", self.pos)
        language = ""
        if newline >= 0 and not any(c.isspace() for c in self.src[self.pos : newline]):
            language = self.src[self.pos : newline]
            self.pos = newline + 1
        self.open.append(_OpenTag("pre", "", self.out.offset, begin, language or None))

    def _close(self) -> None:
        tag = self.open.pop()
        self.pos += {"underline": 2, "spoiler": 2, "pre": 3}.get(tag.name, 1)
        extra: JSON = {}
        if tag.name in ("text_link", "custom_emoji"):
            target = self._link_target(tag)
            if target is None:
                return
            extra = {"url": target} if tag.name == "text_link" else {"custom_emoji_id": target}
        elif tag.name == "pre" and tag.language:
            extra["language"] = tag.language
        self.out.add_entity(tag.name, tag.offset, **extra)

    def _link_target(self, tag: _OpenTag) -> str | None:
        if self._peek(0) != "(":
            if tag.name == "custom_emoji":
                raise EntityParseError(
                    f"Custom emoji entity must contain a URL at byte offset {tag.byte_offset}"
                )
            return None
        self.pos += 1
        start, target = self.pos, []
        while self.pos < len(self.src) and self.src[self.pos] != ")":
            if self.src[self.pos] == "\\" and self._peek(1):
                target.append(self._peek(1))
                self.pos += 2
                continue
            target.append(self.src[self.pos])
            self.pos += 1
        if self.pos >= len(self.src):
            raise EntityParseError(f"Can't find end of a URL at byte offset {_byte_offset(self.src, start)}")
        self.pos += 1
        return "".join(target)


def _parse_markdown_legacy(source: str) -> tuple[str, list[JSON]]:
    """Telegram's legacy Markdown: *bold* _italic_ `code` ```pre``` [text](url)."""
    out, i = _TextBuilder(), 0
    while i < len(source):
        char = source[i]
        if char == "\\" and source[i + 1 : i + 2] in ("_", "*", "`", "["):
            out.emit(source[i + 1])
            i += 2
            continue
        if char not in "_*`[":
            out.emit(char)
            i += 1
            continue
        i = _legacy_entity(source, i, out)
    return out.result()


def _legacy_entity(source: str, begin: int, out: _TextBuilder) -> int:
    char = source[begin]
    is_pre = source.startswith("```", begin)
    end_marker = "```" if is_pre else {"[": "]"}.get(char, char)
    start = begin + len(end_marker) if is_pre else begin + 1
    end = source.find(end_marker, start)
    if end < 0:
        raise EntityParseError(
            f"Can't find end of the entity starting at byte offset {_byte_offset(source, begin)}"
        )
    offset = out.offset
    out.emit(source[start:end])
    after = end + len(end_marker)
    if char == "[":
        if source.startswith("(", after) and (close := source.find(")", after)) >= 0:
            out.add_entity("text_link", offset, url=source[after + 1 : close])
            return close + 1
        return after
    kind = "pre" if is_pre else {"*": "bold", "_": "italic", "`": "code"}[char]
    out.add_entity(kind, offset)
    return after


def parse_entities(text: str, parse_mode: str | None) -> tuple[str, list[JSON]]:
    """Text and entities as Telegram would store them; raises :class:`EntityParseError`."""
    mode = (parse_mode or "").lower()
    if mode == "html":
        return _HtmlParser(text).parse()
    if mode == "markdownv2":
        return _MarkdownV2Parser(text).parse()
    if mode == "markdown":
        return _parse_markdown_legacy(text)
    if mode:
        raise _bad_request(f"unsupported parse_mode {parse_mode!r}")
    return text, []


def _trim(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Telegram strips leading and trailing whitespace; entities move and shrink with the text."""
    stripped = text.strip()
    shift = _utf16_len(text[: len(text) - len(text.lstrip())])
    total = _utf16_len(stripped)
    trimmed = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return stripped, trimmed


_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]+)?")


def _command_entities(text: str) -> list[JSON]:
    match = _COMMAND_RE.match(text)
    return [{"type": "bot_command", "offset": 0, "length": match.end()}] if match else []


# -- request parameters --------------------------------------------------------------------------

_INT_KEYS = frozenset(
    {
        "chat_id", "from_chat_id", "message_id", "message_thread_id", "reply_to_message_id",
        "offset", "limit", "timeout", "user_id", "duration", "width", "height", "icon_color",
        "cache_time", "live_period", "heading", "proximity_alert_radius", "max_connections",
        "length",
    }
)  # fmt: skip
_FLOAT_KEYS = frozenset({"latitude", "longitude", "horizontal_accuracy"})
_BOOL_KEYS = frozenset(
    {
        "disable_notification", "protect_content", "show_alert", "disable_web_page_preview",
        "allow_sending_without_reply", "drop_pending_updates", "has_spoiler",
        "disable_content_type_detection", "supports_streaming", "allow_paid_broadcast",
        "show_caption_above_media", "remove_caption", "only_if_banned", "revoke_messages",
    }
)  # fmt: skip
_JSON_KEYS = frozenset(
    {
        "reply_markup", "reply_parameters", "link_preview_options", "entities", "caption_entities",
        "allowed_updates", "commands", "scope", "menu_button", "media", "message_ids",
    }
)  # fmt: skip


def _coerce(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if key in _JSON_KEYS:
            return json.loads(value)
        if key in _INT_KEYS:
            return value if key == "chat_id" and value.startswith("@") else int(value)
        if key in _FLOAT_KEYS:
            return float(value)
    except ValueError as exc:
        raise _bad_request(f"can't parse parameter {key}") from exc
    if key in _BOOL_KEYS:
        return value.lower() in ("true", "1")
    return value


def _resolve_attachments(params: JSON) -> JSON:
    """Replace ``attach://name`` references by the uploaded parts they name."""
    files = {key: value for key, value in params.items() if isinstance(value, UploadedFile)}
    used: set[str] = set()

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("attach://"):
            name = value.removeprefix("attach://")
            if name not in files:
                raise _bad_request(f"file {name!r} referenced by attach:// is missing")
            used.add(name)
            return files[name]
        return value

    resolved = {key: resolve(value) for key, value in params.items()}
    if isinstance(resolved.get("media"), list):
        resolved["media"] = [
            {**item, "media": resolve(item.get("media"))} if isinstance(item, dict) else item
            for item in resolved["media"]
        ]
    return {key: value for key, value in resolved.items() if key not in used}


class _Params:
    """Typed access to a request's parameters, failing the way Telegram does."""

    def __init__(self, values: JSON) -> None:
        self.values = values

    def get(self, key: str, default: Any = None) -> Any:
        value = self.values.get(key)
        return default if value is None else value

    def require(self, key: str, message: str | None = None) -> Any:
        value = self.values.get(key)
        if value is None or value == "":
            raise _bad_request(message or f"{key} is empty")
        return value

    def number(self, key: str) -> int:
        value = self.require(key)
        if not isinstance(value, int):
            raise _bad_request(f"invalid {key} specified")
        return value

    def opt_number(self, key: str) -> int | None:
        value = self.values.get(key)
        if value is not None and not isinstance(value, int):
            raise _bad_request(f"invalid {key} specified")
        return value


async def _read_params(request: web.Request) -> JSON:
    raw: JSON = dict(request.query)
    if request.body_exists:
        if request.content_type == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise _bad_request("JSON object expected")
            raw.update(body)
        else:
            form = await request.post()
            for key, value in form.items():
                raw[key] = _form_value(value)
    return _resolve_attachments({key: _coerce(key, value) for key, value in raw.items()})


def _form_value(value: str | bytes | FileField) -> str | UploadedFile:
    if isinstance(value, FileField):
        return UploadedFile(value.filename, value.file.read(), value.content_type)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


# -- the registry of Bot API methods ----------------------------------------------------------------

_API_METHODS: dict[str, tuple[str, str]] = {}  # lower-case name -> (Telegram's name, attribute)


def _api(name: str) -> Callable[[_Handler], _Handler]:
    def register(handler: _Handler) -> _Handler:
        _API_METHODS[name.lower()] = (name, handler.__name__)
        return handler

    return register


def _json_response(body: JSON, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda obj: json.dumps(obj, ensure_ascii=False))


@dataclass
class _Chaos:
    failures: float
    drop_rate: float
    methods: frozenset[str] | None
    retry_after: int
    rng: random.Random

    def _applies(self, method: str) -> bool:
        return self.methods is None or method.lower() in self.methods

    def failure(self, method: str) -> _ApiError | None:
        if not self._applies(method) or self.rng.random() >= self.failures:
            return None
        if self.rng.random() < 0.5:
            return _ApiError(429, _default_description(429, self.retry_after), retry_after=self.retry_after)
        return _ApiError(500, _default_description(500, None))

    def drops(self, method: str) -> bool:
        return self._applies(method) and self.rng.random() < self.drop_rate


@dataclass
class _Stall:
    reached: asyncio.Event
    release: asyncio.Event


def _default_description(error_code: int, retry_after: int | None) -> str:
    if error_code == 429:
        return f"Too Many Requests: retry after {retry_after or 1}"
    return {
        400: "Bad Request: injected failure",
        403: "Forbidden: bot was blocked by the user",
        409: "Conflict: terminated by other getUpdates request",
        500: "Internal Server Error",
        502: "Bad Gateway",
        504: "Gateway Timeout",
    }.get(error_code, "Error")


# -- the sandbox ------------------------------------------------------------------------------------


class BotAPISandbox:
    """A fake ``api.telegram.org`` for one bot, plus the people that talk to it."""

    def __init__(
        self,
        *,
        bot_id: int = 100000001,
        bot_username: str = "helpdesk_sandbox_bot",
        host: str = "127.0.0.1",
        port: int = 0,
        bot_first_name: str = "Helpdesk",
    ) -> None:
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.host = host
        self.port = port
        self.url = ""
        self.token = f"{bot_id}:SANDBOX{secrets.token_hex(14)}"
        self.calls: list[ApiCall] = []
        self.updates: list[JSON] = []  # every update ever queued, in order
        self.webhook_url = ""
        self.webhook_retry = 0.2  # seconds before a failed webhook delivery is tried again
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.menu_buttons: dict[int | None, JSON] = {}
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._queue: deque[JSON] = deque()
        self._next_update_id = 1
        self._allowed = _DEFAULT_ALLOWED
        self._poll_generation = 0
        self._changed = asyncio.Event()
        self._last_activity = time.monotonic()
        self._chats: dict[int, Chat] = {}
        self._users: dict[int, User] = {}
        self._admins: dict[int, list[User]] = {}
        self._bot_rights: dict[int, JSON] = {}  # chat -> the bot's ChatMember, when not a full admin
        self._blocked: set[int] = set()
        self._last_message_id: dict[int, int] = {}
        self._messages: dict[tuple[int, int], _Stored] = {}
        self._bot_order: dict[int, list[int]] = {}
        self._log: dict[int, list[tuple[str, Any]]] = {}
        self._topics: dict[tuple[int, int], _Topic] = {}
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._callbacks: dict[str, _Callback] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._chaos: _Chaos | None = None
        self._stalls: dict[str, list[_Stall]] = {}
        self._webhook_secret = ""
        self._webhook_task: asyncio.Task[None] | None = None
        self.webhook_deliveries = 0  # webhook POSTs made (answered or not)
        self._counter = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the server; ``url`` is set once this returns."""
        app = web.Application(client_max_size=UPLOAD_LIMIT)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])
        self.url = f"http://{self.host}:{self.port}"
        self._closing = False
        logger.info("Bot API sandbox listening on %s", self.url)

    async def stop(self) -> None:
        """Answer pending long polls with no updates and close the server."""
        self._closing = True
        self._bump()
        await self._stop_webhook()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        logger.info("Bot API sandbox stopped")

    async def __aenter__(self) -> BotAPISandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _bump(self, *, activity: bool = True) -> None:
        """Wake everything waiting for a change (long polls and ``wait_*`` calls)."""
        if activity:
            self._last_activity = time.monotonic()
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait_change(self, deadline: float) -> bool:
        """Wait for the next change until ``deadline`` (monotonic); False when time ran out."""
        event = self._changed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await event.wait()
        except TimeoutError:
            return False
        return True

    # -- HTTP -----------------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        requested = request.match_info["method"]
        name, attribute = _API_METHODS.get(requested.lower(), (requested, ""))
        params: JSON = {}
        try:
            params = await _read_params(request)
            if not attribute:
                logger.warning("Bot API sandbox: unsupported method %s", requested)
                raise _ApiError(404, "Not Found: method not found")
            self._inject_fault(name)
            if self._chaos is not None and name != "getUpdates" and self._chaos.drops(name):
                self._record(ApiCall(name, params, None, started, False, 0, "connection dropped (chaos)"))
                if request.transport is not None:
                    request.transport.abort()  # the bot sees a network error; nothing was done
                raise web.HTTPServiceUnavailable()
            stall = self._take_stall(name)
            if stall is not None:
                stall.reached.set()
                await stall.release.wait()
                if request.transport is None or request.transport.is_closing():
                    self._record(ApiCall(name, params, None, started, False, 0, "caller gone while held"))
                    raise web.HTTPServiceUnavailable()  # the bot went away: nothing was done
            result = getattr(self, attribute)(_Params(params))
            if asyncio.iscoroutine(result):
                result = await result
        except _ApiError as error:
            self._record(ApiCall(name, params, None, started, False, error.error_code, error.description))
            return _json_response(error.body(), status=error.error_code)
        self._record(ApiCall(name, params, result, started))
        return _json_response({"ok": True, "result": result})

    def _record(self, call: ApiCall) -> None:
        if call.method == "getUpdates":
            return
        logger.debug("Bot API sandbox: %s", call.describe())
        self.calls.append(call)
        self._bump()

    async def _handle_file(self, request: web.Request) -> web.Response:
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            return _json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        self._bump()
        return web.Response(body=stored.data, content_type=stored.mime_type or "application/octet-stream")

    # -- fault injection ------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = 1,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` ("*" = any but getUpdates) with an error.

        ``retry_after`` is sent only with 429 (aiogram raises TelegramRetryAfter whenever it is
        present); ``description`` defaults to Telegram's wording for the code.
        """
        retry = retry_after if error_code == 429 else None
        error = _ApiError(
            error_code, description or _default_description(error_code, retry), retry_after=retry
        )
        self._faults.setdefault(method.lower(), deque()).append(_Fault(error, times))

    def _inject_fault(self, method: str) -> None:
        if self._chaos is not None and method != "getUpdates":
            error = self._chaos.failure(method)
            if error is not None:
                raise error
        for key in (method.lower(), "*"):
            if key == "*" and method == "getUpdates":
                continue
            faults = self._faults.get(key)
            if faults:
                fault = faults[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    faults.popleft()
                raise fault.error

    def chaos(
        self,
        *,
        failures: float = 0.1,
        drops: float = 0.01,
        methods: Iterable[str] | None = None,
        retry_after: int = 1,
        seed: int = 0,
    ) -> None:
        """From now on, a share ``failures`` of the bot's calls (``methods``, default: every call
        but getUpdates) fail with 429 (``retry_after``) or 500, half each, and a share ``drops``
        lose their connection before the sandbox acts on them. ``failures=0, drops=0`` ends it."""
        if not failures and not drops:
            self._chaos = None
            return
        chosen = frozenset(m.lower() for m in methods) if methods is not None else None
        self._chaos = _Chaos(failures, drops, chosen, retry_after, random.Random(seed))

    def stall(self, method: str) -> _Stall:
        """Hold the next call of ``method`` before the sandbox acts on it: ``await
        stall.reached.wait()`` to know it arrived, ``stall.release.set()`` to let it through (a
        test may kill the bot in between: Telegram never saw the call)."""
        stall = _Stall(asyncio.Event(), asyncio.Event())
        self._stalls.setdefault(method.lower(), []).append(stall)
        return stall

    def _take_stall(self, method: str) -> _Stall | None:
        waiting = self._stalls.get(method.lower())
        return waiting.pop(0) if waiting else None

    def block(self, chat_id: int, blocked: bool = True) -> None:
        """The customer blocks (or unblocks) the bot: sends into the chat fail with 403."""
        if blocked:
            self._blocked.add(chat_id)
        else:
            self._blocked.discard(chat_id)

    # -- chats and people ------------------------------------------------------------------------------

    def add_chat(self, chat: Chat, *, admins: Iterable[User] = ()) -> Chat:
        """Make a chat known (the bot can send there); ``admins`` answer getChatAdministrators."""
        self._chats[chat.id] = chat
        if chat.type == "private" and chat.id not in self._users:
            self._users[chat.id] = User(
                chat.id, chat.first_name or f"Customer {chat.id}", chat.last_name, chat.username
            )
        for admin in admins:
            self._users[admin.id] = admin
            self._admins.setdefault(chat.id, []).append(admin)
        return chat

    def set_bot_rights(self, chat_id: int, *, status: str = "administrator", **rights: bool) -> None:
        """The bot's status in a group: ``"member"``, or an administrator with ``rights`` changed
        from the default (all true), e.g. ``set_bot_rights(forum.id, can_manage_topics=False)``."""
        if status == "member":
            self._bot_rights[chat_id] = {"status": "member", "user": self._bot_user()}
            return
        member = _admin_member(self._bot_user(), can_be_edited=False)
        unknown = set(rights) - set(member)
        if unknown:
            raise SandboxError(f"unknown administrator rights: {sorted(unknown)}")
        self._bot_rights[chat_id] = {**member, **rights}

    def _bot_may(self, chat: Chat, right: str) -> bool:
        member = self._bot_member(chat)
        return member["status"] == "creator" or bool(member.get(right))

    def chat(self, chat_id: int) -> Chat:
        try:
            return self._chats[chat_id]
        except KeyError:
            raise SandboxError(f"unknown chat {chat_id}: register it with add_chat()") from None

    def topics(self, chat_id: int) -> dict[int, str]:
        """Live forum topics of a chat: thread id -> name."""
        return {
            topic.thread_id: topic.name
            for (chat, _), topic in self._topics.items()
            if chat == chat_id and not topic.deleted
        }

    def _resolve_people(self, chat: Chat | User | int, user: User | None) -> tuple[Chat, User]:
        if isinstance(chat, User):
            user, chat = user or chat, Chat.private(chat)
        if isinstance(chat, int):
            chat = self._chats.get(chat) or self._private_chat_for(chat, user)
        if chat.id not in self._chats or self._chats[chat.id] != chat:
            self.add_chat(chat)
        if user is None:
            if chat.type != "private":
                raise SandboxError(f"chat {chat.id} is a {chat.type}: say which user= writes there")
            user = self._users[chat.id]
        self._users[user.id] = user
        return chat, user

    def _private_chat_for(self, chat_id: int, user: User | None) -> Chat:
        if chat_id < 0:
            raise SandboxError(f"unknown chat {chat_id}: register it with add_chat()")
        return Chat.private(
            user if user is not None and user.id == chat_id else User(chat_id, f"Customer {chat_id}")
        )

    def _bot_user(self) -> JSON:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def _new_id(self) -> int:
        self._counter += 1
        return self._counter

    # -- the message store ----------------------------------------------------------------------------

    def _new_message(
        self,
        chat: Chat,
        sender: JSON,
        fields: JSON,
        *,
        thread_id: int | None = None,
        reply_to: _Stored | None = None,
    ) -> JSON:
        message_id = self._last_message_id.get(chat.id, 0) + 1
        self._last_message_id[chat.id] = message_id
        data: JSON = {
            "message_id": message_id,
            "from": sender,
            "chat": chat.to_dict(),
            "date": int(time.time()),
        }
        if thread_id is not None and chat.is_forum:
            data["message_thread_id"] = thread_id
            data["is_topic_message"] = True
            if reply_to is None:
                reply_to = self._messages.get((chat.id, thread_id))
        if reply_to is not None:
            data["reply_to_message"] = {k: v for k, v in reply_to.data.items() if k != "reply_to_message"}
        data.update(fields)
        return data

    def _store(
        self, chat_id: int, data: JSON, *, from_bot: bool, listed: bool = True, **extra: Any
    ) -> _Stored:
        """Keep a new message; ``listed=False`` for service messages (not counted as sent)."""
        stored = _Stored(chat_id, data["message_id"], from_bot, data, **extra)
        if stored.file is None:
            stored.file = self._file_of(data)
        self._messages[(chat_id, stored.message_id)] = stored
        self._log.setdefault(chat_id, []).append(("message", stored.message_id))
        if from_bot and listed:
            self._bot_order.setdefault(chat_id, []).append(stored.message_id)
        self._bump()
        return stored

    def _file_of(self, data: JSON) -> StoredFile | None:
        for key in ("document", "voice", "video", "sticker", "audio", "animation", "video_note"):
            if isinstance(data.get(key), dict):
                return self._files.get(data[key]["file_id"])
        if data.get("photo"):
            return self._files.get(data["photo"][-1]["file_id"])
        return None

    def _live(self, chat_id: int, message_id: int) -> _Stored | None:
        stored = self._messages.get((chat_id, message_id))
        return None if stored is None or stored.deleted else stored

    def _new_file(
        self, kind: str, data: bytes, file_name: str | None = None, mime_type: str | None = None
    ) -> StoredFile:
        number = self._new_id()
        suffix = ""
        if file_name and "." in file_name:
            suffix = "." + file_name.rsplit(".", 1)[1]
        else:
            suffix = {"photo": ".jpg", "voice": ".oga", "video": ".mp4", "sticker": ".webp"}.get(kind, "")
        stored = StoredFile(
            file_id=f"SBX{kind.upper()}{number:06d}{secrets.token_urlsafe(18)}",
            file_unique_id=f"SBXU{number:06d}",
            file_path=f"{kind}s/file_{number}{suffix}",
            data=data,
            file_name=file_name,
            mime_type=mime_type or (mimetypes.guess_type(file_name)[0] if file_name else None),
        )
        self._files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    # -- playing people -----------------------------------------------------------------------------------

    def _queue_update(self, kind: str, payload: JSON) -> JSON:
        update = {"update_id": self._next_update_id, kind: copy.deepcopy(payload)}
        self._next_update_id += 1
        self._queue.append(update)
        self.updates.append(update)
        self._bump()
        return update

    def _person_sends(
        self,
        chat: Chat | User | int,
        user: User | None,
        fields: JSON,
        *,
        message_thread_id: int | None,
        reply_to_message_id: int | None,
    ) -> JSON:
        chat, user = self._resolve_people(chat, user)
        if (
            message_thread_id is not None
            and chat.is_forum
            and not self._topic_is_live(chat.id, message_thread_id)
        ):
            raise SandboxError(f"chat {chat.id} has no topic {message_thread_id}")
        reply_to = None
        if reply_to_message_id is not None:
            reply_to = self._live(chat.id, reply_to_message_id)
            if reply_to is None:
                raise SandboxError(f"chat {chat.id} has no message {reply_to_message_id} to reply to")
            if message_thread_id is None and chat.is_forum:
                message_thread_id = reply_to.thread_id
        data = self._new_message(chat, user.to_dict(), fields, thread_id=message_thread_id, reply_to=reply_to)
        self._store(chat.id, data, from_bot=False)
        return self._queue_update("message", data)

    def send_message(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        text: str,
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> JSON:
        """A person writes ``text`` (commands get their bot_command entity); returns the update."""
        fields: JSON = {"text": text}
        if entities := _command_entities(text):
            fields["entities"] = entities
        return self._person_sends(
            chat, user, fields, message_thread_id=message_thread_id, reply_to_message_id=reply_to_message_id
        )

    def send_content(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        fields: JSON,
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> JSON:
        """A person sends any other message content (e.g. ``{"contact": {...}}``); returns the update."""
        return self._person_sends(
            chat, user, fields, message_thread_id=message_thread_id, reply_to_message_id=reply_to_message_id
        )

    def send_sticker(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        emoji: str = "👍",
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> JSON:
        stored = self._new_file("sticker", b"RIFF sandbox sticker WEBP", mime_type="image/webp")
        sticker = {
            **_file_object(stored), "type": "regular", "width": 512, "height": 512,
            "is_animated": False, "is_video": False, "emoji": emoji,
        }  # fmt: skip
        return self._person_sends(
            chat, user, {"sticker": sticker},
            message_thread_id=message_thread_id, reply_to_message_id=reply_to_message_id,
        )  # fmt: skip

    def send_photo(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        caption: str | None = None,
        content: bytes = b"\xff\xd8\xff\xe0 sandbox photo",
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> JSON:
        stored = self._new_file("photo", content, mime_type="image/jpeg")
        photo = [_photo_size(stored, 90, 67), _photo_size(stored, 1280, 960)]
        return self._person_sends(
            chat, user, _compact({"photo": photo, "caption": caption}),
            message_thread_id=message_thread_id, reply_to_message_id=reply_to_message_id,
        )  # fmt: skip

    def send_document(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        file_name: str = "x.txt",
        content: bytes = b"sandbox document",
        mime_type: str | None = None,
        caption: str | None = None,
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> JSON:
        """A person sends a file; the bot can fetch it with getFile and the file URL."""
        stored = self._new_file("document", content, file_name, mime_type)
        return self._person_sends(
            chat, user, _compact({"document": _document_object(stored), "caption": caption}),
            message_thread_id=message_thread_id, reply_to_message_id=reply_to_message_id,
        )  # fmt: skip

    def send_voice(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        duration: int = 3,
        content: bytes = b"OggS sandbox voice",
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> JSON:
        stored = self._new_file("voice", content, mime_type="audio/ogg")
        voice = {**_file_object(stored), "duration": duration, "mime_type": "audio/ogg"}
        return self._person_sends(
            chat, user, {"voice": voice},
            message_thread_id=message_thread_id, reply_to_message_id=reply_to_message_id,
        )  # fmt: skip

    def send_location(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        latitude: float = 52.52,
        longitude: float = 13.405,
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> JSON:
        location = {"latitude": latitude, "longitude": longitude}
        return self._person_sends(
            chat, user, {"location": location},
            message_thread_id=message_thread_id, reply_to_message_id=reply_to_message_id,
        )  # fmt: skip

    def send_album(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        photos: int = 2,
        caption: str | None = None,
        message_thread_id: int | None = None,
    ) -> list[JSON]:
        """A person sends ``photos`` photos as one album: one update per photo, one
        ``media_group_id``, the caption on the first, as Telegram delivers them."""
        if not 2 <= photos <= 10:
            raise SandboxError("an album has 2 to 10 items")
        group_id = str(20_000_000_000 + self._new_id())
        updates = []
        for number in range(photos):
            stored = self._new_file(
                "photo", f"\xff\xd8\xff\xe0 album photo {number}".encode(), mime_type="image/jpeg"
            )
            fields = _compact(
                {
                    "photo": [_photo_size(stored, 90, 67), _photo_size(stored, 1280, 960)],
                    "media_group_id": group_id,
                    "caption": caption if number == 0 else None,
                }
            )
            updates.append(
                self._person_sends(
                    chat, user, fields, message_thread_id=message_thread_id, reply_to_message_id=None
                )
            )
        return updates

    def delete_topic(self, chat_id: int, thread_id: int) -> None:
        """An administrator deletes a forum topic with its messages; bots are not told."""
        topic = self._topics.get((chat_id, thread_id))
        if topic is None or topic.deleted:
            raise SandboxError(f"chat {chat_id} has no topic {thread_id}")
        topic.deleted = True
        for (chat, _), stored in self._messages.items():
            if chat == chat_id and stored.thread_id == thread_id:
                stored.deleted = True
        self._bump()

    def delete_message(self, *, chat: Chat | User | int, message_id: int) -> None:
        """A person deletes a message in a chat; bots are not told (no update), as in Telegram."""
        chat_id = chat.id if isinstance(chat, Chat | User) else chat
        stored = self._live(chat_id, message_id)
        if stored is None:
            raise SandboxError(f"chat {chat_id} has no message {message_id}")
        stored.deleted = True
        self._bump()

    def press_button(
        self,
        *,
        chat: Chat | User | int,
        user: User | None = None,
        message_id: int,
        data: str | None = None,
        button_text: str | None = None,
        strict: bool = True,
    ) -> JSON:
        """A person presses an inline button (by ``data`` or by label) on a bot message.

        With ``strict`` (the default) the button must be on the message now.
        """
        chat, user = self._resolve_people(chat, user)
        stored = self._live(chat.id, message_id)
        if stored is None or not stored.from_bot:
            raise SandboxError(f"chat {chat.id} has no bot message {message_id}")
        button = self._find_button(stored, data, button_text)
        if button is None and strict:
            raise SandboxError(
                f"message {message_id} has no button {data or button_text!r}: {stored.snapshot().buttons}"
            )
        label = _button_label(button) if button else (button_text or str(data))
        query_id = str(4_000_000_000_000_000 + self._new_id())
        self._callbacks[query_id] = _Callback(chat.id, message_id, label)
        self._log.setdefault(chat.id, []).append(("button", label))
        query = {
            "id": query_id,
            "from": user.to_dict(),
            "message": copy.deepcopy(stored.data),
            "chat_instance": str(abs(hash((self.bot_id, chat.id)))),
            "data": data if data is not None else (button or {}).get("callback_data"),
        }
        return self._queue_update("callback_query", _compact(query))

    @staticmethod
    def _find_button(stored: _Stored, data: str | None, text: str | None) -> JSON | None:
        for row in _keyboard_rows(stored.data.get("reply_markup")):
            for button in row:
                if not isinstance(button, dict):
                    continue
                if (data is not None and button.get("callback_data") == data) or (
                    data is None and text is not None and button.get("text") == text
                ):
                    return button
        return None

    def edit_message(
        self, *, chat: Chat | User | int, user: User | None = None, message_id: int, text: str
    ) -> JSON:
        """A person edits their own text message; returns the edited_message update."""
        chat, user = self._resolve_people(chat, user)
        stored = self._live(chat.id, message_id)
        if stored is None or stored.from_bot or stored.data.get("from", {}).get("id") != user.id:
            raise SandboxError(f"user {user.id} has no message {message_id} in chat {chat.id}")
        stored.data["text"] = text
        stored.data.pop("entities", None)
        if entities := _command_entities(text):
            stored.data["entities"] = entities
        stored.data["edit_date"] = int(time.time())
        stored.edit_count += 1
        return self._queue_update("edited_message", stored.data)

    # -- reading what the bot did ---------------------------------------------------------------------

    def messages_to(self, chat_id: int, *, thread_id: int | None = None) -> list[SentMessage]:
        """The bot's messages in a chat (or one topic of it) as they are now, oldest first."""
        found = (self._messages[(chat_id, message_id)] for message_id in self._bot_order.get(chat_id, []))
        return [
            stored.snapshot()
            for stored in found
            if not stored.deleted and (thread_id is None or stored.thread_id == thread_id)
        ]

    def message(self, chat_id: int, message_id: int) -> SentMessage:
        """Any message the sandbox knows (either side, deleted ones too), as it is now."""
        stored = self._messages.get((chat_id, message_id))
        if stored is None:
            raise SandboxError(f"chat {chat_id} has no message {message_id}")
        return stored.snapshot()

    def calls_to(self, method: str, *, ok: bool | None = True) -> list[ApiCall]:
        """Recorded calls of one method; ``ok=None`` includes failed ones, ``ok=False`` only those."""
        return [call for call in self.calls if call.method == method and (ok is None or call.ok == ok)]

    def chat_transcript(self, chat_id: int) -> list[tuple[str, str, tuple[str, ...]]]:
        """Both sides in order: (who, what they see, button labels); deleted messages left out.

        ``who`` is "bot", "customer" (a person in a private chat) or "agent" (a person in a group);
        button presses appear as ``("customer", "[pressed «label»]", ())``.
        """
        chat = self._chats.get(chat_id)
        person = "customer" if chat is None or chat.type == "private" else "agent"
        lines: list[tuple[str, str, tuple[str, ...]]] = []
        for kind, value in self._log.get(chat_id, []):
            if kind == "button":
                lines.append((person, f"[pressed «{value}»]", ()))
                continue
            stored = self._messages[(chat_id, value)]
            if stored.deleted:
                continue
            labels = tuple(label for row in stored.snapshot().buttons for label in row)
            lines.append(("bot" if stored.from_bot else person, _render(stored.data), labels))
        return lines

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        return len(self._queue)

    # -- waiting -------------------------------------------------------------------------------------------

    def _recent_calls(self, count: int = 15) -> str:
        recent = self.calls[-count:]
        if not recent:
            return "  (no Bot API calls recorded)"
        return "\n".join(f"  {call.describe()}" for call in recent)

    async def wait_for(
        self,
        predicate: Callable[[ApiCall], bool],
        *,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109
        since: int = 0,
    ) -> list[ApiCall]:
        """Wait until ``count`` recorded calls (from index ``since`` on) satisfy ``predicate``.

        Returns the first ``count`` matching calls; raises :class:`SandboxTimeout` listing the
        recent calls otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            matches = [call for call in self.calls[since:] if predicate(call)]
            if len(matches) >= count:
                return matches[:count]
            if not await self._wait_change(deadline):
                raise SandboxTimeout(
                    f"{len(matches)} of {count} expected Bot API calls seen after {timeout}s; "
                    f"recent calls:\n{self._recent_calls()}"
                )

    async def wait_for_bot_message(
        self,
        chat_id: int,
        *,
        after: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109
        thread_id: int | None = None,
    ) -> SentMessage:
        """Wait for the (after+1)-th message the bot sends into the chat (or topic), counting
        deleted ones too; returns it as it is now."""
        deadline = time.monotonic() + timeout
        while True:
            sent = [
                self._messages[(chat_id, message_id)]
                for message_id in self._bot_order.get(chat_id, [])
                if thread_id is None or self._messages[(chat_id, message_id)].thread_id == thread_id
            ]
            if len(sent) > after:
                return sent[after].snapshot()
            if not await self._wait_change(deadline):
                raise SandboxTimeout(
                    f"the bot sent {len(sent)} messages to chat {chat_id}, expected more than {after} "
                    f"within {timeout}s; recent calls:\n{self._recent_calls()}"
                )

    async def wait_idle(self, *, quiet: float = 0.3, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until no update awaits delivery and nothing happened for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            idle_for = now - self._last_activity
            if not self._queue and idle_for >= quiet:
                return
            wake = deadline if self._queue else min(deadline, now + quiet - idle_for)
            if now >= deadline:
                raise SandboxTimeout(
                    f"not idle after {timeout}s: {len(self._queue)} updates pending; "
                    f"recent calls:\n{self._recent_calls()}"
                )
            await self._wait_change(wake)

    # -- validation helpers used by the methods ------------------------------------------------------

    def _target_chat(self, value: Any, *, sending: bool = True) -> Chat:
        if isinstance(value, str) and value.startswith("@"):
            chat = next((c for c in self._chats.values() if c.username and f"@{c.username}" == value), None)
        else:
            chat = self._chats.get(value) if isinstance(value, int) else None
        if chat is None:
            raise _bad_request("chat not found")
        if sending and chat.id in self._blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _topic_is_live(self, chat_id: int, thread_id: int) -> bool:
        topic = self._topics.get((chat_id, thread_id))
        return topic is not None and not topic.deleted

    def _target_thread(self, chat: Chat, p: _Params) -> int | None:
        thread_id = p.opt_number("message_thread_id")
        if thread_id is None or not chat.is_forum:
            return None
        if not self._topic_is_live(chat.id, thread_id):
            raise _bad_request("message thread not found")
        return thread_id

    def _reply_target(self, chat: Chat, p: _Params) -> _Stored | None:
        parameters = p.get("reply_parameters") or {}
        message_id = parameters.get("message_id") if isinstance(parameters, dict) else None
        if message_id is None:
            message_id = p.opt_number("reply_to_message_id")
        if message_id is None:
            return None
        chat_id = parameters.get("chat_id", chat.id) if isinstance(parameters, dict) else chat.id
        target = self._live(chat_id, message_id) if isinstance(chat_id, int) else None
        allow = p.get("allow_sending_without_reply") or parameters.get("allow_sending_without_reply")
        if target is None and not allow:
            raise _bad_request("message to be replied not found")
        return target

    @staticmethod
    def _check_markup(markup: Any) -> JSON | None:
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard", []):
            if not isinstance(row, list):
                raise _bad_request(
                    "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
                )
            for button in row:
                _check_inline_button(button)
        return markup

    @staticmethod
    def _formatted(
        text: Any, parse_mode: Any, entities: Any, *, limit: int, what: str
    ) -> tuple[str, list[JSON]]:
        if not isinstance(text, str):
            raise _bad_request(f"{what} text is empty" if what == "message" else "caption is empty")
        try:
            plain, parsed = parse_entities(text, parse_mode)
        except EntityParseError as exc:
            raise _bad_request(f"can't parse entities: {exc}") from exc
        if not parse_mode and isinstance(entities, list):
            parsed = entities
        plain, parsed = _trim(plain, parsed)
        if what == "message" and not plain:
            raise _bad_request("message text is empty")
        if len(plain) > limit:
            raise _bad_request("message is too long" if what == "message" else "message caption is too long")
        return plain, parsed

    def _caption_fields(self, p: _Params) -> JSON:
        caption = p.get("caption")
        if caption is None or caption == "":
            return {}
        plain, entities = self._formatted(
            caption, p.get("parse_mode"), p.get("caption_entities"), limit=CAPTION_LIMIT, what="caption"
        )
        return _compact({"caption": plain or None, "caption_entities": entities or None})

    def _file_param(self, value: Any, kind: str) -> StoredFile:
        if isinstance(value, UploadedFile):
            if not value.data:
                raise _bad_request("file must be non-empty")
            return self._new_file(kind, value.data, value.filename, value.content_type)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return self._new_file(kind, b"", value.rsplit("/", 1)[-1] or None)
        if isinstance(value, str) and value in self._files:
            return self._files[value]
        if not value:
            raise _bad_request(f"there is no {kind} in the request")
        raise _bad_request("wrong file identifier/HTTP URL specified")

    def _bot_message(
        self,
        chat: Chat,
        p: _Params,
        fields: JSON,
        *,
        thread_id: int | None = None,
        source_text: str | None = None,
        source_caption: str | None = None,
        file: StoredFile | None = None,
    ) -> JSON:
        """Store a message the bot sends (thread, reply and markup from ``p``) and return it."""
        reply_to = self._reply_target(chat, p)
        markup = self._check_markup(p.get("reply_markup"))
        data = self._new_message(chat, self._bot_user(), fields, thread_id=thread_id, reply_to=reply_to)
        if markup and "inline_keyboard" in markup:
            data["reply_markup"] = markup
        self._store(
            chat.id,
            data,
            from_bot=True,
            source_text=source_text,
            source_caption=source_caption,
            parse_mode=p.get("parse_mode"),
            file=file,
            reply_keyboard=None if markup is None or "inline_keyboard" in markup else markup,
        )
        return copy.deepcopy(data)

    def _editable(self, p: _Params, *, what: str = "edit") -> _Stored:
        if p.get("inline_message_id"):
            raise _bad_request("inline messages are not supported by the sandbox")
        chat = self._target_chat(p.require("chat_id"), sending=False)
        stored = self._live(chat.id, p.number("message_id"))
        if stored is None:
            raise _bad_request(f"message to {what} not found")
        if not stored.from_bot or stored.content_type in _SERVICE_KEYS:
            raise _bad_request("message can't be edited")
        return stored

    def _finish_edit(self, stored: _Stored, changes: JSON, markup: JSON | None) -> JSON:
        before = (
            {key: stored.data.get(key) for key in changes},
            stored.data.get("reply_markup"),
        )
        after = (changes, markup if markup and "inline_keyboard" in markup else None)
        if before == after:
            raise _ApiError(400, _NOT_MODIFIED)
        for key, value in changes.items():
            if value is None:
                stored.data.pop(key, None)
            else:
                stored.data[key] = value
        if after[1] is None:
            stored.data.pop("reply_markup", None)
        else:
            stored.data["reply_markup"] = after[1]
        stored.data["edit_date"] = int(time.time())
        stored.edit_count += 1
        self._bump()
        return copy.deepcopy(stored.data)

    # -- Bot API: bot and updates ------------------------------------------------------------------------

    @_api("getMe")
    def _get_me(self, p: _Params) -> JSON:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    @_api("getUpdates")
    async def _get_updates(self, p: _Params) -> list[JSON]:
        if self.webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        self._confirm(p.opt_number("offset"))
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed = frozenset(allowed) or _DEFAULT_ALLOWED
        limit = min(max(p.opt_number("limit") or 100, 1), 100)
        deadline = time.monotonic() + max(p.opt_number("timeout") or 0, 0)
        self._poll_generation += 1
        generation = self._poll_generation
        self._bump(activity=False)
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            batch = self._deliverable(limit)
            if batch or self._closing or not await self._wait_change(deadline):
                return batch

    def _confirm(self, offset: int | None) -> None:
        if offset is None:
            return
        before = len(self._queue)
        if offset < 0:
            while len(self._queue) > -offset:
                self._queue.popleft()
        else:
            while self._queue and self._queue[0]["update_id"] < offset:
                self._queue.popleft()
        if len(self._queue) != before:
            self._bump()

    def _deliverable(self, limit: int) -> list[JSON]:
        """The first ``limit`` updates of allowed kinds; updates of other kinds are dropped."""
        kept = deque(update for update in self._queue if _update_kind(update) in self._allowed)
        if len(kept) != len(self._queue):
            self._queue = kept
            self._bump()
        return [copy.deepcopy(update) for update in list(self._queue)[:limit]]

    @_api("setWebhook")
    async def _set_webhook(self, p: _Params) -> bool:
        url = str(p.require("url"))
        if not url.startswith(("http://", "https://")):
            raise _ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = str(p.get("secret_token") or "")
        if secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _ApiError(400, "Bad Request: bad webhook: secret token contains unallowed characters")
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed = frozenset(allowed) or _DEFAULT_ALLOWED
        if p.get("drop_pending_updates"):
            self._queue.clear()
        await self._stop_webhook()
        self.webhook_url, self._webhook_secret = url, secret
        self._poll_generation += 1  # a pending getUpdates ends with 409, as in Telegram
        self._webhook_task = asyncio.create_task(self._deliver_webhook(), name="sandbox-webhook")
        self._bump()
        return True

    @_api("deleteWebhook")
    async def _delete_webhook(self, p: _Params) -> bool:
        await self._stop_webhook()
        self.webhook_url = ""
        if p.get("drop_pending_updates"):
            self._queue.clear()
            self._bump()
        return True

    async def _stop_webhook(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver_webhook(self) -> None:
        """POST queued updates to the webhook one at a time, in order, with the secret header;
        an update leaves the queue only when the bot answers 2xx (else it is retried shortly)."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            while not self._closing:
                batch = self._deliverable(1)
                if not batch:
                    await self._wait_change(time.monotonic() + 1.0)
                    continue
                update = batch[0]
                headers = (
                    {"X-Telegram-Bot-Api-Secret-Token": self._webhook_secret} if self._webhook_secret else {}
                )
                self.webhook_deliveries += 1
                try:
                    async with client.post(self.webhook_url, json=update, headers=headers) as response:
                        delivered = 200 <= response.status < 300
                        if not delivered:
                            logger.info("Bot API sandbox: webhook answered %s", response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    logger.info("Bot API sandbox: webhook delivery failed: %s", exc)
                    delivered = False
                if delivered:
                    self._confirm(update["update_id"] + 1)
                else:
                    await asyncio.sleep(self.webhook_retry)

    @_api("getWebhookInfo")
    def _get_webhook_info(self, p: _Params) -> JSON:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }

    @_api("close")
    def _close(self, p: _Params) -> bool:
        return True

    @_api("logOut")
    def _log_out(self, p: _Params) -> bool:
        return True

    @_api("setMyCommands")
    def _set_my_commands(self, p: _Params) -> bool:
        commands = p.require("commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            _check_command(command)
        self.commands[self._commands_key(p)] = commands
        return True

    @_api("getMyCommands")
    def _get_my_commands(self, p: _Params) -> list[JSON]:
        return self.commands.get(self._commands_key(p), [])

    @_api("deleteMyCommands")
    def _delete_my_commands(self, p: _Params) -> bool:
        self.commands.pop(self._commands_key(p), None)
        return True

    @staticmethod
    def _commands_key(p: _Params) -> tuple[str, str]:
        scope = p.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(p.get("language_code", ""))

    @_api("setChatMenuButton")
    def _set_chat_menu_button(self, p: _Params) -> bool:
        self.menu_buttons[p.opt_number("chat_id")] = p.get("menu_button") or {"type": "default"}
        return True

    @_api("getChatMenuButton")
    def _get_chat_menu_button(self, p: _Params) -> JSON:
        chat_id = p.opt_number("chat_id")
        return self.menu_buttons.get(chat_id) or self.menu_buttons.get(None) or {"type": "commands"}

    # -- Bot API: sending -------------------------------------------------------------------------------

    @_api("sendMessage")
    def _send_message(self, p: _Params) -> JSON:
        chat = self._target_chat(p.require("chat_id"))
        thread_id = self._target_thread(chat, p)
        source = p.get("text")
        plain, entities = self._formatted(
            source, p.get("parse_mode"), p.get("entities"), limit=MESSAGE_LIMIT, what="message"
        )
        fields = _compact(
            {
                "text": plain,
                "entities": entities or None,
                "link_preview_options": p.get("link_preview_options"),
            }
        )
        return self._bot_message(chat, p, fields, thread_id=thread_id, source_text=source)

    def _send_file(self, p: _Params, kind: str, describe: Callable[[StoredFile, _Params], JSON]) -> JSON:
        chat = self._target_chat(p.require("chat_id"))
        thread_id = self._target_thread(chat, p)
        stored = self._file_param(p.get(kind), kind)
        fields = {kind: describe(stored, p), **self._caption_fields(p)}
        return self._bot_message(
            chat, p, fields, thread_id=thread_id, source_caption=p.get("caption") or None, file=stored
        )

    @_api("sendDocument")
    def _send_document(self, p: _Params) -> JSON:
        return self._send_file(p, "document", _document_object)

    @_api("sendPhoto")
    def _send_photo(self, p: _Params) -> JSON:
        return self._send_file(p, "photo", lambda f, _: [_photo_size(f, 90, 67), _photo_size(f, 1280, 960)])

    @_api("sendVoice")
    def _send_voice(self, p: _Params) -> JSON:
        return self._send_file(
            p,
            "voice",
            lambda f, q: {**_file_object(f), "duration": q.get("duration", 1), "mime_type": "audio/ogg"},
        )

    @_api("sendVideo")
    def _send_video(self, p: _Params) -> JSON:
        def video(f: StoredFile, q: _Params) -> JSON:
            sizes = {
                "width": q.get("width", 640),
                "height": q.get("height", 360),
                "duration": q.get("duration", 1),
            }
            return {**_document_object(f, q), **sizes}

        return self._send_file(p, "video", video)

    @_api("sendSticker")
    def _send_sticker(self, p: _Params) -> JSON:
        def sticker(f: StoredFile, q: _Params) -> JSON:
            shape = {"type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False}
            return _compact({**_file_object(f), **shape, "emoji": q.get("emoji")})

        return self._send_file(p, "sticker", sticker)

    @_api("sendLocation")
    def _send_location(self, p: _Params) -> JSON:
        chat = self._target_chat(p.require("chat_id"))
        thread_id = self._target_thread(chat, p)
        location = {"latitude": p.require("latitude"), "longitude": p.require("longitude")}
        return self._bot_message(chat, p, {"location": location}, thread_id=thread_id)

    @_api("sendMediaGroup")
    def _send_media_group(self, p: _Params) -> list[JSON]:
        chat = self._target_chat(p.require("chat_id"))
        thread_id = self._target_thread(chat, p)
        media = p.require("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _bad_request("wrong number of media in the group: 2-10 items are expected")
        group_id = str(10_000_000_000 + self._new_id())
        return [self._media_group_item(chat, p, item, group_id, thread_id) for item in media]

    def _media_group_item(
        self, chat: Chat, p: _Params, item: Any, group_id: str, thread_id: int | None
    ) -> JSON:
        if not isinstance(item, dict) or item.get("type") not in ("photo", "video", "document", "audio"):
            raise _bad_request("can't parse InputMedia: media type is not specified or unsupported")
        kind = item["type"]
        stored = self._file_param(item.get("media"), kind)
        item_params = _Params({**item, "chat_id": chat.id})
        described = (
            [_photo_size(stored, 1280, 960)] if kind == "photo" else _document_object(stored, item_params)
        )
        fields = {kind: described, "media_group_id": group_id, **self._caption_fields(item_params)}
        return self._bot_message(
            chat,
            _Params({key: p.get(key) for key in ("reply_parameters", "reply_to_message_id")}),
            fields,
            thread_id=thread_id,
            file=stored,
        )

    @_api("copyMessage")
    def _copy_message(self, p: _Params) -> JSON:
        source = self._source_message(p, "copy")
        content = {key: copy.deepcopy(value) for key, value in source.data.items() if key in _CONTENT_KEYS}
        content.update(
            {
                k: copy.deepcopy(v)
                for k, v in source.data.items()
                if k in ("entities", "caption", "caption_entities")
            }
        )
        if not content:
            raise _bad_request("message can't be copied")
        if p.get("caption") is not None:
            content.pop("caption", None)
            content.pop("caption_entities", None)
            content.update(self._caption_fields(p))
        chat = self._target_chat(p.require("chat_id"))
        thread_id = self._target_thread(chat, p)
        data = self._bot_message(
            chat, p, content, thread_id=thread_id, source_text=source.source_text, file=source.file
        )
        return {"message_id": data["message_id"]}

    @_api("copyMessages")
    def _copy_messages(self, p: _Params) -> list[JSON]:
        from_chat = self._target_chat(p.require("from_chat_id"), sending=False)
        message_ids = p.require("message_ids")
        if not isinstance(message_ids, list) or not 1 <= len(message_ids) <= 100:
            raise _bad_request("message_ids must contain 1-100 message identifiers")
        if any(not isinstance(i, int) for i in message_ids) or message_ids != sorted(set(message_ids)):
            raise _bad_request("message identifiers must be specified in a strictly increasing order")
        chat = self._target_chat(p.require("chat_id"))
        thread_id = self._target_thread(chat, p)
        groups: dict[str, str] = {}
        copied = []
        for message_id in message_ids:
            source = self._live(from_chat.id, message_id)
            if source is None:
                continue  # Telegram skips what it cannot find or copy
            content = {
                key: copy.deepcopy(value)
                for key, value in source.data.items()
                if key in (*_CONTENT_KEYS, "entities", "caption", "caption_entities")
            }
            if not any(key in content for key in _CONTENT_KEYS):
                continue
            if p.get("remove_caption"):
                content.pop("caption", None)
                content.pop("caption_entities", None)
            if source.data.get("media_group_id"):
                original = source.data["media_group_id"]
                content["media_group_id"] = groups.setdefault(original, str(10_000_000_000 + self._new_id()))
            data = self._bot_message(
                chat,
                _Params({}),
                content,
                thread_id=thread_id,
                source_text=source.source_text,
                file=source.file,
            )
            copied.append({"message_id": data["message_id"]})
        if not copied:
            raise _bad_request("message to copy not found")
        return copied

    @_api("forwardMessage")
    def _forward_message(self, p: _Params) -> JSON:
        source = self._source_message(p, "forward")
        content = {
            key: copy.deepcopy(value)
            for key, value in source.data.items()
            if key in (*_CONTENT_KEYS, "entities", "caption", "caption_entities")
        }
        if not content:
            raise _bad_request("message can't be forwarded")
        content["forward_origin"] = {
            "type": "user",
            "sender_user": source.data["from"],
            "date": source.data["date"],
        }
        chat = self._target_chat(p.require("chat_id"))
        thread_id = self._target_thread(chat, p)
        forwarded = _Params({"disable_notification": p.get("disable_notification")})
        return self._bot_message(chat, forwarded, content, thread_id=thread_id, file=source.file)

    def _source_message(self, p: _Params, what: str) -> _Stored:
        chat = self._target_chat(p.require("from_chat_id"), sending=False)
        source = self._live(chat.id, p.number("message_id"))
        if source is None:
            raise _bad_request(f"message to {what} not found")
        return source

    @_api("sendChatAction")
    def _send_chat_action(self, p: _Params) -> bool:
        chat = self._target_chat(p.require("chat_id"))
        self._target_thread(chat, p)
        if p.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        return True

    # -- Bot API: editing and deleting ---------------------------------------------------------------------

    @_api("editMessageText")
    def _edit_message_text(self, p: _Params) -> JSON:
        stored = self._editable(p)
        if stored.content_type != "text":
            raise _bad_request("there is no text in the message to edit")
        source = p.get("text")
        plain, entities = self._formatted(
            source, p.get("parse_mode"), p.get("entities"), limit=MESSAGE_LIMIT, what="message"
        )
        markup = self._check_markup(p.get("reply_markup"))
        result = self._finish_edit(stored, {"text": plain, "entities": entities or None}, markup)
        stored.source_text, stored.parse_mode = source, p.get("parse_mode")
        return result

    @_api("editMessageCaption")
    def _edit_message_caption(self, p: _Params) -> JSON:
        stored = self._editable(p)
        if stored.content_type == "text":
            raise _bad_request("there is no caption in the message to edit")
        fields = self._caption_fields(p)
        markup = self._check_markup(p.get("reply_markup"))
        changes = {"caption": fields.get("caption"), "caption_entities": fields.get("caption_entities")}
        result = self._finish_edit(stored, changes, markup)
        stored.source_caption, stored.parse_mode = p.get("caption"), p.get("parse_mode")
        return result

    @_api("editMessageReplyMarkup")
    def _edit_message_reply_markup(self, p: _Params) -> JSON:
        stored = self._editable(p)
        return self._finish_edit(stored, {}, self._check_markup(p.get("reply_markup")))

    @_api("deleteMessage")
    def _delete_message(self, p: _Params) -> bool:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        stored = self._live(chat.id, p.number("message_id"))
        if stored is None:
            raise _bad_request("message to delete not found")
        stored.deleted = True
        self._bump()
        return True

    @_api("deleteMessages")
    def _delete_messages(self, p: _Params) -> bool:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        message_ids = p.require("message_ids")
        if not isinstance(message_ids, list) or not 1 <= len(message_ids) <= 100:
            raise _bad_request("message_ids must contain 1-100 message identifiers")
        for message_id in message_ids:
            if (stored := self._live(chat.id, message_id)) is not None:
                stored.deleted = True
        self._bump()
        return True

    @_api("pinChatMessage")
    def _pin_chat_message(self, p: _Params) -> bool:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        if chat.type != "private" and not self._bot_may(chat, "can_pin_messages"):
            raise _bad_request("not enough rights to manage pinned messages in the chat")
        stored = self._live(chat.id, p.number("message_id"))
        if stored is None:
            raise _bad_request("message to pin not found")
        stored.pinned = True
        return True

    @_api("unpinChatMessage")
    def _unpin_chat_message(self, p: _Params) -> bool:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        message_id = p.opt_number("message_id")
        pinned = [s for (c, _), s in self._messages.items() if c == chat.id and s.pinned and not s.deleted]
        if message_id is not None:
            pinned = [s for s in pinned if s.message_id == message_id]
        if not pinned:
            raise _bad_request("message to unpin not found")
        max(pinned, key=lambda s: s.message_id).pinned = False
        return True

    @_api("unpinAllChatMessages")
    def _unpin_all_chat_messages(self, p: _Params) -> bool:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        for (chat_id, _), stored in self._messages.items():
            if chat_id == chat.id:
                stored.pinned = False
        return True

    @_api("answerCallbackQuery")
    def _answer_callback_query(self, p: _Params) -> bool:
        callback = self._callbacks.get(str(p.require("callback_query_id")))
        if callback is None or callback.answered:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        text = p.get("text")
        if isinstance(text, str) and len(text) > 200:
            raise _bad_request("MESSAGE_TOO_LONG")
        callback.answered = True
        return True

    # -- Bot API: files and chats -------------------------------------------------------------------------

    @_api("getFile")
    def _get_file(self, p: _Params) -> JSON:
        stored = self._files.get(str(p.require("file_id")))
        if stored is None:
            raise _bad_request("invalid file_id")
        if len(stored.data) > DOWNLOAD_LIMIT:
            raise _bad_request("file is too big")
        return {**_file_object(stored), "file_path": stored.file_path}

    @_api("getChat")
    def _get_chat(self, p: _Params) -> JSON:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        return {
            **chat.to_dict(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
                "premium_subscription": False, "gifts_from_channels": False,
            },
        }  # fmt: skip

    @_api("getChatMember")
    def _get_chat_member(self, p: _Params) -> JSON:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        user_id = p.number("user_id")
        if user_id == self.bot_id:
            return self._bot_member(chat)
        user = self._users.get(user_id)
        if user is None:
            raise _bad_request("user not found")
        if any(admin.id == user_id for admin in self._admins.get(chat.id, [])):
            return _admin_member(user.to_dict(), can_be_edited=False)
        return {"status": "member", "user": user.to_dict()}

    @_api("getChatAdministrators")
    def _get_chat_administrators(self, p: _Params) -> list[JSON]:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        if chat.type == "private":
            raise _bad_request("there are no administrators in the private chat")
        admins = [
            _admin_member(admin.to_dict(), can_be_edited=False) for admin in self._admins.get(chat.id, [])
        ]
        bot = self._bot_member(chat)
        return [bot, *admins] if bot["status"] == "administrator" else admins

    def _bot_member(self, chat: Chat) -> JSON:
        if chat.type == "private":
            return {"status": "member", "user": self._bot_user()}
        if chat.id in self._bot_rights:
            return copy.deepcopy(self._bot_rights[chat.id])
        return _admin_member(self._bot_user(), can_be_edited=False)

    # -- Bot API: forum topics -------------------------------------------------------------------------------

    @_api("createForumTopic")
    def _create_forum_topic(self, p: _Params) -> JSON:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        if not chat.is_forum:
            raise _bad_request("the chat is not a forum")
        if not self._bot_may(chat, "can_manage_topics"):
            raise _bad_request("not enough rights to create a topic")
        name = str(p.require("name"))
        if not 1 <= len(name) <= 128:
            raise _bad_request("TOPIC_TITLE_EMPTY" if not name else "TOPIC_TITLE_TOO_LONG")
        icon_color = p.opt_number("icon_color") or DEFAULT_ICON_COLOR
        created = {"forum_topic_created": _compact({"name": name, "icon_color": icon_color})}
        data = self._new_message(chat, self._bot_user(), created)
        thread_id = data["message_id"]
        data.update({"message_thread_id": thread_id, "is_topic_message": True})
        self._store(chat.id, data, from_bot=True, listed=False)
        topic = _Topic(thread_id, name, icon_color, p.get("icon_custom_emoji_id"))
        self._topics[(chat.id, thread_id)] = topic
        return topic.to_dict()

    def _topic(self, p: _Params) -> tuple[Chat, _Topic]:
        chat = self._target_chat(p.require("chat_id"), sending=False)
        if not self._bot_may(chat, "can_manage_topics"):
            raise _bad_request("not enough rights to manage topics")
        topic = self._topics.get((chat.id, p.number("message_thread_id")))
        if topic is None or topic.deleted:
            raise _bad_request("TOPIC_ID_INVALID")
        return chat, topic

    @_api("editForumTopic")
    def _edit_forum_topic(self, p: _Params) -> bool:
        _, topic = self._topic(p)
        name = p.get("name", topic.name)
        emoji = p.get("icon_custom_emoji_id", topic.icon_custom_emoji_id)
        if (name, emoji) == (topic.name, topic.icon_custom_emoji_id):
            raise _bad_request("TOPIC_NOT_MODIFIED")
        topic.name, topic.icon_custom_emoji_id = name, emoji
        return True

    def _set_closed(self, p: _Params, closed: bool) -> bool:
        _, topic = self._topic(p)
        if topic.closed == closed:
            raise _bad_request("TOPIC_NOT_MODIFIED")
        topic.closed = closed
        return True

    @_api("closeForumTopic")
    def _close_forum_topic(self, p: _Params) -> bool:
        return self._set_closed(p, True)

    @_api("reopenForumTopic")
    def _reopen_forum_topic(self, p: _Params) -> bool:
        return self._set_closed(p, False)

    @_api("deleteForumTopic")
    def _delete_forum_topic(self, p: _Params) -> bool:
        chat, topic = self._topic(p)
        topic.deleted = True
        for (chat_id, _), stored in self._messages.items():
            if chat_id == chat.id and stored.thread_id == topic.thread_id:
                stored.deleted = True
        self._bump()
        return True


# -- small builders -----------------------------------------------------------------------------------


def _update_kind(update: JSON) -> str:
    return next(key for key in update if key != "update_id")


def _file_object(stored: StoredFile) -> JSON:
    return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": len(stored.data)}


def _document_object(stored: StoredFile, p: _Params | None = None) -> JSON:  # p: see _send_file
    return _compact({**_file_object(stored), "file_name": stored.file_name, "mime_type": stored.mime_type})


def _photo_size(stored: StoredFile, width: int, height: int) -> JSON:
    return {**_file_object(stored), "width": width, "height": height}


def _admin_member(user: JSON, *, can_be_edited: bool) -> JSON:
    rights = dict.fromkeys(
        (
            "can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
            "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
            "can_delete_stories", "can_pin_messages", "can_manage_topics", "can_send_welcome_messages",
        ),
        True,
    )  # fmt: skip
    return {
        "status": "administrator",
        "user": user,
        "can_be_edited": can_be_edited,
        "is_anonymous": False,
        "can_promote_members": False,
        **rights,
    }


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise _bad_request("can't parse inline keyboard button: Text must be a String")
    actions = [key for key in _BUTTON_ACTIONS if key in button]
    if not actions:
        raise _bad_request("text buttons are unallowed in the inline keyboard")
    data = button.get("callback_data")
    if data is not None and (
        not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= CALLBACK_DATA_LIMIT
    ):
        raise _bad_request("BUTTON_DATA_INVALID")
    url = button.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://", "tg://"))):
        raise _bad_request("BUTTON_URL_INVALID")


_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")


def _check_command(command: Any) -> None:
    if not isinstance(command, dict) or not _COMMAND_NAME_RE.match(str(command.get("command", ""))):
        raise _bad_request("BOT_COMMAND_INVALID")
    if not 1 <= len(str(command.get("description", ""))) <= 256:
        raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")


def _render(data: JSON) -> str:
    """What a person sees of a message, in one line of text."""
    caption = f" {data['caption']}" if data.get("caption") else ""
    kind = _content_type(data)
    if kind == "text":
        return str(data["text"])
    if kind == "sticker":
        return f"[sticker {data['sticker'].get('emoji', '')}]".replace(" ]", "]")
    if kind == "document":
        return f"[document {data['document'].get('file_name', '')}]{caption}"
    if kind == "voice":
        return f"[voice {data['voice'].get('duration', 0)}s]"
    if kind == "location":
        return f"[location {data['location']['latitude']}, {data['location']['longitude']}]"
    if kind == "forum_topic_created":
        return f"[topic created: {data['forum_topic_created']['name']}]"
    return f"[{kind}]{caption}"
