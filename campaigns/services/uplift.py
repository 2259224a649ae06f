"""The uplift model's life in the product: training rows from the campaign history, fitting and
registering a model (campaigns.uplift), and the scorer uplift allocation calls.

Training rows come from randomised history only: a campaign's tasks (treated, with their offer)
and its holdout (control). Features are read at each row's decision time: the campaign's model
version's predictions as of the production day, per scenario, and the advertiser's recent
activity (the RECENT_DAYS up to that day). Outcomes: active (a day with expenditure > 0, any
scenario) and expenditure within the task window; paid = the task completed; taken = the
advertiser accepted the task (the push system's "accepted" event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from advertisers.models import DailyStat, Scenario
from campaigns.models import Campaign, CampaignHoldout, IncentiveTask, TaskState, UpliftModel
from predictor.models import ModelVersion, Prediction

RECENT_DAYS = 28
OFFER_KINDS = ("spend_target", "click_target", "active_days_target", "login_days")


class UpliftTrainingError(ValueError):
    """History that cannot train an uplift model; the message says what is missing."""


@dataclass(frozen=True)
class UpliftRows:
    """One row per task (treated) and per holdout member (control), as numpy arrays."""

    advertiser_pk: np.ndarray  # [n]
    campaign_id: np.ndarray  # [n]
    as_of: np.ndarray  # [n] datetime64[D]
    treated: np.ndarray  # [n] 0/1
    kind_index: np.ndarray  # [n] index into OFFER_KINDS (0 on control rows)
    target: np.ndarray  # [n] (NaN on control rows)
    base: np.ndarray  # [n] the predicted level the target stretched (NaN on control rows)
    reward: np.ndarray  # [n] (0 on control rows)
    y_active: np.ndarray  # [n] 0/1: active in the window
    y_spend: np.ndarray  # [n] expenditure in the window
    y_paid: np.ndarray  # [n] 0/1: the task completed
    y_taken: np.ndarray  # [n] 0/1: the advertiser accepted the task
    valid_from: np.ndarray  # [n] datetime64[D]
    valid_until: np.ndarray  # [n] datetime64[D]

    def __len__(self) -> int:
        return len(self.advertiser_pk)


def uplift_training_rows(*, campaigns: list[Campaign]) -> UpliftRows:
    """Tasks and holdouts of `campaigns` with their outcomes (windows must have ended)."""
    ids = [c.pk for c in campaigns]
    tasks = list(
        IncentiveTask.objects.filter(campaign_id__in=ids).values_list(
            "advertiser_id",
            "campaign_id",
            "prediction_as_of",
            "kind",
            "target",
            "predicted_base",
            "reward",
            "valid_from",
            "valid_until",
            "state",
            "accepted_at",
        )
    )
    held = list(
        CampaignHoldout.objects.filter(campaign_id__in=ids).values_list(
            "advertiser_id", "campaign_id", "as_of", "valid_from", "valid_until"
        )
    )
    if not tasks or not held:
        raise UpliftTrainingError(
            f"campaigns {ids}: {len(tasks)} tasks and {len(held)} holdout members; an uplift "
            "model needs both (give the campaign a holdout share above 0)."
        )
    n_t, n_c = len(tasks), len(held)
    col = list(zip(*tasks, strict=True))
    hcol = list(zip(*held, strict=True))
    adv = np.array(col[0] + hcol[0], dtype=np.int64)
    valid_from = np.array(col[7] + hcol[3], dtype="datetime64[D]")
    valid_until = np.array(col[8] + hcol[4], dtype="datetime64[D]")
    active, spend = _window_outcomes(adv, valid_from, valid_until)
    return UpliftRows(
        advertiser_pk=adv,
        campaign_id=np.array(col[1] + hcol[1], dtype=np.int64),
        as_of=np.array(col[2] + hcol[2], dtype="datetime64[D]"),
        treated=np.r_[np.ones(n_t), np.zeros(n_c)],
        kind_index=np.r_[[OFFER_KINDS.index(k) for k in col[3]], np.zeros(n_c, np.int64)],
        target=np.r_[np.array(col[4], dtype=float), np.full(n_c, np.nan)],
        base=np.r_[np.array(col[5], dtype=float), np.full(n_c, np.nan)],
        reward=np.r_[np.array(col[6], dtype=float), np.zeros(n_c)],
        y_active=active,
        y_spend=spend,
        y_paid=np.r_[np.array([s == TaskState.COMPLETED for s in col[9]], float), np.zeros(n_c)],
        y_taken=np.r_[np.array([at is not None for at in col[10]], float), np.zeros(n_c)],
        valid_from=valid_from,
        valid_until=valid_until,
    )


def _daily_spend(advertiser_pks: np.ndarray, first: date, last: date) -> tuple[np.ndarray, ...]:
    """(unique advertiser pks, their [A, D] daily spend over [first, last])."""
    unique = np.unique(advertiser_pks)
    rows = (
        DailyStat.objects.filter(advertiser_id__in=unique.tolist(), date__gte=first, date__lte=last)
        .values("advertiser_id", "date")
        .annotate(spend=Sum("expenditure"))
        .values_list("advertiser_id", "date", "spend")
    )
    n_days = (last - first).days + 1
    spend = np.zeros((len(unique), n_days))
    data = list(rows)
    if data:
        a, d, s = zip(*data, strict=True)
        ai = np.searchsorted(unique, np.array(a, dtype=np.int64))
        di = (np.array(d, dtype="datetime64[D]") - np.datetime64(first, "D")).astype(np.int64)
        spend[ai, di] = np.array(s, dtype=float)
    return unique, spend


def _window_outcomes(
    adv: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: active (any day with spend > 0) and spend over [start, end]."""
    first, last = start.min().item(), end.max().item()
    unique, spend = _daily_spend(adv, first, last)
    ai = np.searchsorted(unique, adv)
    lo = (start - np.datetime64(first, "D")).astype(np.int64)
    hi = (end - np.datetime64(first, "D")).astype(np.int64) + 1
    cum = np.concatenate([np.zeros((len(unique), 1)), np.cumsum(spend, axis=1)], axis=1)
    cum_active = np.concatenate([np.zeros((len(unique), 1)), np.cumsum(spend > 0, axis=1)], axis=1)
    total = cum[ai, hi] - cum[ai, lo]
    days = cum_active[ai, hi] - cum_active[ai, lo]
    return (days > 0).astype(float), total


def candidate_features(
    *, model_version_id: int, as_of: np.ndarray, advertiser_pk: np.ndarray
) -> np.ndarray:
    """X [n, f] (campaigns.uplift.uplift_features) of each advertiser at its decision day."""
    from campaigns.uplift import uplift_features

    scenarios = np.array(sorted(Scenario.objects.values_list("pk", flat=True)), dtype=np.int64)
    n, s = len(advertiser_pk), len(scenarios)
    cube = {name: np.zeros((n, s)) for name in ("expenditure", "clicks", "active_days")}
    p_off = np.full((n, s), np.nan)
    recent_days, recent_spend = np.zeros(n), np.zeros(n)
    for day in np.unique(as_of):
        rows = np.flatnonzero(as_of == day)
        pks = advertiser_pk[rows]
        order = np.argsort(pks, kind="stable")
        sorted_pks = pks[order]
        preds = list(
            Prediction.objects.filter(
                model_version_id=model_version_id,
                as_of=day.item(),
                advertiser_id__in=np.unique(pks).tolist(),
            ).values_list(
                "advertiser_id", "scenario_id", "expenditure", "clicks", "active_days", "p_inactive"
            )
        )
        if preds:
            a, sc, e, c, d, p = (np.array(v) for v in zip(*preds, strict=True))
            # every row of that advertiser on that day gets the same forecasts
            for_row = np.searchsorted(sorted_pks, a.astype(np.int64))
            hit = (for_row < len(sorted_pks)) & (
                sorted_pks[np.minimum(for_row, len(sorted_pks) - 1)] == a
            )
            target_rows = rows[order[for_row[hit]]]
            si = np.searchsorted(scenarios, sc[hit].astype(np.int64))
            cube["expenditure"][target_rows, si] = e[hit].astype(float)
            cube["clicks"][target_rows, si] = c[hit].astype(float)
            cube["active_days"][target_rows, si] = d[hit].astype(float)
            p_off[target_rows, si] = np.array([np.nan if v is None else v for v in p[hit]], float)
            _spread_duplicates(rows, pks, cube, p_off)
        first = day.item() - timedelta(days=RECENT_DAYS - 1)
        unique, spend = _daily_spend(pks, first, day.item())
        ai = np.searchsorted(unique, pks)
        recent_days[rows] = (spend[ai] > 0).sum(axis=1)
        recent_spend[rows] = spend[ai].sum(axis=1)
    return uplift_features(
        cube["expenditure"], cube["clicks"], cube["active_days"], p_off, recent_days, recent_spend
    )


def _spread_duplicates(rows: np.ndarray, pks: np.ndarray, cube: dict, p_off: np.ndarray) -> None:
    """Rows of the same advertiser on one day (tasks in two campaigns) share its forecasts."""
    _, first_idx, inverse = np.unique(pks, return_index=True, return_inverse=True)
    source = rows[first_idx[inverse]]
    for arr in (*cube.values(), p_off):
        arr[rows] = arr[source]


def offer_features_of(
    kind_index: np.ndarray, target: np.ndarray, base: np.ndarray, reward: np.ndarray
) -> np.ndarray:
    from campaigns.uplift import offer_features

    return offer_features(
        kind_index, np.maximum(target, 1e-6), np.maximum(base, 0.0), np.maximum(reward, 0.0)
    )


@transaction.atomic
def uplift_model_train(
    *, campaigns: list[Campaign], seed: int = 0, estimator: str = "take-up"
) -> UpliftModel:
    """Fit campaigns.uplift.UpliftModel (`estimator`: "take-up" or "t-learner") on the
    campaigns' history, report its Qini/AUUC on a held-out fifth, and register it as the newest
    model."""
    from campaigns.uplift import OFFER_FEATURE_NAMES, UPLIFT_FEATURE_NAMES, UpliftConfig, qini
    from campaigns.uplift import UpliftModel as Learner

    try:
        config = UpliftConfig(estimator=estimator)
    except ValueError as exc:
        raise UpliftTrainingError(str(exc)) from exc

    rows = uplift_training_rows(campaigns=campaigns)
    versions = {c.model_version_id or _version_of(c) for c in campaigns}
    if len(versions) != 1:
        raise UpliftTrainingError("the campaigns' tasks come from different model versions.")
    version_id = versions.pop()
    X = candidate_features(
        model_version_id=version_id, as_of=rows.as_of, advertiser_pk=rows.advertiser_pk
    )
    treated = rows.treated == 1
    offer_x = np.zeros((len(rows), len(OFFER_FEATURE_NAMES)))
    offer_x[treated] = offer_features_of(
        rows.kind_index[treated][:, None],
        rows.target[treated][:, None],
        rows.base[treated][:, None],
        rows.reward[treated][:, None],
    )[:, 0, :]
    rng = np.random.default_rng(seed)
    test = rng.random(len(rows)) < 0.2
    fit = ~test
    learner = Learner.fit(
        X[fit],
        offer_x[fit],
        rows.treated[fit],
        rows.y_active[fit],
        rows.y_spend[fit],
        y_paid=rows.y_paid[fit],
        y_taken=rows.y_taken[fit],
        config=config,
        seed=seed,
        x_names=UPLIFT_FEATURE_NAMES,
        o_names=OFFER_FEATURE_NAMES,
    )
    quality = {
        "estimator": estimator,
        "rows": len(rows),
        "treated": int(treated.sum()),
        "taken": int(rows.y_taken.sum()),
        "control": int((~treated).sum()),
    }
    t_test = test & treated
    if t_test.any() and (test & ~treated).any():
        gain_active, _ = learner.predict_gain(
            X[test], offer_x[test][:, None, :], rows.reward[test][:, None]
        )
        q = qini(gain_active[:, 0], rows.treated[test], rows.y_active[test])
        quality.update({k: v for k, v in q.items() if isinstance(v, int | float)})
    path = (
        Path(settings.ARTIFACT_DIR) / "uplift" / f"uplift-{date.today()}-{rng.integers(1e9)}.json"
    )
    learner.save(path)
    return UpliftModel.objects.create(
        artifact=str(path.relative_to(settings.ARTIFACT_DIR)),
        trained_on=[c.pk for c in campaigns],
        rows=len(rows),
        quality=quality,
    )


def _version_of(campaign: Campaign) -> int:
    version = (
        IncentiveTask.objects.filter(campaign=campaign).values_list("model_version_id", flat=True)
    ).first()
    if version is None:
        raise UpliftTrainingError(f"campaign {campaign.pk} has no tasks.")
    return version


class UpliftScorer:
    """The OfferScorer of a registered uplift model, for one campaign's forecasts."""

    def __init__(self, learner: object, model_version: ModelVersion, as_of: date) -> None:
        self.learner, self.model_version, self.as_of = learner, model_version, as_of

    def __call__(self, candidates, offers) -> tuple[np.ndarray, np.ndarray]:
        n, k = offers.target.shape
        as_of = np.full(n, np.datetime64(self.as_of, "D"))
        X = candidate_features(
            model_version_id=self.model_version.pk,
            as_of=as_of,
            advertiser_pk=candidates.advertiser_pk,
        )
        kind = np.broadcast_to(np.array([OFFER_KINDS.index(x) for x in offers.kind]), (n, k))
        offer_x = offer_features_of(kind, offers.target, offers.base, offers.reward)
        return self.learner.predict_gain(X, offer_x, offers.reward)


def uplift_scorer_latest(campaign: Campaign) -> UpliftScorer | None:
    from campaigns.selectors import campaign_model_version, predictions_latest_as_of
    from campaigns.uplift import UpliftModel as Learner

    registered = UpliftModel.objects.first()
    if registered is None:
        return None
    learner = Learner.load(Path(settings.ARTIFACT_DIR) / registered.artifact)
    version = campaign_model_version(campaign=campaign)
    return UpliftScorer(learner, version, predictions_latest_as_of(model_version=version))
