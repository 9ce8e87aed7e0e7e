"""hand-over to agents: tickets in forum topics, relayed messages, FAQ suggestions, CSAT

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "csat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id"),
    )
    with op.batch_alter_table("csat", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_csat_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "suggestions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "approved", "rejected", name="suggestionstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("suggestions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_suggestions_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_suggestions_ticket_id"), ["ticket_id"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ticket_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("relay_message_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("agent_id", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_messages_ticket_id"), ["ticket_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_messages_ticket_id_tickets", "tickets", ["ticket_id"], ["id"], ondelete="SET NULL"
        )

    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chat_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("card_message_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("agent_name", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_tickets_topic_id"), ["topic_id"], unique=False)

    # Tickets recorded before the hand-over existed: their customer's chat is their conversation's.
    op.execute(
        "UPDATE tickets SET chat_id = "
        "(SELECT conversations.chat_id FROM conversations WHERE conversations.id = tickets.conversation_id) "
        "WHERE chat_id IS NULL AND conversation_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tickets_topic_id"))
        batch_op.drop_column("outcome")
        batch_op.drop_column("agent_name")
        batch_op.drop_column("card_message_id")
        batch_op.drop_column("chat_id")

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint("fk_messages_ticket_id_tickets", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_messages_ticket_id"))
        batch_op.drop_column("agent_id")
        batch_op.drop_column("relay_message_id")
        batch_op.drop_column("ticket_id")

    with op.batch_alter_table("suggestions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suggestions_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_suggestions_status"))
    op.drop_table("suggestions")

    with op.batch_alter_table("csat", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_csat_customer_id"))
    op.drop_table("csat")
