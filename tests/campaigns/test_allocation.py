"""The multiple-choice knapsack of uplift allocation (campaigns.allocation)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from campaigns.allocation import NONE, allocate, greedy_by_risk


def _problem(draw, n_max: int = 30, k_max: int = 4):
    n = draw(st.integers(1, n_max))
    k = draw(st.integers(1, k_max))
    value = draw(
        arrays(
            np.float64, (n, k), elements=st.floats(-1, 1, allow_nan=False, allow_subnormal=False)
        )
    )
    cost = draw(
        arrays(
            np.float64, (n, k), elements=st.floats(0.5, 50, allow_nan=False, allow_subnormal=False)
        )
    )
    budget = draw(st.floats(0, 500, allow_nan=False, allow_subnormal=False))
    return value, cost, budget


@st.composite
def problems(draw):
    return _problem(draw)


@settings(max_examples=200, deadline=None)
@given(problems())
def test_it_never_exceeds_the_budget_nor_gives_two_offers(problem):
    value, cost, budget = problem
    result = allocate(value, cost, budget)
    assert result.choice.shape == (len(value),)
    assert ((result.choice >= NONE) & (result.choice < value.shape[1])).all()
    rows = result.chosen
    assert cost[rows, result.choice[rows]].sum() <= budget + 1e-9
    assert (value[rows, result.choice[rows]] > 0).all()  # never an offer worth nothing


def _optimum(value: np.ndarray, cost: np.ndarray, budget: float) -> float:
    best = 0.0
    options = range(-1, value.shape[1])
    for choice in itertools.product(options, repeat=len(value)):
        c = np.array(choice)
        rows = np.flatnonzero(c >= 0)
        if cost[rows, c[rows]].sum() <= budget:
            best = max(best, value[rows, c[rows]].sum())
    return best


def test_it_comes_close_to_the_exact_optimum_on_small_cases():
    rng = np.random.default_rng(3)
    gaps = []
    for _ in range(40):
        value = rng.uniform(0, 1, (6, 3))
        cost = rng.uniform(1, 10, (6, 3))
        budget = rng.uniform(5, 25)
        exact = _optimum(value, cost, budget)
        found = allocate(value, cost, budget).value
        # the Lagrangian rounding loses at most about one candidate's value
        assert exact - found <= value.max() + 1e-9
        gaps.append(1 - found / exact)
    assert np.median(gaps) < 0.01
    assert np.mean(gaps) < 0.05


def test_it_beats_greedy_by_risk_where_the_riskiest_do_not_respond():
    # The most at-risk half would stay dormant whatever we offer (gain ~0); the others respond.
    n = 200
    risk = np.linspace(1, 0, n)
    gain = np.where(risk > 0.5, 0.01, 0.3)[:, None] * np.array([[0.6, 1.0]])  # 2 reward levels
    cost = np.tile([5.0, 10.0], (n, 1))
    budget = 500.0
    chosen = greedy_by_risk(np.argsort(-risk), cost[:, 1], budget)
    greedy_value = gain[chosen, 1].sum()
    result = allocate(gain, cost, budget)
    assert result.spent <= budget
    assert result.value > 3 * greedy_value


def test_it_spends_nothing_when_no_offer_is_worth_it():
    result = allocate(-np.ones((5, 2)), np.ones((5, 2)), 100.0)
    assert (result.choice == NONE).all() and result.spent == 0


@pytest.mark.parametrize(
    ("value", "cost", "budget", "message"),
    [
        (np.ones((2, 2)), np.ones((2, 3)), 1.0, "both be"),
        (np.ones((2, 2)), np.zeros((2, 2)), 1.0, "cost more than 0"),
        (np.ones((2, 2)), np.ones((2, 2)), -1.0, "budget"),
        (np.full((2, 2), np.nan), np.ones((2, 2)), 1.0, "finite"),
    ],
)
def test_it_refuses_bad_input_with_a_clear_message(value, cost, budget, message):
    with pytest.raises(ValueError, match=message):
        allocate(value, cost, budget)
