"""Every string a customer sees, in one place per language.

Texts are HTML for Telegram's ``parse_mode=HTML``; ``{placeholders}`` are filled with values that
the caller has already escaped. A language without a table falls back to English.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Texts:
    start: str
    help: str
    source: str
    helped: str
    not_helped: str
    did_you_mean: str
    no_answer: str
    empty_question: str
    not_text: str
    thanks_feedback: str
    sorry_feedback: str
    feedback_already: str
    feedback_unknown: str
    article_gone: str
    human_requested: str
    human_already: str
    error: str
    button_helped: str
    button_not_helped: str
    button_human: str
    command_start: str
    command_help: str
    command_human: str


EN = Texts(
    start=(
        "Hi, {name}! I'm the help desk bot.\n\n"
        "Ask me a question in your own words and I'll answer from our help articles, "
        "right away, day or night. If I can't help, I'll pass you to a person.\n\n"
        "Try: <i>{example}</i>"
    ),
    help=(
        "<b>How this works</b>\n"
        "• Type a question in your own words: I search our help articles and answer.\n"
        "• Tell me whether an answer helped with the buttons under it.\n"
        "• If I'm not sure, I'll suggest the closest articles.\n"
        "• /human asks for a person.\n"
        "• /start shows the welcome again."
    ),
    source="Source: {title}",
    helped="Helped",
    not_helped="Didn't help",
    did_you_mean="I'm not sure I understood. Did you mean one of these?",
    no_answer=(
        "I don't have an answer to that yet. I've noted your question so our team can add one.\n"
        "Would you like to ask a person?"
    ),
    empty_question="Please type your question in words, and I'll look for an answer.",
    not_text="I can only read text for now. Please type your question, and I'll look for an answer.",
    thanks_feedback="Thanks for the feedback!",
    sorry_feedback="Sorry that didn't help. You can rephrase the question, or ask a person.",
    feedback_already="Already noted, thank you.",
    feedback_unknown="That answer is no longer available.",
    article_gone="Sorry, that article is no longer available. Please ask your question again.",
    human_requested=(
        "Got it: I've asked a person from our team to take over (request #{ticket}). "
        "They will reply here, in this chat."
    ),
    human_already="Your request #{ticket} is already with our team. They will reply here, in this chat.",
    error="Sorry, something went wrong on our side. Please try again in a moment.",
    button_helped="👍 Helped",
    button_not_helped="👎 Didn't help",
    button_human="🙋 Ask a person",
    command_start="Welcome and what I can do",
    command_help="How to use this bot",
    command_human="Ask a person",
)

_TABLES: dict[str, Texts] = {"en": EN}


def texts_for(language: str | None) -> Texts:
    """The table for an IETF language tag such as ``en-GB``; English when there is none."""
    if language:
        base = language.split("-")[0].lower()
        if base in _TABLES:
            return _TABLES[base]
    return EN
