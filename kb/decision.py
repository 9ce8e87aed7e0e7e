"""The one answer decision: answer, suggest ("did you mean") or escalate, from the thresholds."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from kb.search import Hit

MAX_SUGGESTIONS = 3


class Action(enum.StrEnum):
    ANSWER = "answer"
    SUGGEST = "suggest"
    ESCALATE = "escalate"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``answer``: answer at or above this score. ``suggest``: below it, escalate.
    ``margin``: in between, still answer when the top hit leads the next one by this much
    (one clear candidate is an answer, not a question); 1.0 turns that off. ``margin_floor``:
    the margin rule applies only from this score up (None: from ``suggest``). In a small KB a
    low-scoring top hit easily leads a short list, right or not: the floor keeps such hits a
    "did you mean". ``cross_lingual_suggest``: the suggest threshold for a question written in
    another language than the KB's (None: ``suggest``); answers are not affected."""

    answer: float
    suggest: float
    margin: float = 1.0
    margin_floor: float | None = None
    cross_lingual_suggest: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.suggest <= self.answer <= 1.0:
            raise ValueError(f"need 0 <= suggest ({self.suggest}) <= answer ({self.answer}) <= 1")
        if not 0.0 < self.margin <= 1.0:
            raise ValueError(f"need 0 < margin ({self.margin}) <= 1")
        if self.margin_floor is not None and not self.suggest <= self.margin_floor <= self.answer:
            raise ValueError(
                f"need suggest ({self.suggest}) <= margin_floor ({self.margin_floor}) "
                f"<= answer ({self.answer})"
            )
        if self.cross_lingual_suggest is not None and not 0.0 <= self.cross_lingual_suggest <= self.answer:
            raise ValueError(
                f"need 0 <= cross_lingual_suggest ({self.cross_lingual_suggest}) <= answer ({self.answer})"
            )

    def suggest_for(self, *, cross_lingual: bool) -> float:
        """The suggest threshold for a question in the KB's language, or in another one."""
        if cross_lingual and self.cross_lingual_suggest is not None:
            return self.cross_lingual_suggest
        return self.suggest

    @property
    def floor(self) -> float:
        """The lowest top score the margin rule answers."""
        return self.suggest if self.margin_floor is None else self.margin_floor


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    hits: tuple[Hit, ...]  # every hit the bot saw, best first (logged with the message)
    chosen: tuple[Hit, ...]  # the answer (one hit) or the suggestions (up to three); empty to escalate

    @property
    def top_score(self) -> float | None:
        return self.hits[0].score if self.hits else None


def decide(hits: Sequence[Hit], thresholds: Thresholds, *, cross_lingual: bool = False) -> Decision:
    """``cross_lingual``: the question is written in another language than the KB's."""
    ranked = tuple(sorted(hits, key=lambda h: h.score, reverse=True))
    if ranked and _confident(ranked, thresholds):
        return Decision(Action.ANSWER, ranked, ranked[:1])
    suggest = thresholds.suggest_for(cross_lingual=cross_lingual)
    suggestions = tuple(h for h in ranked if h.score >= suggest)[:MAX_SUGGESTIONS]
    if suggestions:
        return Decision(Action.SUGGEST, ranked, suggestions)
    return Decision(Action.ESCALATE, ranked, ())


def _confident(ranked: tuple[Hit, ...], thresholds: Thresholds) -> bool:
    top = ranked[0].score
    if top >= thresholds.answer:
        return True
    runner_up = ranked[1].score if len(ranked) > 1 else 0.0
    return top >= thresholds.floor and top - runner_up >= thresholds.margin
