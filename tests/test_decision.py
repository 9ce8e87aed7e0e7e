"""The answer decision: one function, three outcomes, thresholds from config."""

from __future__ import annotations

import pytest

from kb.decision import MAX_SUGGESTIONS, Action, Thresholds, decide
from kb.search import Hit

T = Thresholds(answer=0.6, suggest=0.4)


def hit(key: str, score: float) -> Hit:
    return Hit(1, key, 1, 1, key.title(), "en", score, "question")


def test_answer_at_or_above_the_answer_threshold() -> None:
    decision = decide([hit("b", 0.5), hit("a", 0.6)], T)
    assert decision.action is Action.ANSWER
    assert [h.article_key for h in decision.chosen] == ["a"]
    assert [h.article_key for h in decision.hits] == ["a", "b"]
    assert decision.top_score == 0.6


def test_suggest_up_to_three_in_the_middle_band() -> None:
    hits = [hit(k, s) for k, s in [("a", 0.59), ("b", 0.55), ("c", 0.5), ("d", 0.45), ("e", 0.3)]]
    decision = decide(hits, T)
    assert decision.action is Action.SUGGEST
    assert [h.article_key for h in decision.chosen] == ["a", "b", "c"]
    assert len(decision.chosen) == MAX_SUGGESTIONS


def test_only_hits_above_the_suggest_threshold_are_suggested() -> None:
    decision = decide([hit("a", 0.45), hit("b", 0.2)], T)
    assert [h.article_key for h in decision.chosen] == ["a"]


def test_escalate_below_or_without_hits() -> None:
    assert decide([hit("a", 0.39)], T).action is Action.ESCALATE
    assert decide([], T).action is Action.ESCALATE
    assert decide([], T).chosen == ()


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        Thresholds(answer=0.3, suggest=0.5)


def test_one_clear_candidate_in_the_middle_band_is_answered() -> None:
    with_margin = Thresholds(answer=0.7, suggest=0.5, margin=0.2)
    assert decide([hit("a", 0.64), hit("b", 0.40)], with_margin).action is Action.ANSWER
    assert decide([hit("a", 0.64)], with_margin).action is Action.ANSWER
    assert decide([hit("a", 0.64), hit("b", 0.50)], with_margin).action is Action.SUGGEST
    assert decide([hit("a", 0.45), hit("b", 0.10)], with_margin).action is Action.ESCALATE
    without_margin = Thresholds(answer=0.7, suggest=0.5)
    assert decide([hit("a", 0.64), hit("b", 0.40)], without_margin).action is Action.SUGGEST, "1.0 is off"


def test_the_margin_rule_answers_only_from_its_floor_up() -> None:
    floored = Thresholds(answer=0.85, suggest=0.5, margin=0.1, margin_floor=0.65)
    # the small-KB case: a low top hit well ahead of the right one is a "did you mean" with both
    low = decide([hit("recover", 0.596), hit("password", 0.434)], floored)
    assert low.action is Action.SUGGEST
    assert [h.article_key for h in low.chosen] == ["recover"]  # 0.434 is below suggest
    assert decide([hit("a", 0.64), hit("b", 0.30)], floored).action is Action.SUGGEST
    assert decide([hit("a", 0.65), hit("b", 0.50)], floored).action is Action.ANSWER  # at the floor
    assert decide([hit("a", 0.70), hit("b", 0.65)], floored).action is Action.SUGGEST  # lead too small
    assert decide([hit("a", 0.86), hit("b", 0.85)], floored).action is Action.ANSWER  # the threshold
    # unset, the floor is the suggest threshold: the rule as before
    unset = Thresholds(answer=0.85, suggest=0.5, margin=0.1)
    assert unset.floor == 0.5
    assert decide([hit("recover", 0.596), hit("password", 0.434)], unset).action is Action.ANSWER
    assert Thresholds(0.85, 0.5, 0.1, margin_floor=0.5).floor == 0.5
    assert Thresholds(0.85, 0.5, 0.1, margin_floor=0.85).floor == 0.85


@pytest.mark.parametrize("floor", [0.49, 0.86])
def test_the_floor_lies_between_suggest_and_answer(floor: float) -> None:
    with pytest.raises(ValueError, match="margin_floor"):
        Thresholds(answer=0.85, suggest=0.5, margin=0.1, margin_floor=floor)


def test_a_cross_lingual_question_gets_its_own_suggest_threshold() -> None:
    rule = Thresholds(answer=0.85, suggest=0.5, margin=0.1, cross_lingual_suggest=0.35)
    hits = [hit("reset", 0.48), hit("login", 0.40), hit("refund", 0.30)]
    assert decide(hits, rule).action is Action.ESCALATE  # in the KB's language: below 0.5
    offered = decide(hits, rule, cross_lingual=True)
    assert offered.action is Action.SUGGEST
    assert [h.article_key for h in offered.chosen] == ["reset", "login"]  # 0.30 stays out
    assert decide(hits[2:], rule, cross_lingual=True).action is Action.ESCALATE
    # answers do not move: the margin rule keeps its floor (the suggest threshold's 0.5)
    assert decide([hit("a", 0.45), hit("b", 0.10)], rule, cross_lingual=True).action is Action.SUGGEST
    assert decide([hit("a", 0.60), hit("b", 0.45)], rule, cross_lingual=True).action is Action.ANSWER
    # unset: one suggest threshold for every language
    assert decide(hits, Thresholds(0.85, 0.5, 0.1), cross_lingual=True).action is Action.ESCALATE


@pytest.mark.parametrize("value", [-0.1, 0.9])
def test_the_cross_lingual_suggest_threshold_lies_between_0_and_answer(value: float) -> None:
    with pytest.raises(ValueError, match="cross_lingual_suggest"):
        Thresholds(answer=0.85, suggest=0.5, margin=0.1, cross_lingual_suggest=value)
