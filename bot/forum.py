"""What agents see in the forum: topic names, the hand-over card, the transcript file.

Pure functions from :mod:`kb.tickets` data to Telegram HTML (escaped) and plain text; the
:mod:`bot.handover` desk sends them.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from bot.render import escape
from bot.texts import Texts
from kb.models import Author, TicketState
from kb.tickets import Attempt, Card, EarlierTicket, Line, TicketView

TOPIC_NAME_LIMIT = 128
TOPIC_WORDS = 6
CARD_LIMIT = 3900  # Telegram's limit is 4096 characters; HTML tags count only in our estimate
INLINE_LINES = 8
LINE_CHARS = 160
PREVIEW_CHARS = 220


def topic_name(ticket: TicketView) -> str:
    """``#<ticket> <customer name> — <first words of the question>``, within Telegram's 128."""
    name = f"#{ticket.id} {ticket.customer_name}"
    words = (ticket.question or "").split()
    if words:
        head = " ".join(words[:TOPIC_WORDS]) + ("…" if len(words) > TOPIC_WORDS else "")
        name = f"{name} — {head}"
    return name if len(name) <= TOPIC_NAME_LIMIT else name[: TOPIC_NAME_LIMIT - 1].rstrip() + "…"


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _when(at: datetime, zone: tzinfo) -> str:
    local = at.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")


def state_label(ticket: TicketView, texts: Texts) -> str:
    if ticket.state is TicketState.ASSIGNED:
        return texts.state_assigned.format(agent=escape(ticket.agent_name or "?"))
    return {
        TicketState.WAITING: texts.state_waiting,
        TicketState.RESOLVED: texts.state_resolved,
        TicketState.BOT: texts.state_bot,
    }[ticket.state]


def _earlier(tickets: list[EarlierTicket], texts: Texts) -> str:
    if not tickets:
        return texts.card_earlier_none
    shown = []
    for t in tickets:
        outcome = t.outcome or t.state.value
        rating = f" ⭐{t.csat}" if t.csat is not None else ""
        shown.append(f"#{t.id} {t.opened_at:%Y-%m-%d} {escape(texts.outcomes.get(outcome, outcome))}{rating}")
    return " · ".join(shown)


def _score(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def _helpful(value: bool | None, texts: Texts) -> str:
    return {True: texts.helpful_yes, False: texts.helpful_no, None: texts.helpful_none}[value]


def attempt_line(attempt: Attempt, texts: Texts) -> str:
    if attempt.decision == "picked":
        what = texts.attempt_picked.format(
            title=escape(attempt.title or "?"),
            version=attempt.version or "?",
            score=_score(attempt.score),
            helpful=_helpful(attempt.helpful, texts),
        )
    elif attempt.decision == "answer":
        what = texts.attempt_answer.format(
            title=escape(attempt.title or "?"),
            version=attempt.version or "?",
            score=_score(attempt.score),
            helpful=_helpful(attempt.helpful, texts),
        )
    elif attempt.decision == "suggest":
        what = texts.attempt_suggest.format(score=_score(attempt.score))
    else:
        what = texts.attempt_escalate.format(score=_score(attempt.score))
    question = f"“{escape(clip(attempt.question, 80))}”: " if attempt.question else ""
    return f"• {question}{what}"


def _who(line: Line, customer: str, texts: Texts) -> str:
    if line.author is Author.CUSTOMER:
        return customer
    if line.author is Author.BOT:
        return texts.who_bot
    return texts.who_note if line.decision in ("note", "undelivered") else texts.who_agent


def line_text(line: Line, texts: Texts, *, whole: bool = True) -> str:
    """What the message was, in words (the bot's answers in full when ``whole``)."""
    if line.author is Author.BOT and line.decision in ("answer", "picked") and line.title:
        head = texts.line_answer.format(title=line.title, version=line.version)
        return f"{head} {line.text or ''}".strip() if whole else head
    if line.author is Author.BOT and line.decision == "suggest":
        return texts.line_suggest
    if line.author is Author.BOT and line.decision == "escalate":
        return texts.line_no_answer
    if line.content_type not in ("text", "command"):
        return f"{texts.line_content.format(kind=line.content_type)} {line.text or ''}".strip()
    return line.text or ""


def _inline(line: Line, customer: str, texts: Texts, zone: tzinfo) -> str:
    text = line_text(line, texts, whole=False)
    at = line.at.astimezone(zone).strftime("%H:%M")
    return f"{at} <b>{escape(_who(line, customer, texts))}:</b> {escape(clip(text, LINE_CHARS))}"


def card_html(card: Card, texts: Texts, *, zone: tzinfo = UTC) -> tuple[str, bool]:
    """The card as HTML, and whether the conversation needs the attached transcript."""
    ticket = card.ticket
    customer = ticket.customer_name
    head = [
        texts.card_title.format(ticket=ticket.id, state=state_label(ticket, texts)),
        texts.card_customer.format(
            name=escape(customer),
            username=escape(f"@{card.username}") if card.username else texts.card_no_username,
            id=ticket.customer_telegram_id,
            language=escape(ticket.language or texts.card_no_language),
        ),
        texts.card_first_seen.format(when=_when(card.first_seen, zone)),
        *([texts.card_tags.format(tags=escape(", ".join(card.tags)))] if card.tags else []),
        texts.card_earlier.format(tickets=_earlier(card.earlier, texts)),
        texts.card_reason.format(reason=escape(texts.reasons.get(ticket.reason, ticket.reason))),
    ]
    if ticket.question:
        head.append(texts.card_question.format(question=escape(clip(ticket.question, 300))))
    tried = [texts.card_tried]
    tried += [attempt_line(a, texts) for a in card.attempts[-6:]] or [f"• {texts.card_tried_none}"]
    owner = (
        texts.card_owner.format(agent=escape(ticket.agent_name))
        if ticket.agent_name
        else texts.card_owner_none
    )
    tail = [owner]
    if card.csat is not None:
        tail.append(texts.card_csat.format(score=card.csat))
    lines = [line for line in card.lines if line.decision not in ("note", "undelivered")]
    shown = min(len(lines), INLINE_LINES)
    while True:
        rendered = [_inline(line, customer, texts, zone) for line in lines[len(lines) - shown :]]
        clipped = any(len(line_text(line, texts)) > LINE_CHARS for line in lines[len(lines) - shown :])
        whole = shown == len(lines) and not clipped
        title = (
            texts.card_conversation.format(count=len(lines))
            if shown == len(lines)
            else texts.card_conversation_part.format(shown=shown, count=len(lines))
        )
        if not whole:
            title += f"; {texts.card_conversation_file}"
        parts = ["\n".join(head), "\n".join(tried), "\n".join([title, *rendered]), "\n".join(tail)]
        html = "\n\n".join(parts)
        if len(html) <= CARD_LIMIT or shown == 0:
            return html, not whole
        shown -= 1


def transcript_text(card: Card, texts: Texts, *, zone: tzinfo = UTC) -> str:
    """The whole conversation as plain text, for the attached file."""
    ticket = card.ticket
    head = texts.transcript_head.format(
        ticket=ticket.id,
        name=ticket.customer_name,
        username=f" (@{card.username})" if card.username else "",
        id=ticket.customer_telegram_id,
        when=_when(ticket.opened_at, zone),
        reason=texts.reasons.get(ticket.reason, ticket.reason),
    )
    out = [head, ""]
    for line in card.lines:
        who = _who(line, ticket.customer_name, texts)
        extra = ""
        if line.author is Author.BOT and line.decision in ("answer", "picked", "suggest", "escalate"):
            feedback = {True: texts.transcript_helped, False: texts.transcript_not_helped, None: ""}
            extra = texts.transcript_turn.format(
                decision=line.decision, score=_score(line.score), feedback=feedback[line.helpful]
            )
        body = line_text(line, texts).replace("\n", "\n    ")
        out.append(f"{_when(line.at, zone)}  {who}{extra}: {body}")
    return "\n".join(out) + "\n"


def _iso_when(value: str, zone: tzinfo) -> str:
    return _when(datetime.fromisoformat(value), zone)


def profile_html(
    profile: dict[str, Any], summary: dict[str, Any], texts: Texts, *, zone: tzinfo = UTC
) -> str:
    """``/profile``: who the customer is, what they went through, tags and agents' notes."""
    username = escape(f"@{profile['username']}") if profile["username"] else texts.card_no_username
    head = [
        texts.profile_head.format(
            name=escape(profile["name"] or "?"),
            username=username,
            id=profile["telegram_id"],
            language=escape(profile["language"] or texts.card_no_language),
        ),
        texts.profile_seen.format(
            first=_iso_when(profile["first_seen"], zone), last=_iso_when(profile["last_seen"], zone)
        ),
        texts.profile_counts.format(**summary),
        texts.profile_csat.format(average=f"{summary['csat_average']:.1f}", n=summary["csat_n"])
        if summary["csat_n"]
        else texts.profile_csat_none,
        texts.profile_tags.format(tags=escape(", ".join(profile["tags"])))
        if profile["tags"]
        else texts.profile_tags_none,
    ]
    if profile["articles_shown"]:
        shown = ", ".join(
            f"“{escape(clip(a['title'], 60))}” ×{a['times']}" for a in profile["articles_shown"][:5]
        )
        head.append(texts.profile_articles.format(articles=shown))
    parts = ["\n".join(head)]
    if profile["tickets"]:
        lines = [texts.profile_tickets]
        for t in profile["tickets"][-EARLIER_SHOWN:]:
            state = texts.outcomes.get(t["state"], t["state"])
            lines.append(
                texts.profile_ticket.format(
                    id=t["id"],
                    opened=t["opened_at"][:10],
                    state=escape(state),
                    csat=f" ⭐{t['csat']}" if t["csat"] is not None else "",
                    question=escape(clip(t["question"] or "", 80)),
                )
            )
        parts.append("\n".join(lines))
    if profile["notes"]:
        notes = profile["notes"].splitlines()[-NOTES_SHOWN:]
        parts.append(texts.profile_notes.format(notes=escape(clip_lines(notes, 1500))))
    return "\n\n".join(parts)


EARLIER_SHOWN = 8
NOTES_SHOWN = 10


def clip_lines(lines: list[str], limit: int) -> str:
    """The last lines that fit in ``limit`` characters."""
    kept: list[str] = []
    for line in reversed(lines):
        if sum(len(k) + 1 for k in kept) + len(line) > limit:
            break
        kept.insert(0, line)
    return "\n".join(kept)


def stats_html(reports: list[dict[str, Any]], texts: Texts) -> str:
    """``/stats``: the figures of :func:`kb.analytics.service_report`, one block per period."""

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value:.0%}"

    def minutes(value: float | None) -> str:
        return "–" if value is None else f"{value / 60:.1f} min"

    blocks = [texts.stats_head]
    for r in reports:
        if not r["conversations"] and not r["tickets"]:
            blocks.append(texts.stats_empty.format(days=r["days"]))
            continue
        blocks.append(
            texts.stats_period.format(
                days=r["days"],
                conversations=r["conversations"],
                tickets=r["tickets"],
                self_service=pct(r["self_service_rate"]),
                escalation=pct(r["escalation_rate"]),
                feedback=pct(r["feedback_rate"]),
                first_median=minutes(r["first_response"]["median_s"]),
                first_p90=minutes(r["first_response"]["p90_s"]),
                resolution_median=minutes(r["resolution"]["median_s"]),
                resolution_p90=minutes(r["resolution"]["p90_s"]),
                csat="–" if r["csat"]["average"] is None else f"{r['csat']['average']:.1f}",
                csat_n=r["csat"]["n"],
            )
        )
    return "\n\n".join(blocks)
