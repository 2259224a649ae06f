"""Feature windows, targets, eligibility and the time split on a small hand-built history."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pytest
from django.db.models import Sum

from advertisers.models import Advertiser, DailyStat, Scenario
from predictor import features
from predictor.models import TASKS

D0 = date(2026, 1, 1)
DAYS = 90
T, TAU = 14, 7


def _day(i: int) -> date:
    return D0 + timedelta(days=i)


def _stat(adv: Advertiser, scen: Scenario, day: int, clicks: int, spend: int) -> DailyStat:
    return DailyStat(
        advertiser=adv,
        scenario=scen,
        date=_day(day),
        impressions=clicks * 20,
        clicks=clicks,
        expenditure=spend,
        gmv=spend * 3,
        logins=1 + day % 3,
        campaign_edits=day % 2,
        bid_changes=0,
        budget_changes=day % 5 == 0,
    )


@pytest.fixture
def history(db):
    """Three scenarios (one launched on day 70 with no rows yet) and six advertisers.

    Advertiser i is active in `search` on days where (day + i) % 3 != 0 with clicks i + 1 and
    spend 10 (i + 1); advertisers 0-2 also use `display` every other day; advertiser 5 only
    starts (in search) on day 60; advertiser 4 is registered on day 40.
    """
    search = Scenario.objects.create(
        code="search",
        name="Search",
        kind="search",
        launched_on=date(2020, 1, 1),
        attributes={"attr_traffic": 1.0},
    )
    display = Scenario.objects.create(
        code="display",
        name="Display",
        kind="display",
        launched_on=date(2021, 1, 1),
        attributes={"attr_traffic": 0.3},
    )
    Scenario.objects.create(
        code="live",
        name="Live",
        kind="live",
        launched_on=_day(70),
        attributes={"attr_traffic": 0.2},
    )
    advertisers = [
        Advertiser.objects.create(
            advertiser_id=f"A{i}",
            name=f"Adv {i}",
            registered_on=_day(40) if i == 4 else date(2025, 1, 1),
            business_scale=1 + i % 5,
            main_category=["food", "toys"][i % 2],
            star_level=i % 6,
        )
        for i in range(6)
    ]
    rows = []
    for i, adv in enumerate(advertisers):
        first = 60 if i == 5 else (40 if i == 4 else 0)
        rows += [
            _stat(adv, search, d, i + 1, 10 * (i + 1)) for d in range(first, DAYS) if (d + i) % 3
        ]
        if i < 3:
            rows += [_stat(adv, display, d, 2, 5) for d in range(0, DAYS, 2)]
    DailyStat.objects.bulk_create(rows)
    return {"search": search, "display": display, "advertisers": advertisers}


def _fit_spec(as_of: list[date]) -> tuple[features.FeatureSpec, features.Cube, dict]:
    scenarios = features.scenarios_load()
    cube = features.cube_load(start=D0, end=_day(DAYS - 1), scenario_pks=scenarios.pks)
    advertisers = features.advertisers_load(cube.advertiser_pks)
    days = np.array(as_of, dtype="datetime64[D]")
    activity = features.scenario_activity_from_cube(cube, cube.day_index(days))
    spec = features.spec_fit(
        cube, scenarios, advertisers, days, activity, window_days=T, horizon_days=TAU, n_bins=8
    )
    parts = {"scenarios": scenarios, "advertisers": advertisers, "days": days, "activity": activity}
    return spec, cube, parts


def _samples(as_of: list[date]) -> tuple[features.FeatureSpec, features.SampleSet]:
    spec, cube, p = _fit_spec(as_of)
    samples = features.samples_build(
        cube, p["scenarios"], p["advertisers"], p["days"], p["activity"], spec
    )
    return spec, samples


def test_it_loads_every_row_into_the_cube(history):
    pks = features.scenarios_load().pks
    cube = features.cube_load(start=D0, end=_day(DAYS - 1), scenario_pks=pks)
    assert cube.values.shape == (6, 3, DAYS, 8)
    total_clicks = DailyStat.objects.aggregate(s=Sum("clicks"))["s"]
    assert cube.values[..., features.CH["clicks"]].sum() == total_clicks


@pytest.mark.parametrize("pk_range", [False, True])
def test_it_reads_every_counter_as_stored_cents_included(history, pk_range):
    adv = history["advertisers"][2]
    changed = DailyStat.objects.filter(advertiser=adv, date=_day(2)).update(
        expenditure="1234.57", gmv="98765.43", impressions=2**40 + 3
    )
    assert changed == 2  # search and display
    pks = features.scenarios_load().pks
    window = (adv.pk, adv.pk + 2) if pk_range else None
    cube = features.cube_load(
        start=_day(1), end=_day(DAYS - 1), scenario_pks=pks, advertiser_pk_range=window
    )
    stored = DailyStat.objects.filter(date__gte=_day(1))
    if window:
        stored = stored.filter(advertiser_id__gte=window[0], advertiser_id__lt=window[1])
    expected = np.zeros_like(cube.values)
    for row in stored.values("advertiser_id", "scenario_id", "date", *features.COUNTERS):
        a = int(np.searchsorted(cube.advertiser_pks, row["advertiser_id"]))
        s = int(np.searchsorted(pks, row["scenario_id"]))
        day = (row["date"] - _day(1)).days
        expected[a, s, day] = [float(row[c]) for c in features.COUNTERS]
    assert len(cube.advertiser_pks) == (2 if pk_range else 6)
    np.testing.assert_array_equal(cube.values, expected)
    assert cube.values[..., features.CH["expenditure"]].max() == np.float32(1234.57)


def test_it_sums_targets_over_the_next_seven_days(history):
    as_of = _day(50)
    _, samples = _samples([as_of])
    adv, search = history["advertisers"][1], history["search"]
    row = np.flatnonzero((samples.advertiser_pks == adv.pk) & (samples.scenario_pks == search.pk))
    assert len(row) == 1
    future = DailyStat.objects.filter(
        advertiser=adv, scenario=search, date__gt=as_of, date__lte=as_of + timedelta(days=TAU)
    )
    expected = {
        "clicks": future.aggregate(s=Sum("clicks"))["s"],
        "expenditure": float(future.aggregate(s=Sum("expenditure"))["s"]),
        "active_days": future.filter(expenditure__gt=0).count(),
        "impressions": future.aggregate(s=Sum("impressions"))["s"],
        "gmv": float(future.aggregate(s=Sum("gmv"))["s"]),
    }
    assert samples.targets[row[0]].tolist() == [pytest.approx(expected[t]) for t in TASKS]


def test_it_ends_the_input_window_on_the_as_of_day(history):
    as_of = _day(50)
    _, samples = _samples([as_of])
    adv, search = history["advertisers"][0], history["search"]
    row = np.flatnonzero((samples.advertiser_pks == adv.pk) & (samples.scenario_pks == search.pk))[
        0
    ]
    clicks = samples.performance[row, :, features.PERFORMANCE.index("clicks")]
    active = np.array([(d + 0) % 3 != 0 for d in range(50 - T + 1, 51)])
    assert ((clicks > 0) == active).all()


def test_it_bins_windows_the_same_whether_it_gathers_or_bins_first(history):
    spec, cube, _ = _fit_spec([_day(40), _day(50)])
    rng = np.random.default_rng(0)
    a = rng.integers(0, cube.values.shape[0], size=(9, 1))
    s = rng.integers(0, cube.values.shape[1], size=(9, 1))
    days = rng.integers(T - 1, DAYS, size=(9, 1)) + np.arange(-T + 1, 1)[None, :]
    binned = features.binned_windows(cube, a, s, days, spec, gather_first=False)
    gathered = features.binned_windows(cube, a, s, days, spec, gather_first=True)
    for first, second in zip(binned, gathered, strict=True):
        np.testing.assert_array_equal(first, second)
    assert binned[1].shape == (9, T, 8) and binned[1].any()


def test_it_takes_only_pairs_active_in_the_input_window(history):
    _, samples = _samples([_day(50)])
    late = history["advertisers"][5]  # starts on day 60
    assert late.pk not in samples.advertiser_pks
    pairs = set(zip(samples.advertiser_pks.tolist(), samples.scenario_pks.tolist(), strict=True))
    assert len(pairs) == 5 + 3  # five advertisers in search, three in display


def test_it_skips_advertisers_registered_after_the_as_of_date(history):
    late = history["advertisers"][4]  # has rows from day 40
    Advertiser.objects.filter(pk=late.pk).update(registered_on=_day(55))
    _, samples = _samples([_day(50)])
    assert late.pk not in samples.advertiser_pks
    assert history["advertisers"][3].pk in samples.advertiser_pks


def test_it_scores_a_new_scenario_for_advertisers_active_elsewhere(history):
    spec, _ = _samples([_day(50)])
    samples = features.samples_at(spec=spec, as_of=_day(75))
    live = Scenario.objects.get(code="live")
    in_live = samples.advertiser_pks[samples.scenario_pks == live.pk]
    assert sorted(in_live.tolist()) == sorted(a.pk for a in history["advertisers"])


def test_it_gives_a_new_scenario_bounded_inputs_and_no_learnt_kind(history):
    spec, _ = _samples([_day(50)])
    assert spec.kinds == ["search", "display"]  # "live" had no training sample
    samples = features.samples_at(spec=spec, as_of=_day(75))
    live = samples.scenario_pks == Scenario.objects.get(code="live").pk
    assert live.any()
    assert (samples.scenario[live, : len(spec.kinds)] == 0).all()
    assert np.abs(samples.scenario).max() <= features.Z_CLIP
    assert np.isfinite(samples.scenario).all()


def test_it_does_not_score_a_scenario_before_its_launch(history):
    spec, _ = _samples([_day(50)])
    samples = features.samples_at(spec=spec, as_of=_day(69))
    live = Scenario.objects.get(code="live")
    assert live.pk not in samples.scenario_pks


def test_it_computes_the_same_scenario_features_for_a_chunk_as_for_everyone(history):
    spec, _ = _samples([_day(50)])
    everyone = features.samples_at(spec=spec, as_of=_day(80))
    pks = sorted(a.pk for a in history["advertisers"])
    chunk = features.samples_at(spec=spec, as_of=_day(80), advertiser_pk_range=(pks[0], pks[2]))
    assert set(chunk.advertiser_pks.tolist()) == set(pks[:2])
    for i in range(len(chunk)):
        match = (everyone.advertiser_pks == chunk.advertiser_pks[i]) & (
            everyone.scenario_pks == chunk.scenario_pks[i]
        )
        np.testing.assert_allclose(everyone.scenario[match][0], chunk.scenario[i], rtol=1e-5)


def test_it_maps_an_unseen_category_to_zero(history):
    spec, _ = _samples([_day(50)])
    Advertiser.objects.filter(pk=history["advertisers"][0].pk).update(main_category="garden")
    samples = features.samples_at(spec=spec, as_of=_day(60))
    rows = samples.advertiser_pks == history["advertisers"][0].pk
    assert (samples.profile_cat[rows, 1] == 0).all()
    assert (samples.profile_cat[~rows, 1] > 0).all()


def test_it_round_trips_the_spec_through_json(history):
    spec, _ = _samples([_day(50)])
    again = features.FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.input_spec().n_scenario == spec.n_scenario_features


def test_it_keeps_training_labels_away_from_the_test_inputs(history):
    dates = features.as_of_dates(
        start=D0, end=_day(DAYS - 1), window_days=T, horizon_days=TAU, stride=3
    )
    split = features.split_dates(dates, window_days=T, horizon_days=TAU)
    first_test_input = split.test[0] - timedelta(days=T - 1)
    # A sentinel on every day a test or validation sample looks at; no training label or bin
    # may see it.
    first_valid_input = split.valid[0] - timedelta(days=T - 1)
    DailyStat.objects.filter(date__gte=first_valid_input).update(clicks=1_000_000)
    data = features.dataset_build(window_days=T, horizon_days=TAU, stride=3, n_bins=8)
    assert data.split == split
    last_train_target = split.train[-1] + timedelta(days=TAU)
    assert last_train_target + timedelta(days=7) <= first_valid_input <= first_test_input
    clicks = TASKS.index("clicks")
    assert data.train.targets[:, clicks].max() < 1_000_000
    assert data.test.targets[:, clicks].max() >= 1_000_000
    clicks_edges = data.spec.performance_edges[features.PERFORMANCE.index("clicks")]
    assert max(clicks_edges) < np.log1p(1_000_000)


def test_it_refuses_a_window_too_short_for_the_split(history):
    dates = features.as_of_dates(start=D0, end=_day(40), window_days=T, horizon_days=TAU, stride=7)
    with pytest.raises(features.FeatureError, match="empty split"):
        features.split_dates(dates, window_days=T, horizon_days=TAU)
