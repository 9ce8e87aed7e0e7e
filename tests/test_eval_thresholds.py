"""Choosing the thresholds from the trade-off curve (kb.evaluation): the sums behind the pick.

The model is beside the point here: the hits are written out, as ``search_sync`` would return them.
"""

from __future__ import annotations

import pytest

from bot.config import KbSettings
from bot.evaluation import Halves
from kb.decision import Thresholds
from kb.evaluation import (
    ANSWER_GRID,
    FLOOR_GRID,
    MARGIN_GRID,
    LabelledQuery,
    TradeOff,
    choose_thresholds,
    threshold_grid,
    trade_off,
    utility_noise,
    verbatim_out_of_scope,
)
from kb.search import Hit


def hits(*scored: tuple[str, float]) -> list[Hit]:
    return [Hit(i, key, i, 1, key, "en", score, "question") for i, (key, score) in enumerate(scored, start=1)]


def query(text: str, *expected: str) -> LabelledQuery:
    return LabelledQuery(text, frozenset(expected), "en")


QUERIES = [
    query("sure and right", "a"),  # 0.95: answered at any threshold on the grid, right
    query("sure and wrong", "b"),  # 0.90 on "a": answered, wrong
    query("clear lead", "c"),  # 0.62, 0.15 ahead: answered by the margin rule only when it is <= 0.15
    query("close call", "d"),  # 0.72 vs 0.70: answered by the threshold only
    query("not covered"),  # 0.80, 0.10 ahead: out of scope, answered at a threshold <= 0.80
    query("How do I pay?"),  # out of scope, yet word for word a KB question
]
RESULTS = [
    hits(("a", 0.95), ("b", 0.40)),
    hits(("a", 0.90), ("b", 0.85)),
    hits(("c", 0.62), ("x", 0.47)),
    hits(("d", 0.72), ("x", 0.70)),
    hits(("x", 0.80), ("y", 0.70)),
    hits(("pay", 0.99), ("y", 0.30)),
]


def test_trade_off_counts_each_decision_once() -> None:
    verbatim = verbatim_out_of_scope(QUERIES, ["how do i pay", "Something else?"])
    assert verbatim == [False, False, False, False, False, True]

    row = trade_off(QUERIES, RESULTS, Thresholds(0.70, 0.50, 0.10), verbatim=verbatim, cost=2.0)
    # in scope: a (right), b (wrong), c (margin 0.15 >= 0.10), d (0.72 >= 0.70): 4 of 4, 3 right
    assert row.in_scope_answered == 1.0
    assert row.answers_right == pytest.approx(3 / 4)
    assert row.out_of_scope_answered == 1.0
    assert row.out_of_scope_answered_clean == 1.0  # the one left is answered too
    assert row.utility == pytest.approx((3 - 2.0 * 3) / 6)

    strict = trade_off(QUERIES, RESULTS, Thresholds(0.85, 0.50, 0.20), verbatim=verbatim, cost=2.0)
    # a and b (>= 0.85) answered; c's lead is too small, d and "not covered" below 0.85
    assert strict.in_scope_answered == pytest.approx(2 / 4)
    assert strict.answers_right == pytest.approx(1 / 2)
    assert strict.out_of_scope_answered == pytest.approx(1 / 2)  # the verbatim one only
    assert strict.out_of_scope_answered_clean == 0.0
    assert strict.utility == pytest.approx((1 - 2.0 * 2) / 6)
    assert strict.outcomes == (1.0, -2.0, 0.0, 0.0, 0.0, -2.0)  # per query, in order

    # a floor above c's 0.62 keeps the margin rule from answering it
    floored = trade_off(QUERIES, RESULTS, Thresholds(0.70, 0.50, 0.10, 0.65), verbatim=verbatim)
    assert floored.margin_floor == 0.65 and row.margin_floor == 0.50
    assert floored.in_scope_answered == pytest.approx(3 / 4)
    assert floored.utility == pytest.approx((2 - 2.0 * 3) / 6)
    assert "outcomes" not in floored.as_dict()


def test_held_out_trials_price_wrong_answers_on_a_set_without_unanswerable_questions() -> None:
    """An in-scope question asked of a KB without its entries: any answer there is wrong."""
    queries, results = QUERIES[:4], RESULTS[:4]
    held_out = [
        hits(("x", 0.90), ("y", 0.40)),  # sure of another entry: answered at 0.85, wrong
        None,  # not asked (its entries lie in both halves)
        hits(("x", 0.66), ("y", 0.50)),  # a lead of 0.16: the margin rule answers it unless floored
        hits(("x", 0.55), ("y", 0.52)),  # nothing to answer
    ]
    rule = Thresholds(0.85, 0.50, 0.10)
    plain = trade_off(queries, results, rule)
    row = trade_off(queries, results, rule, held_out=held_out, cost=2.0)
    assert plain.held_out_answered is None
    assert (row.in_scope_answered, row.answers_right) == (plain.in_scope_answered, plain.answers_right)
    assert row.held_out_answered == pytest.approx(2 / 3)
    # a (right), b (wrong), c (margin, right), d (no); then the three trials: -2, -2, 0
    assert row.outcomes == (1.0, -2.0, 1.0, 0.0, -2.0, -2.0, 0.0)
    assert row.utility == pytest.approx((2 - 2.0 * 3) / 7)
    floored = trade_off(queries, results, Thresholds(0.85, 0.50, 0.10, 0.70), held_out=held_out)
    assert floored.held_out_answered == pytest.approx(1 / 3)
    assert "held_out_answered" in row.as_dict()
    with pytest.raises(ValueError, match="3 held-out hit lists for 4 queries"):
        trade_off(queries, results, rule, held_out=held_out[:3])


def test_halves_ask_each_question_of_the_half_without_its_entries() -> None:
    halves = Halves(
        half={"a": 0, "b": 1, "c": 0},
        hits=([hits(("a", 0.9))] * 4, [hits(("b", 0.8))] * 4),
        foreign=[False] * 4,
    )
    queries = [query("a?", "a"), query("b?", "b"), query("a or b?", "a", "b"), query("off topic")]
    assert [halves.own(q) for q in queries] == [0, 1, None, None]
    assert halves.held_out(queries) == [hits(("b", 0.8)), hits(("a", 0.9)), None, None]


def test_rates_without_queries_of_a_kind_are_none() -> None:
    row = trade_off(QUERIES[:1], RESULTS[:1], Thresholds(0.7, 0.5, 0.2))
    assert row.out_of_scope_answered is None and row.out_of_scope_answered_clean is None
    assert trade_off([], [], Thresholds(0.7, 0.5, 0.2)).in_scope_answered is None


def test_choose_takes_the_best_mean_utility_over_sets() -> None:
    def row(answer: float, utility: float) -> TradeOff:
        return TradeOff(answer, 0.2, 0.5, None, None, None, None, utility)

    # the first set alone would pick 0.70; the second drags it to 0.80
    first = [row(0.70, 0.50), row(0.80, 0.45), row(0.90, 0.10)]
    second = [row(0.70, -0.40), row(0.80, 0.20), row(0.90, 0.15)]
    assert choose_thresholds([first]).answer == 0.70
    assert choose_thresholds([first, second]).answer == 0.80
    # ties go to the first grid point
    assert choose_thresholds([[row(0.70, 0.3), row(0.80, 0.3)]]).answer == 0.70
    with pytest.raises(ValueError):
        choose_thresholds([])


def test_within_noise_the_higher_floor_wins() -> None:
    def row(floor: float, outcomes: list[float]) -> TradeOff:
        utility = sum(outcomes) / len(outcomes)
        return TradeOff(0.85, 0.1, floor, None, None, None, None, utility, tuple(outcomes))

    # the floor gives up one right answer in 40: 0.025 below the best, a standard error of 0.025
    low = [1.0] * 20 + [0.0] * 20
    high = [1.0] * 19 + [0.0] * 21
    assert utility_noise([[row(0.5, low), row(0.6, high)]], 0, 1) == pytest.approx(0.025)
    assert choose_thresholds([[row(0.5, low), row(0.6, high)]]).margin_floor == 0.6
    # one in four is no noise: the best point stays
    lower = [1.0] * 10 + [0.0] * 30
    assert choose_thresholds([[row(0.5, low), row(0.6, lower)]]).margin_floor == 0.5
    # over two sets the standard error of the mean is halved: a loss on each is no longer noise
    assert choose_thresholds([[row(0.5, low), row(0.6, high)]] * 2).margin_floor == 0.5
    assert utility_noise([[row(0.5, low), row(0.6, high)]] * 2, 0, 1) == pytest.approx(0.025 / 2**0.5)
    # without per-query outcomes only exact ties count, and the higher floor takes them
    bare = [TradeOff(0.85, 0.1, f, None, None, None, None, 0.3) for f in (0.5, 0.7, 0.6)]
    assert choose_thresholds([bare]).margin_floor == 0.7


def test_the_grid_holds_only_valid_rules() -> None:
    grid = threshold_grid(0.5)
    assert all(0.5 <= t.floor <= t.answer for t in grid)
    assert len({(t.answer, t.margin, t.floor) for t in grid}) == len(grid)  # no point twice
    assert {(t.answer, t.floor) for t in grid if t.margin == 1.0} == {(a, 0.5) for a in ANSWER_GRID}
    assert {t.floor for t in grid if t.answer == 0.65 and t.margin == 0.1} == {0.5, 0.6, 0.65}
    assert {t.floor for t in grid if t.answer == 0.85 and t.margin == 0.1} == set(FLOOR_GRID)


def test_the_defaults_are_a_point_of_the_benchmark_grid() -> None:
    """The shipped thresholds are the pick of benchmarks/thresholds.py (see RESULTS.md): they must
    stay a point of its grid, so a rerun can confirm or move them."""
    kb = KbSettings()
    assert kb.answer_threshold in ANSWER_GRID
    assert kb.answer_margin in MARGIN_GRID
    floor = kb.margin_floor if kb.margin_floor is not None else kb.suggest_threshold
    assert floor in FLOOR_GRID
