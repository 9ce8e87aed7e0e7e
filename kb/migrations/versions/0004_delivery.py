"""delivery: the inbox of updates and the outbox journal of Bot API calls

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "pending", "processing", "done", "failed", name="inboxstate", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("update_id"),
    )
    op.create_index("ix_inbox_state_next_try", "inbox", ["state", "next_try_at"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "state",
            sa.Enum("sending", "sent", "failed", name="outboxstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_outbox_state", "outbox", ["state"], unique=False)
    op.create_index("ix_outbox_update_id", "outbox", ["update_id"], unique=False)
    op.create_index("ix_messages_chat_telegram", "messages", ["chat_id", "telegram_message_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_messages_chat_telegram", table_name="messages")
    op.drop_index("ix_outbox_update_id", table_name="outbox")
    op.drop_index("ix_outbox_state", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_inbox_state_next_try", table_name="inbox")
    op.drop_table("inbox")
