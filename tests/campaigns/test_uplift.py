"""The uplift model (campaigns.uplift) on synthetic history with a known effect: both estimators
recover it, an offer that changes nothing gets no gain, the Qini ranks the true effect above
noise, a saved model predicts the same, and bad history is refused with a clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from campaigns.uplift import UpliftConfig, UpliftModel, qini

TAKER_ACTIVE = 0.95


def _p_control(x: np.ndarray) -> np.ndarray:
    return 0.9 - 0.7 * x[:, 0]  # the riskier (x0 -> 1), the less active without a task


def _take_up(x: np.ndarray, o: np.ndarray) -> np.ndarray:
    z = -2.0 + 3.0 * x[:, 0] + 1.5 * (o[:, 0] - 1.0)  # o0: reward level 0.5 / 1 / 1.5
    return 1.0 / (1.0 + np.exp(-z))


def _true_gain(x: np.ndarray, o: np.ndarray) -> np.ndarray:
    return _take_up(x, o) * (TAKER_ACTIVE - _p_control(x))


def _history(n: int, seed: int, *, effect: bool = True) -> dict[str, np.ndarray]:
    """Rows as the platform records them: treated (an offer) or holdout, taken up, active."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.random(n), rng.normal(size=n)])  # x1 is noise
    o = np.column_stack([rng.choice([0.5, 1.0, 1.5], size=n), rng.random(n)])  # o1 is noise
    t = (rng.random(n) < 0.7).astype(float)
    p0 = _p_control(x)
    taken = (t == 1) & (rng.random(n) < _take_up(x, o))
    p_active = np.where(taken & effect, TAKER_ACTIVE, p0)
    active = (rng.random(n) < p_active).astype(float)
    spend = active * rng.gamma(2.0, 50.0, size=n)
    return {"X": x, "O": o, "t": t, "y_active": active, "y_spend": spend, "y_taken": taken * 1.0}


def _fit(history: dict[str, np.ndarray], estimator: str = "take-up") -> UpliftModel:
    return UpliftModel.fit(
        history["X"],
        history["O"],
        history["t"],
        history["y_active"],
        history["y_spend"],
        y_taken=history["y_taken"],
        config=UpliftConfig(estimator=estimator, num_threads=1),
        seed=1,
    )


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Candidates across the risk range, each offered the three reward levels."""
    x = np.column_stack([np.linspace(0.02, 0.98, 60), np.zeros(60)])
    levels = np.array([0.5, 1.0, 1.5])
    offers = np.stack(
        [np.broadcast_to(levels, (60, 3)), np.full((60, 3), 0.5)], axis=-1
    )  # [N, K, g]
    return x, offers


def _gain(model: UpliftModel) -> tuple[np.ndarray, np.ndarray]:
    x, offers = _grid()
    gain, _ = model.predict_gain(x, offers, np.ones(offers.shape[:2]))
    truth = np.stack([_true_gain(x, offers[:, j]) for j in range(3)], axis=1)
    return gain, truth


@pytest.fixture(scope="module")
def history() -> dict[str, np.ndarray]:
    return _history(20_000, seed=3)


def test_it_recovers_a_known_effect_with_the_take_up_estimator(history):
    gain, truth = _gain(_fit(history))
    assert np.corrcoef(gain.ravel(), truth.ravel())[0, 1] > 0.95
    assert np.abs(gain - truth).mean() < 0.03
    # a higher reward buys more take-up, hence more gain, at every risk level (on average)
    assert (gain[:, 2] - gain[:, 0]).mean() > 0.05


def test_it_recovers_the_effect_less_sharply_with_the_t_learner(history):
    take_up_gain, truth = _gain(_fit(history, "take-up"))
    t_gain, _ = _gain(_fit(history, "t-learner"))
    assert np.corrcoef(t_gain.ravel(), truth.ravel())[0, 1] > 0.6
    assert np.abs(take_up_gain - truth).mean() < np.abs(t_gain - truth).mean()


def test_it_gives_no_gain_to_an_offer_that_changes_nothing():
    gain, _ = _gain(_fit(_history(20_000, seed=4, effect=False)))
    assert np.abs(gain).mean() < 0.03  # against about 0.2 where the offer works


def test_its_qini_ranks_the_true_effect_above_noise():
    test = _history(30_000, seed=5)
    truth = _true_gain(test["X"], test["O"])
    noise = np.random.default_rng(0).random(truth.size)
    good = qini(truth, test["t"], test["y_active"])
    bad = qini(noise, test["t"], test["y_active"])
    assert good["qini_coefficient"] > bad["qini_coefficient"] + 0.05


def test_a_saved_model_predicts_the_same(history, tmp_path):
    model = _fit(history)
    loaded = UpliftModel.load(model.save(tmp_path / "uplift.json"))
    assert loaded.config == model.config
    np.testing.assert_array_equal(_gain(loaded)[0], _gain(model)[0])


def test_a_model_saved_before_the_take_up_estimator_loads_as_a_t_learner(history, tmp_path):
    t_learner = _fit(history, "t-learner")
    data = json.loads(t_learner.to_json())
    del data["config"]["estimator"]
    loaded = UpliftModel.from_json(json.dumps(data))
    assert loaded.config.estimator == "t-learner"
    np.testing.assert_array_equal(_gain(loaded)[0], _gain(t_learner)[0])


def test_it_refuses_the_take_up_estimator_without_take_up_labels(history):
    with pytest.raises(ValueError, match="y_taken: the take-up estimator needs"):
        UpliftModel.fit(
            history["X"], history["O"], history["t"], history["y_active"], history["y_spend"]
        )


def test_it_refuses_too_few_taken_rows_and_names_the_count(history):
    y_taken = np.zeros_like(history["y_taken"])
    y_taken[np.flatnonzero(history["t"] == 1)[:5]] = 1.0
    with pytest.raises(ValueError, match=r"y_taken: 5 treated rows took their task up"):
        _fit({**history, "y_taken": y_taken})


def test_it_refuses_an_unknown_estimator():
    with pytest.raises(ValueError, match="estimator: 'x-learner' is not one of"):
        UpliftConfig(estimator="x-learner")
