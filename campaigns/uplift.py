"""The uplift model: per advertiser and offer, the gain in P(active) and in spend from a task.

Pure numpy + LightGBM, no Django import: the allocation and the production code call it with
plain arrays. Three parts:

1. Features (`uplift_features`, `offer_features`): what the model sees of a candidate at
   decision time (the predictor's forecasts, its recent activity) and of an offer.
2. `UpliftModel`: LightGBM boosters fitted on the platform's own randomised campaign history
   (treated = got a task with a known offer, control = holdout), combined by one of two
   estimators: a T-learner, or a take-up model (below).
3. `qini`: the Qini and uplift curves, the Qini coefficient and the AUUC on held-out data.

Why a T-learner (with a control offset) and not an X-learner
-------------------------------------------------------------
The treatment is not a flag but an offer (kind, target, reward): the effect must be predicted
for offers nobody in the control group was shown. An X-learner's second stage imputes, for
every control row, the effect of *an* offer, so it needs an offer per control row (there is
none) and fits two more models on imputed targets whose noise is that of both first-stage
models. The T-learner needs neither: mu0(x) from the control rows, mu1(x, offer) from the
treated rows, effect = mu1 - mu0. Its known weakness is that two independent fits regularise
differently, so their difference is noisy where one group is small (exploration treats a few
percent). We remove most of it the way the X-learner does, by learning the effect relative to
the control model: the treated booster starts from the control model's margin (LightGBM's
`init_score`, log-odds for P(active), log for spend), so its trees model only how the offer
moves the outcome, and an offer that changes nothing gives a gain that shrinks to zero instead
of the difference of two noisy fits. `UpliftConfig.offset_control=False` gives the plain
T-learner.

The take-up estimator (the default)
-----------------------------------
The T-learner learns the gain from the difference in activity between treated and control
rows: a small difference between two noisy rates, so it ranks weakly on one exploration week.
The platform sees more than the outcome, though: it records which advertisers took their task
up (the push system's "accepted"). An offer can only change the behaviour of an advertiser who
takes it up, so

    p1 = (1 - P(take up)) p0 + P(take up) q,    gain_active = P(take up) (q - p0)

with P(take up | x, offer) a classifier on the treated rows (every one of them is labelled,
taken or not, which is far more signal than their activity difference) and
q = P(active | x, offer, took it up) a classifier on the rows that took it up. The assumption:
advertisers who do not take the task up behave as without it. It errs where it fails: the
message itself may nudge some (gain underestimated), and advertisers who take tasks up are
riskier than their x shows, so p0 overstates their activity without the task (gain
underestimated again, by about the same factor for every offer, which leaves the ranking).
`UpliftConfig.estimator="t-learner"` keeps the T-learner for the active gain. The spend model
(and so the revenue gain) is the T-learner's under both.

Definitions (all per candidate n and offer k)
---------------------------------------------
- p0 = P(active in the window | x, no task); p1 = P(active | x, offer k, task handed out).
- s0, s1: expected spend in the window without and with the task (Tweedie, log link).
- gain_active = p1 - p0.
- expected reward paid = reward x P(paid | x, offer). When the history records which tasks
  were paid (`y_paid`), P(paid) is its own treated model; otherwise it is p1: every spend,
  click and active-days target needs an active day, so P(paid) <= p1 and the cost is an upper
  bound (for login-day tasks, which pay without spend, it may be an underestimate).
- gain_revenue = (s1 - s0) - expected reward paid: incremental net revenue of handing out the
  task, in the money unit of the spend and reward arrays.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

FORMAT = "uplift-t-learner/1"

# Offer kinds, in the order of `kind_index` (the values of campaigns.models.TaskKind).
OFFER_KINDS = ("spend_target", "click_target", "active_days_target", "login_days")

UPLIFT_FEATURE_NAMES = (
    "log_pred_spend_sum",  # log1p of predicted expenditure summed over scenarios
    "log_pred_spend_max",  # log1p of the largest per-scenario predicted expenditure
    "log_pred_clicks_sum",  # log1p of predicted clicks summed over scenarios
    "pred_active_days_sum",  # predicted active days summed over scenarios
    "pred_active_days_max",  # predicted active days in the most active scenario
    "n_scenarios_active",  # scenarios with at least half a predicted active day
    "p_inactive_all",  # prod_s P(inactive in s): P(inactive everywhere), scenarios independent
    "p_inactive_min",  # P(inactive) in the scenario most likely to stay active
    "recent_active_days",  # active days in the recent window
    "log_recent_spend",  # log1p of spend in the recent window
    "log_spend_trend",  # log1p(predicted spend) - log1p(recent spend): forecast vs recent level
)

OFFER_FEATURE_NAMES = (
    *(f"kind_{kind}" for kind in OFFER_KINDS),  # one-hot of the kind
    "log_target_vs_level",  # log((target + 1) / (predicted level + 1)): how far the ask stretches
    "log_target",  # log1p(target)
    "log_reward",  # log1p(reward)
    "reward_per_target",  # reward / target: the rebate rate for spend targets
)


# --------------------------------------------------------------------------------------------
# Validation helpers


def _array(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    return arr


def _finite(name: str, arr: np.ndarray, *, allow_nan: bool = False) -> None:
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(f"{name}: non-finite value at index {where}")


def _non_negative(name: str, arr: np.ndarray) -> None:
    if (arr < 0).any():
        where = np.argwhere(arr < 0)[0].tolist()
        raise ValueError(f"{name}: negative value at index {where}")


def _same_shape(shapes: dict[str, tuple[int, ...]]) -> None:
    first_name, first = next(iter(shapes.items()))
    for name, shape in shapes.items():
        if shape != first:
            raise ValueError(f"{name}: shape {shape} does not match {first_name} {first}")


# --------------------------------------------------------------------------------------------
# Features


def uplift_features(
    pred_expenditure: np.ndarray,
    pred_clicks: np.ndarray,
    pred_active_days: np.ndarray,
    p_inactive: np.ndarray,
    recent_active_days: np.ndarray,
    recent_spend: np.ndarray,
) -> np.ndarray:
    """Candidate features X [N, f] in `UPLIFT_FEATURE_NAMES` order.

    Per-scenario arrays are [N, S] (the predictor's next-window forecasts; a scenario an
    advertiser does not use has zeros). `p_inactive` [N, S] may be NaN where the predictor has
    no predictive distribution; the per-advertiser features then use the scenarios that have
    one, and are NaN (LightGBM's missing value) when none has.
    """
    spend = _array("pred_expenditure", pred_expenditure, 2)
    clicks = _array("pred_clicks", pred_clicks, 2)
    days = _array("pred_active_days", pred_active_days, 2)
    p_off = _array("p_inactive", p_inactive, 2)
    recent_days = _array("recent_active_days", recent_active_days, 1)
    recent = _array("recent_spend", recent_spend, 1)
    _same_shape(
        {
            "pred_expenditure": spend.shape,
            "pred_clicks": clicks.shape,
            "pred_active_days": days.shape,
            "p_inactive": p_off.shape,
        }
    )
    _same_shape({"pred_expenditure rows": spend.shape[:1], "recent_active_days": recent_days.shape})
    _same_shape({"pred_expenditure rows": spend.shape[:1], "recent_spend": recent.shape})
    if spend.shape[1] == 0:
        raise ValueError("pred_expenditure: no scenario columns")
    for name, arr in (
        ("pred_expenditure", spend),
        ("pred_clicks", clicks),
        ("pred_active_days", days),
        ("recent_active_days", recent_days),
        ("recent_spend", recent),
    ):
        _finite(name, arr)
        _non_negative(name, arr)
    _finite("p_inactive", p_off, allow_nan=True)
    with np.errstate(invalid="ignore"):
        if ((p_off < 0) | (p_off > 1)).any():
            where = np.argwhere((p_off < 0) | (p_off > 1))[0].tolist()
            raise ValueError(f"p_inactive: value outside [0, 1] at index {where}")

    known = ~np.isnan(p_off)
    any_known = known.any(axis=1)
    p_all = np.where(any_known, np.prod(np.where(known, p_off, 1.0), axis=1), np.nan)
    p_min = np.where(any_known, np.min(np.where(known, p_off, np.inf), axis=1), np.nan)
    spend_sum = spend.sum(axis=1)
    columns = [
        np.log1p(spend_sum),
        np.log1p(spend.max(axis=1)),
        np.log1p(clicks.sum(axis=1)),
        days.sum(axis=1),
        days.max(axis=1),
        (days >= 0.5).sum(axis=1).astype(np.float64),
        p_all,
        p_min,
        recent_days,
        np.log1p(recent),
        np.log1p(spend_sum) - np.log1p(recent),
    ]
    return np.stack(columns, axis=1)  # [N, f]


def offer_features(
    kind_index: np.ndarray,
    target: np.ndarray,
    predicted_level: np.ndarray,
    reward: np.ndarray,
) -> np.ndarray:
    """Offer features O [N, K, g] in `OFFER_FEATURE_NAMES` order, for K offers per candidate.

    `kind_index` indexes `OFFER_KINDS`; `target` is in the kind's unit (money, clicks, days);
    `predicted_level` is the candidate's predicted value of that unit over the task's window
    in the task's scope (what it would do anyway); `reward` is money.
    """
    kind = np.asarray(kind_index)
    if kind.ndim != 2:
        raise ValueError(f"kind_index: expected a 2-d array, got shape {kind.shape}")
    if not np.issubdtype(kind.dtype, np.integer):
        raise ValueError(f"kind_index: expected integers, got dtype {kind.dtype}")
    tgt = _array("target", target, 2)
    level = _array("predicted_level", predicted_level, 2)
    rew = _array("reward", reward, 2)
    _same_shape(
        {
            "kind_index": kind.shape,
            "target": tgt.shape,
            "predicted_level": level.shape,
            "reward": rew.shape,
        }
    )
    if ((kind < 0) | (kind >= len(OFFER_KINDS))).any():
        where = np.argwhere((kind < 0) | (kind >= len(OFFER_KINDS)))[0].tolist()
        raise ValueError(f"kind_index: outside 0..{len(OFFER_KINDS) - 1} at index {where}")
    for name, arr in (("target", tgt), ("predicted_level", level), ("reward", rew)):
        _finite(name, arr)
        _non_negative(name, arr)
    if (tgt == 0).any():
        raise ValueError(f"target: zero at index {np.argwhere(tgt == 0)[0].tolist()}")

    one_hot = np.eye(len(OFFER_KINDS))[kind]  # [N, K, kinds]
    rest = np.stack(
        [
            np.log((tgt + 1.0) / (level + 1.0)),
            np.log1p(tgt),
            np.log1p(rew),
            rew / tgt,
        ],
        axis=-1,
    )  # [N, K, 4]
    return np.concatenate([one_hot, rest], axis=-1)  # [N, K, g]


# --------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class UpliftConfig:
    """LightGBM settings shared by the four boosters; saved with the model."""

    num_leaves: int = 15
    learning_rate: float = 0.05
    max_rounds: int = 400
    early_stopping_rounds: int = 30
    min_data_in_leaf: int = 20
    lambda_l2: float = 1.0
    tweedie_variance_power: float = 1.5
    offset_control: bool = True
    estimator: str = "take-up"  # or "t-learner" (module docstring)
    num_threads: int = 0  # 0: LightGBM's default (all cores)

    def params(self, objective: str, seed: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": objective,
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "lambda_l2": self.lambda_l2,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        if objective == "tweedie":
            params["tweedie_variance_power"] = self.tweedie_variance_power
        return params

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator: {self.estimator!r} is not one of {list(ESTIMATORS)}")


ESTIMATORS = ("take-up", "t-learner")
# The take-up estimator needs this many treated rows that took their task up.
MIN_TAKEN_ROWS = 40


@dataclass(frozen=True)
class UpliftPrediction:
    """Every component behind the gains, per candidate [N] or candidate x offer [N, K]."""

    p_control: np.ndarray  # [N]     P(active | x, no task)
    p_treated: np.ndarray  # [N, K]  P(active | x, offer)
    spend_control: np.ndarray  # [N]     E[spend | x, no task]
    spend_treated: np.ndarray  # [N, K]  E[spend | x, offer]
    p_paid: np.ndarray  # [N, K]  P(reward paid | x, offer)
    reward: np.ndarray  # [N, K]

    @property
    def gain_active(self) -> np.ndarray:
        return self.p_treated - self.p_control[:, None]

    @property
    def expected_reward(self) -> np.ndarray:
        return self.reward * self.p_paid

    @property
    def gain_revenue(self) -> np.ndarray:
        return self.spend_treated - self.spend_control[:, None] - self.expected_reward


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _split(n: int, treated: np.ndarray, valid_share: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean [n]: validation rows, drawn separately within treated and control rows."""
    valid = np.zeros(n, dtype=bool)
    for group in (treated, ~treated):
        rows = np.flatnonzero(group)
        n_valid = round(valid_share * rows.size)
        if n_valid < 1 or n_valid >= rows.size:
            label = "treated" if group is treated else "control"
            raise ValueError(
                f"valid_share: {valid_share} leaves {n_valid} of {rows.size} {label} rows for "
                "validation; need at least one row on each side of the split"
            )
        valid[rng.choice(rows, size=n_valid, replace=False)] = True
    return valid


@dataclass
class UpliftModel:
    """T-learner: control boosters on X, treated boosters on [X, O]. Build with `fit`/`load`."""

    config: UpliftConfig
    x_names: tuple[str, ...]
    o_names: tuple[str, ...]
    boosters: dict[str, lgb.Booster]
    best_rounds: dict[str, int] = field(default_factory=dict)

    # ---- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        O: np.ndarray,  # noqa: E741  (the offer matrix, as in the uplift literature)
        t: np.ndarray,
        y_active: np.ndarray,
        y_spend: np.ndarray,
        *,
        seed: int = 0,
        valid_share: float = 0.2,
        y_paid: np.ndarray | None = None,
        y_taken: np.ndarray | None = None,
        config: UpliftConfig | None = None,
        x_names: tuple[str, ...] | None = None,
        o_names: tuple[str, ...] | None = None,
    ) -> UpliftModel:
        """Fit on history rows: X [n, f] at decision time, O [n, g] the offer (ignored on
        control rows, may be NaN there), t [n] 1 = task handed out, y_active [n] in {0, 1},
        y_spend [n] >= 0, optionally y_paid [n] in {0, 1} (read on treated rows only), and
        y_taken [n] in {0, 1}: the advertiser took its task up (treated rows only; the take-up
        estimator needs it).

        Each booster stops early on a held-out `valid_share` of its rows (split within treated
        and control separately, seeded).
        """
        config = config or UpliftConfig()
        Xa = _array("X", X, 2)
        Oa = _array("O", O, 2)
        ta = _array("t", t, 1)
        ya = _array("y_active", y_active, 1)
        ys = _array("y_spend", y_spend, 1)
        n = Xa.shape[0]
        lengths = {"X": n, "O": Oa.shape[0], "t": ta.size, "y_active": ya.size, "y_spend": ys.size}
        yp = yk = None
        if y_paid is not None:
            yp = _array("y_paid", y_paid, 1)
            lengths["y_paid"] = yp.size
        if y_taken is not None:
            yk = _array("y_taken", y_taken, 1)
            lengths["y_taken"] = yk.size
        elif config.estimator == "take-up":
            raise ValueError(
                "y_taken: the take-up estimator needs which treated rows took their task up "
                "(or use UpliftConfig(estimator='t-learner'))"
            )
        for name, length in lengths.items():
            if length != n:
                raise ValueError(f"{name}: {length} rows, X has {n}")
        if n == 0:
            raise ValueError("X: no rows")
        if not np.isin(ta, (0.0, 1.0)).all():
            raise ValueError(f"t: values must be 0 or 1, got {np.unique(ta)[:5].tolist()}")
        treated = ta == 1.0
        if not treated.any():
            raise ValueError("t: no treated rows (every row is control)")
        if treated.all():
            raise ValueError("t: no control rows (every row is treated)")
        _finite("X", Xa, allow_nan=True)
        _finite("O", Oa[treated], allow_nan=False)
        _finite("y_active", ya)
        _finite("y_spend", ys)
        if not np.isin(ya, (0.0, 1.0)).all():
            raise ValueError("y_active: values must be 0 or 1")
        _non_negative("y_spend", ys)
        if yp is not None:
            _finite("y_paid", yp[treated])
            if not np.isin(yp[treated], (0.0, 1.0)).all():
                raise ValueError("y_paid: values must be 0 or 1 on treated rows")
        if yk is not None:
            _finite("y_taken", yk[treated])
            if not np.isin(yk[treated], (0.0, 1.0)).all():
                raise ValueError("y_taken: values must be 0 or 1 on treated rows")
            n_taken = int(yk[treated].sum())
            if config.estimator == "take-up" and n_taken < MIN_TAKEN_ROWS:
                raise ValueError(
                    f"y_taken: {n_taken} treated rows took their task up; the take-up estimator "
                    f"needs at least {MIN_TAKEN_ROWS} (more history, or estimator='t-learner')"
                )
        if not 0.0 < valid_share < 1.0:
            raise ValueError(f"valid_share: {valid_share} is not in (0, 1)")
        x_names = tuple(x_names) if x_names else tuple(f"x{i}" for i in range(Xa.shape[1]))
        o_names = tuple(o_names) if o_names else tuple(f"o{j}" for j in range(Oa.shape[1]))
        if len(x_names) != Xa.shape[1]:
            raise ValueError(f"x_names: {len(x_names)} names for {Xa.shape[1]} columns of X")
        if len(o_names) != Oa.shape[1]:
            raise ValueError(f"o_names: {len(o_names)} names for {Oa.shape[1]} columns of O")

        rng = np.random.default_rng(seed)
        valid = _split(n, treated, valid_share, rng)
        model = cls(config=config, x_names=x_names, o_names=o_names, boosters={})
        ctrl = ~treated
        model._train("control_active", "binary", Xa, ya, ctrl, valid, seed, x_names)
        model._train("control_spend", "tweedie", Xa, ys, ctrl, valid, seed, x_names)

        XO = np.concatenate([Xa, Oa], axis=1)
        names = x_names + o_names
        offset_active = offset_spend = None
        if config.offset_control:
            offset_active = model.boosters["control_active"].predict(Xa, raw_score=True)
            offset_spend = model.boosters["control_spend"].predict(Xa, raw_score=True)
        model._train("treated_active", "binary", XO, ya, treated, valid, seed, names, offset_active)
        model._train("treated_spend", "tweedie", XO, ys, treated, valid, seed, names, offset_spend)
        if yp is not None:
            model._train("treated_paid", "binary", XO, yp, treated, valid, seed, names)
        if config.estimator == "take-up":
            taken = treated & (yk == 1.0)
            model._train("treated_taken", "binary", XO, yk, treated, valid, seed, names)
            model._train("taken_active", "binary", XO, ya, taken, valid, seed, names)
        return model

    def _train(
        self,
        name: str,
        objective: str,
        features: np.ndarray,
        label: np.ndarray,
        rows: np.ndarray,
        valid: np.ndarray,
        seed: int,
        names: tuple[str, ...],
        offset: np.ndarray | None = None,
    ) -> None:
        train_rows, valid_rows = rows & ~valid, rows & valid
        if not train_rows.any() or not valid_rows.any():
            raise ValueError(
                f"{name}: {int(train_rows.sum())} training and {int(valid_rows.sum())} "
                "validation rows; need at least one of each"
            )

        def dataset(mask: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
            return lgb.Dataset(
                features[mask],
                label=label[mask],
                init_score=None if offset is None else offset[mask],
                feature_name=list(names),
                reference=reference,
                free_raw_data=True,
            )

        train_set = dataset(train_rows)
        valid_set = dataset(valid_rows, train_set)
        booster = lgb.train(
            self.config.params(objective, seed),
            train_set,
            num_boost_round=self.config.max_rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(self.config.early_stopping_rounds, verbose=False)],
        )
        # Keep only the trees up to the best validation round.
        best = booster.best_iteration or booster.current_iteration()
        self.boosters[name] = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self.best_rounds[name] = int(best)

    # ---- prediction ------------------------------------------------------------------------

    def predict(
        self, X_cand: np.ndarray, O_offers: np.ndarray, reward: np.ndarray
    ) -> UpliftPrediction:
        """Components for N candidates x K offers: X_cand [N, f], O_offers [N, K, g],
        reward [N, K] (money). One LightGBM call per booster over all N x K rows."""
        Xc = _array("X_cand", X_cand, 2)
        Oc = _array("O_offers", O_offers, 3)
        rew = _array("reward", reward, 2)
        n, k = rew.shape
        if Xc.shape != (n, len(self.x_names)):
            raise ValueError(
                f"X_cand: shape {Xc.shape}, expected ({n}, {len(self.x_names)}) "
                "(reward rows x the model's candidate features)"
            )
        if Oc.shape != (n, k, len(self.o_names)):
            raise ValueError(
                f"O_offers: shape {Oc.shape}, expected ({n}, {k}, {len(self.o_names)}) "
                "(reward shape x the model's offer features)"
            )
        _finite("X_cand", Xc, allow_nan=True)
        _finite("O_offers", Oc)
        _finite("reward", rew)
        _non_negative("reward", rew)

        raw_active0 = self.boosters["control_active"].predict(Xc, raw_score=True)  # [N]
        raw_spend0 = self.boosters["control_spend"].predict(Xc, raw_score=True)  # [N]
        rows = np.concatenate([np.repeat(Xc, k, axis=0), Oc.reshape(n * k, -1)], axis=1)
        raw_active1 = self.boosters["treated_active"].predict(rows, raw_score=True)  # [N*K]
        raw_spend1 = self.boosters["treated_spend"].predict(rows, raw_score=True)  # [N*K]
        if self.config.offset_control:
            raw_active1 = raw_active1 + np.repeat(raw_active0, k)
            raw_spend1 = raw_spend1 + np.repeat(raw_spend0, k)
        p_control = _sigmoid(raw_active0)  # [N]
        if self.config.estimator == "take-up":
            take_up = self.boosters["treated_taken"].predict(rows, raw_score=True)
            take_up = _sigmoid(take_up).reshape(n, k)
            q = _sigmoid(self.boosters["taken_active"].predict(rows, raw_score=True)).reshape(n, k)
            p_treated = p_control[:, None] + take_up * (q - p_control[:, None])  # p1, docstring
        else:
            p_treated = _sigmoid(raw_active1).reshape(n, k)
        if "treated_paid" in self.boosters:
            p_paid = _sigmoid(self.boosters["treated_paid"].predict(rows, raw_score=True))
            p_paid = p_paid.reshape(n, k)
        else:
            p_paid = p_treated
        return UpliftPrediction(
            p_control=p_control,
            p_treated=p_treated,
            spend_control=np.exp(raw_spend0),
            spend_treated=np.exp(raw_spend1).reshape(n, k),
            p_paid=p_paid,
            reward=rew,
        )

    def predict_gain(
        self, X_cand: np.ndarray, O_offers: np.ndarray, reward: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(gain_active [N, K], gain_revenue [N, K]): the OfferScorer contract's two arrays."""
        prediction = self.predict(X_cand, O_offers, reward)
        return prediction.gain_active, prediction.gain_revenue

    # ---- persistence -----------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "config": asdict(self.config),
                "x_names": list(self.x_names),
                "o_names": list(self.o_names),
                "best_rounds": self.best_rounds,
                "boosters": {name: b.model_to_string() for name, b in self.boosters.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> UpliftModel:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"format: {data.get('format')!r} is not {FORMAT!r}")
        boosters = {name: lgb.Booster(model_str=s) for name, s in data["boosters"].items()}
        missing = {"control_active", "control_spend", "treated_active", "treated_spend"}
        # A model saved before the take-up estimator existed is a T-learner.
        config = UpliftConfig(**{"estimator": "t-learner", **data["config"]})
        if config.estimator == "take-up":
            missing |= {"treated_taken", "taken_active"}
        missing -= boosters.keys()
        if missing:
            raise ValueError(f"boosters: missing {sorted(missing)}")
        return cls(
            config=config,
            x_names=tuple(data["x_names"]),
            o_names=tuple(data["o_names"]),
            boosters=boosters,
            best_rounds={k: int(v) for k, v in data.get("best_rounds", {}).items()},
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one JSON file (atomically: a reader never sees half a model)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.to_json())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UpliftModel:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Metrics


def _curves(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Qini and uplift curves over the ranking by descending score, one point per distinct
    score (ties enter together), starting at (0, 0)."""
    order = np.argsort(score, kind="mergesort")[::-1]
    s, t, yy = score[order], treated[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # end of each tie block
    n_treated = np.cumsum(t)[last]
    n_all = last + 1.0
    n_control = n_all - n_treated
    y_treated = np.cumsum(yy * t)[last]
    y_control = np.cumsum(yy * (1.0 - t))[last]
    ratio = np.divide(n_treated, n_control, out=np.zeros_like(n_treated), where=n_control > 0)
    qini_curve = y_treated - y_control * ratio
    rate_t = np.divide(y_treated, n_treated, out=np.zeros_like(y_treated), where=n_treated > 0)
    rate_c = np.divide(y_control, n_control, out=np.zeros_like(y_control), where=n_control > 0)
    uplift_curve = (rate_t - rate_c) * n_all
    return {
        "x": np.r_[0.0, n_all],
        "qini_curve": np.r_[0.0, qini_curve],
        "uplift_curve": np.r_[0.0, uplift_curve],
    }


def _area_over_random(x: np.ndarray, curve: np.ndarray) -> float:
    """Area under the curve minus the random-targeting line from (0, 0) to its end point."""
    return float(np.trapezoid(curve, x) - 0.5 * x[-1] * curve[-1])


def qini(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Qini and uplift curves with the normalised Qini coefficient and AUUC.

    Definitions of scikit-uplift (`sklift.metrics.qini_curve`, `qini_auc_score` with
    `negative_effect=True`, `uplift_curve`, `uplift_auc_score`): ranking by descending score,
    after the first n rows (n_t treated, n_c control, outcome sums Y_t, Y_c)
        qini(n)   = Y_t - Y_c n_t / n_c
        uplift(n) = (Y_t / n_t - Y_c / n_c) n          (a term is 0 when its group is empty)
    Each coefficient is (area - random area) / (perfect area - random area), where random is
    the straight line to the curve's end point and perfect is the curve of the best ranking
    the outcomes allow: for Qini, treated responders first and control responders last; for
    the uplift curve, scikit-uplift's `perfect_uplift_curve` ordering. 1 is a perfect ranking,
    0 random, negative worse than random. `y` may be binary or a non-negative amount (spend).
    """
    sc = _array("score", score, 1)
    tr = _array("treated", treated, 1)
    yy = _array("y", y, 1)
    _same_shape({"score": sc.shape, "treated": tr.shape, "y": yy.shape})
    _finite("score", sc)
    _finite("y", yy)
    if not np.isin(tr, (0.0, 1.0)).all():
        raise ValueError("treated: values must be 0 or 1")
    if not tr.any():
        raise ValueError("treated: no treated rows")
    if tr.all():
        raise ValueError("treated: no control rows")

    actual = _curves(sc, tr, yy)
    perfect_qini = _curves(yy * tr - yy * (1.0 - tr), tr, yy)
    # scikit-uplift's perfect uplift ordering: responders among treated and non-responders
    # among control first, then by whichever group is larger (control responders or treated
    # non-responders).
    control_responders = np.sum((yy > 0) & (tr == 0))
    treated_non_responders = np.sum((yy == 0) & (tr == 1))
    summand = yy if control_responders > treated_non_responders else tr
    perfect_uplift = _curves(2.0 * ((yy > 0) == (tr == 1)) + summand, tr, yy)

    def normalised(curves: dict[str, np.ndarray], key: str, best: dict[str, np.ndarray]) -> float:
        denominator = _area_over_random(best["x"], best[key])
        if denominator == 0:
            return float("nan")
        return _area_over_random(curves["x"], curves[key]) / denominator

    return {
        "x": actual["x"],
        "qini_curve": actual["qini_curve"],
        "uplift_curve": actual["uplift_curve"],
        "qini_coefficient": normalised(actual, "qini_curve", perfect_qini),
        "auuc": normalised(actual, "uplift_curve", perfect_uplift),
        "n_treated": int(tr.sum()),
        "n_control": int((1 - tr).sum()),
    }
