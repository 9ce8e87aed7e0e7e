"""The ORM: SQLAlchemy 2 typed models over generic column types (SQLite and PostgreSQL alike).

The database is the source of truth; the FAISS index on disk is a cache rebuilt from
``embeddings``. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; SQLite gives naive values back, this fixes them."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware values")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class ArticleStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    RETIRED = "retired"


class EmbeddingKind(enum.StrEnum):
    QUESTION = "question"
    ALTERNATIVE = "alternative"
    ANSWER = "answer"


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class Author(enum.StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"
    AGENT = "agent"


class TicketState(enum.StrEnum):
    """bot -> waiting -> assigned -> resolved; ``bot`` also ends a ticket the customer cancelled."""

    BOT = "bot"
    WAITING = "waiting"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"

    @property
    def is_open(self) -> bool:
        return self in (TicketState.WAITING, TicketState.ASSIGNED)


class SuggestionStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def _enum(cls: type[enum.StrEnum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    language: Mapped[str] = mapped_column(String(16))
    status: Mapped[ArticleStatus] = mapped_column(_enum(ArticleStatus), default=ArticleStatus.PUBLISHED)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ArticleVersion]] = relationship(
        back_populates="article", order_by="ArticleVersion.number", cascade="all, delete-orphan"
    )


class ArticleVersion(Base):
    __tablename__ = "article_versions"
    __table_args__ = (
        UniqueConstraint("article_id", "language", "number"),
        Index("ix_article_versions_current", "article_id", "is_current"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    language: Mapped[str] = mapped_column(String(16))
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    question: Mapped[str] = mapped_column(Text)
    alt_questions: Mapped[list[Any]] = mapped_column(default=list)
    answer: Mapped[str] = mapped_column(Text)
    source_file: Mapped[str] = mapped_column(String(1000), default="")
    source_anchor: Mapped[str] = mapped_column(Text, default="")  # a heading's slug: any length
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200), default="ingest")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    article: Mapped[Article] = relationship(back_populates="versions")


class Embedding(Base):
    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_model_version", "model_id", "version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("article_versions.id", ondelete="CASCADE"))
    kind: Mapped[EmbeddingKind] = mapped_column(_enum(EmbeddingKind))
    ordinal: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(String(300))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class KbState(Base):
    """One row: the KB revision, bumped by every change that affects answers."""

    __tablename__ = "kb_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    first_name: Mapped[str] = mapped_column(String(300), default="")
    last_name: Mapped[str | None] = mapped_column(String(300))
    username: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    notes: Mapped[str] = mapped_column(Text, default="")


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))


class Message(Base):
    __tablename__ = "messages"
    # a customer message processed again (after a crash) is found, not stored twice
    __table_args__ = (Index("ix_messages_chat_telegram", "chat_id", "telegram_message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[Direction] = mapped_column(_enum(Direction))
    author: Mapped[Author] = mapped_column(_enum(Author))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(32), default="text")
    text: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[str | None] = mapped_column(String(16))
    hits: Mapped[list[Any] | None] = mapped_column(JSON)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("article_versions.id", ondelete="SET NULL"))
    score: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Hand-over: the ticket the message belongs to, the id of its copy on the other side (the
    # agents' topic for a customer message, the customer's chat for an agent's), the agent.
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL", name="fk_messages_ticket_id_tickets"), index=True
    )
    relay_message_id: Mapped[int | None] = mapped_column(BigInteger)
    agent_id: Mapped[int | None] = mapped_column(BigInteger)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("article_versions.id", ondelete="SET NULL"))
    helpful: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    state: Mapped[TicketState] = mapped_column(_enum(TicketState), default=TicketState.WAITING)
    reason: Mapped[str] = mapped_column(String(64), default="customer_request")
    question: Mapped[str | None] = mapped_column(Text)
    topic_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    agent_id: Mapped[int | None] = mapped_column(BigInteger)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    chat_id: Mapped[int | None] = mapped_column(BigInteger)  # the customer's private chat
    card_message_id: Mapped[int | None] = mapped_column(BigInteger)  # the pinned card in the topic
    agent_name: Mapped[str | None] = mapped_column(String(300))
    outcome: Mapped[str | None] = mapped_column(String(32))  # resolved / cancelled


class Suggestion(Base):
    """An agent's answer proposed as a KB entry (``/faq``); editors approve or reject it."""

    __tablename__ = "suggestions"

    id: Mapped[int] = mapped_column(primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    agent_id: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[SuggestionStatus] = mapped_column(
        _enum(SuggestionStatus), default=SuggestionStatus.PENDING, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the editors in Telegram were sent it (None: not yet; the bot picks it up).
    announced_at: Mapped[datetime | None]


class Csat(Base):
    """The customer's 1-5 rating of a resolved ticket (the last press counts)."""

    __tablename__ = "csat"
    __table_args__ = (UniqueConstraint("ticket_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    score: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who did what to a customer's data, and when (agents, editors, the customer, the system).

    ``customer_id`` is the internal id, not a foreign key: the entry outlives an erasure, and
    ``detail`` never holds the customer's own words (it is emptied when they are forgotten).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(300))  # "agent:7001", "editor:900", "customer", "system"
    action: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(Integer, index=True)
    detail: Mapped[str] = mapped_column(Text, default="")


class InboxState(enum.StrEnum):
    PENDING = "pending"  # stored, waiting to be processed (again, after ``next_try_at``)
    PROCESSING = "processing"  # claimed by ``owner`` until ``lease_until``
    DONE = "done"
    FAILED = "failed"  # given up after ``max_attempts`` or a permanent error; ``error`` says why


class InboxUpdate(Base):
    """A Telegram update, stored before it is confirmed to Telegram (polling) or answered 200
    (webhook); the payload is dropped once it is processed, the row stays as the dedup key."""

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_state_next_try", "state", "next_try_at"),)

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    payload: Mapped[str | None] = mapped_column(Text)  # the update's JSON as received
    state: Mapped[InboxState] = mapped_column(_enum(InboxState), default=InboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(200))  # the replica processing it
    lease_until: Mapped[datetime | None]
    next_try_at: Mapped[datetime] = mapped_column(default=utcnow)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class OutboxState(enum.StrEnum):
    SENDING = "sending"  # handed to Telegram, no answer yet (in doubt when found after a crash)
    SENT = "sent"
    FAILED = "failed"  # a permanent error (blocked, chat not found, bad request) or retries exhausted


class OutboxCall(Base):
    """One Bot API call made while handling an update, keyed by the update and its place in it:
    a reprocessed update finds its calls here and does not make them again."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state", "state"),)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    update_id: Mapped[int] = mapped_column(BigInteger, index=True)
    method: Mapped[str] = mapped_column(String(64))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[OutboxState] = mapped_column(_enum(OutboxState))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str | None] = mapped_column(Text)  # the Bot API's result, JSON
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
