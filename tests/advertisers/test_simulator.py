"""The data simulator: deterministic, contract-valid files and a world rich enough to model."""

from __future__ import annotations

import csv
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from django.core.management import CommandError, call_command

from advertisers.simulator import (
    Incentive,
    IncentiveBatch,
    SimulationError,
    World,
    incentive_response_probability,
    simulate,
)

ADVERTISERS, DAYS, SEED = 300, 90, 7
END = date(2026, 10, 31)
MONEY = re.compile(r"^\d+(\.\d{1,2})?$")
COUNT = re.compile(r"^\d+$")


@pytest.fixture(scope="module")
def world() -> World:
    return simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED)


@pytest.fixture(scope="module")
def files(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return world.write(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def saved(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A fresh world, so that advancing the module's `world` elsewhere cannot change this one.
    fresh = simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED)
    return fresh.save(tmp_path_factory.mktemp("state") / "world.npz")


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def active_shares(stats: pa.Table, codes: list[str]) -> dict[str, float]:
    active = stats.filter(pc.greater(stats["expenditure"], 0))
    scenario = active["scenario"].to_numpy(zero_copy_only=False)
    return {code: float(np.mean(scenario == code)) for code in codes}


def active_days_by_advertiser(stats: pa.Table, n: int) -> np.ndarray:
    active = stats.filter(pc.greater(stats["expenditure"], 0))
    index = np.array([int(a[4:]) - 1 for a in active["advertiser_id"].to_pylist()], dtype=int)
    return np.bincount(index, minlength=n)


def test_it_writes_identical_files_for_the_same_seed(files, tmp_path):
    again = simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED).write(tmp_path)
    for name, path in files.items():
        assert path.read_bytes() == again[name].read_bytes(), name


def test_it_writes_different_files_for_a_different_seed(files, tmp_path):
    other = simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED + 1).write(tmp_path)
    assert files["daily_stats"].read_bytes() != other["daily_stats"].read_bytes()
    assert files["advertisers"].read_bytes() != other["advertisers"].read_bytes()


def test_it_ends_on_a_fixed_date_by_default(world):
    assert world.end_date == END
    assert world.start_date == END - timedelta(days=DAYS - 1)


def test_it_gives_the_major_scenario_about_70_percent_of_active_days(world):
    shares = active_shares(world.daily_stats, world.scenario_codes)
    assert 0.60 <= shares["sponsored_search"] <= 0.78, shares


def test_it_gives_the_two_medium_scenarios_each_a_tenth_or_so(world):
    shares = active_shares(world.daily_stats, world.scenario_codes)
    assert 0.06 <= shares["news_feed"] <= 0.22, shares
    assert 0.06 <= shares["display"] <= 0.22, shares


def test_it_gives_the_minor_scenario_about_3_percent_of_active_days(world):
    shares = active_shares(world.daily_stats, world.scenario_codes)
    assert 0.015 <= shares["star_shop"] <= 0.055, shares


def test_it_has_rows_for_the_new_scenario_only_in_its_last_60_days(world, files):
    _, scenarios = read_rows(files["scenarios"])
    launched = {row["code"]: date.fromisoformat(row["launched_on"]) for row in scenarios}
    assert launched["live_stream"] == END - timedelta(days=59)
    assert all(day < world.start_date for code, day in launched.items() if code != "live_stream")
    live = world.daily_stats.filter(pc.equal(world.daily_stats["scenario"], "live_stream"))
    assert live.num_rows > 0
    assert pc.min(live["date"]).as_py() >= launched["live_stream"]


def test_it_writes_exactly_the_contract_columns(files):
    expected = {
        "scenarios": ["code", "name", "kind", "launched_on"],
        "advertisers": [
            "advertiser_id", "name", "registered_on", "business_scale", "main_category",
            "star_level",
        ],
        "daily_stats": [
            "advertiser_id", "scenario", "date", "impressions", "clicks", "expenditure", "gmv",
            "logins", "campaign_edits", "bid_changes", "budget_changes",
        ],
    }  # fmt: skip
    for name, columns in expected.items():
        header, _ = read_rows(files[name])
        extra = [c for c in header if c not in columns]
        assert header[: len(columns)] == columns, name
        if name == "scenarios":
            assert extra and all(c.startswith("attr_") for c in extra)
        else:
            assert extra == [], name


def test_it_writes_scenario_kinds_and_numeric_attributes(files):
    _, rows = read_rows(files["scenarios"])
    assert {row["kind"] for row in rows} == {"search", "feed", "display", "shop", "live"}
    for row in rows:
        for column, value in row.items():
            if column.startswith("attr_"):
                float(value)


def test_it_writes_money_with_at_most_two_decimals_and_never_negative(files):
    _, rows = read_rows(files["daily_stats"])
    for column in ("expenditure", "gmv"):
        bad = [row[column] for row in rows if not MONEY.match(row[column])]
        assert bad == [], column


def test_it_writes_non_negative_integer_counts(files):
    _, stats = read_rows(files["daily_stats"])
    for column in (
        "impressions", "clicks", "logins", "campaign_edits", "bid_changes", "budget_changes",
    ):  # fmt: skip
        assert all(COUNT.match(row[column]) for row in stats), column
    _, advertisers = read_rows(files["advertisers"])
    assert all(1 <= int(row["business_scale"]) <= 5 for row in advertisers)
    assert all(0 <= int(row["star_level"]) <= 5 for row in advertisers)


def test_it_writes_one_row_per_advertiser_scenario_and_day(world):
    stats = world.daily_stats
    keys = pc.binary_join_element_wise(
        stats["advertiser_id"], stats["scenario"], pc.cast(stats["date"], pa.string()), "|"
    )
    assert pc.count_distinct(keys).as_py() == stats.num_rows


def test_it_keeps_counters_consistent_with_each_other(world):
    stats = world.daily_stats
    spend = stats["expenditure"].to_numpy(zero_copy_only=False).astype(float)
    clicks = stats["clicks"].to_numpy()
    impressions = stats["impressions"].to_numpy()
    gmv = stats["gmv"].to_numpy(zero_copy_only=False).astype(float)
    assert (clicks[spend > 0] >= 1).all()
    assert (clicks[spend == 0] == 0).all() and (gmv[spend == 0] == 0).all()
    assert (impressions >= clicks).all()
    assert (spend == 0).any(), "rows with behaviour only (no spend) should exist too"


def test_it_writes_no_activity_before_an_advertiser_registered(world, files):
    _, advertisers = read_rows(files["advertisers"])
    registered = {row["advertiser_id"]: row["registered_on"] for row in advertisers}
    newcomers = [a for a, d in registered.items() if date.fromisoformat(d) > world.start_date]
    assert newcomers, "some advertisers should register during the period"
    stats = world.daily_stats
    first_day = stats.group_by("advertiser_id").aggregate([("date", "min")]).to_pylist()
    late = [r for r in first_day if r["date_min"].isoformat() < registered[r["advertiser_id"]]]
    assert late == []


def test_it_has_advertisers_who_stop_and_some_who_come_back(world):
    stats = world.daily_stats.filter(pc.greater(world.daily_stats["expenditure"], 0))
    day = (stats["date"].to_numpy() - np.datetime64(world.start_date)).astype(int)
    who = np.array([int(a[4:]) - 1 for a in stats["advertiser_id"].to_pylist()])
    active = np.zeros((ADVERTISERS, DAYS), dtype=bool)
    active[who, day] = True
    early, late = active[:, :14].any(axis=1), active[:, -28:].any(axis=1)
    assert (early & ~late).sum() >= 0.03 * ADVERTISERS  # stopped
    middle_gap = ~active[:, 20:48].any(axis=1)
    assert (active[:, :20].any(axis=1) & middle_gap & active[:, 48:].any(axis=1)).sum() >= 1


def test_it_spends_more_on_weekends_in_the_weekend_scenarios(tmp_path):
    stats = simulate(advertisers=1500, days=28, seed=3).daily_stats
    weekday = pc.day_of_week(stats["date"]).to_numpy()  # Monday 0
    spend = stats["expenditure"].to_numpy(zero_copy_only=False).astype(float)
    scenario = stats["scenario"].to_numpy(zero_copy_only=False)

    def weekend_ratio(code: str) -> float:
        mine = scenario == code
        per_day = [spend[mine & (weekday == d)].sum() for d in range(7)]
        return np.mean(per_day[5:]) / np.mean(per_day[:5])

    assert weekend_ratio("star_shop") > 1.05
    assert weekend_ratio("sponsored_search") < 0.97


def test_it_continues_a_saved_world_exactly_as_one_kept_in_memory(saved):
    in_memory = simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED)
    loaded = World.load(saved)
    assert loaded.end_date == in_memory.end_date
    a = in_memory.advance(days=5).daily_stats
    b = loaded.advance(days=5).daily_stats
    assert a.num_rows > 0 and a.equals(b)
    assert pc.min(a["date"]).as_py() == END + timedelta(days=1)


def test_it_stops_through_a_date_on_the_full_runs_path(world):
    through = END - timedelta(days=10)
    stopped = simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED, through=through)
    assert stopped.end_date == through
    full = world.daily_stats
    before = full.filter(pc.less_equal(full["date"], pa.scalar(through)))
    assert stopped.daily_stats.equals(before)
    after = stopped.advance(days=10).daily_stats
    assert after.num_rows > 0
    assert after.equals(full.filter(pc.greater(full["date"], pa.scalar(through))))


def test_it_refuses_to_stop_outside_the_simulated_days():
    with pytest.raises(SimulationError, match="through=2026-11-01 is outside"):
        simulate(advertisers=10, days=20, seed=1, through=END + timedelta(days=1))


def futures_world() -> World:
    return simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED, through=END - timedelta(days=7))


def test_it_draws_futures_that_differ_by_replica_and_repeat_for_a_state():
    first = futures_world().futures(days=7, replicas=3)
    again = futures_world().futures(days=7, replicas=3)
    clicks = first["clicks"]
    assert clicks.shape == (3, ADVERTISERS, 5)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(clicks[0], clicks[1])
    assert (first["active_days"] <= 7).all() and (first["active_days"] >= 0).all()
    # an active day always has a click, and a click always costs money
    assert (clicks >= first["active_days"]).all()
    assert ((first["expenditure"] > 0) == (first["active_days"] > 0)).all()


def test_it_leaves_the_world_where_it_was_after_drawing_futures(world):
    drawn = futures_world()
    sums = drawn.futures(days=7, replicas=2, own_path=True)
    after = drawn.advance(days=7).daily_stats
    assert after.equals(futures_world().advance(days=7).daily_stats)
    # the own path comes first and is the continuation `advance` writes
    clicks = after.group_by(["advertiser_id", "scenario"]).aggregate([("clicks", "sum")])
    a = drawn.advertiser_index(clicks["advertiser_id"].to_pylist(), what="test")
    k = np.array([drawn.scenario_codes.index(c) for c in clicks["scenario"].to_pylist()])
    assert np.array_equal(sums["clicks"][0][a, k], clicks["clicks_sum"].to_numpy())
    assert sums["clicks"][0].sum() == clicks["clicks_sum"].to_numpy().sum()


def test_it_refuses_to_load_a_file_that_is_not_a_saved_world(tmp_path):
    bogus = tmp_path / "world.npz"
    np.savez(bogus, something=np.zeros(3))
    with pytest.raises(SimulationError, match="not a saved world"):
        World.load(bogus)


def test_it_writes_the_advanced_rows_in_the_same_contract(saved, tmp_path):
    result = World.load(saved).advance(days=3, out_path=tmp_path / "next.csv")
    header, rows = read_rows(tmp_path / "next.csv")
    assert header == result.daily_stats.column_names
    assert len(rows) == result.daily_stats.num_rows > 0
    assert result.start_date == END + timedelta(days=1)
    assert result.end_date == END + timedelta(days=3)


def test_it_responds_more_when_at_risk_of_going_inactive():
    noise = np.random.default_rng(0).standard_normal(5000)
    safe = incentive_response_probability(risk=0.05, reward=30.0, cost=300.0, noise=noise)
    at_risk = incentive_response_probability(risk=0.9, reward=30.0, cost=300.0, noise=noise)
    assert at_risk.mean() > 3 * safe.mean()
    assert safe.mean() < 0.15


def test_it_responds_more_to_a_larger_reward_for_the_same_effort():
    small = incentive_response_probability(risk=0.5, reward=10.0, cost=300.0)
    large = incentive_response_probability(risk=0.5, reward=60.0, cost=300.0)
    assert large > small


def test_it_responds_noisily_to_identical_tasks():
    rng = np.random.default_rng(1)
    p = incentive_response_probability(
        risk=np.full(2000, 0.6), reward=30.0, cost=300.0, noise=rng.standard_normal(2000)
    )
    assert p.std() > 0.05
    responded = rng.random(2000) < p
    assert 0.1 < responded.mean() < 0.9


def test_it_lifts_activity_of_advertisers_who_take_up_a_task(saved):
    without, treated = World.load(saved), World.load(saved)
    ids = without.advertisers_table()["advertiser_id"].to_pylist()
    tasks = [Incentive(a, "sponsored_search", "spend_target", 300.0, 30.0, 7) for a in ids]
    base = without.advance(days=7).daily_stats
    result = treated.advance(days=7, incentives=tasks)
    responded = result.responded
    assert 0 < responded.sum() < len(ids)
    before = active_days_by_advertiser(base, ADVERTISERS)
    after = active_days_by_advertiser(result.daily_stats, ADVERTISERS)
    assert after[responded].mean() > before[responded].mean() + 1.0
    # Activity draws come first each day: people without a response keep their path.
    assert (after[~responded] == before[~responded]).all()


def test_it_makes_at_risk_advertisers_take_up_tasks_more_often(saved):
    world = World.load(saved)
    risk = 1.0 - world.active_probability(days=7)[:, 0]
    ids = world.advertisers_table()["advertiser_id"].to_pylist()
    tasks = [Incentive(a, "sponsored_search", "spend_target", 300.0, 30.0, 7) for a in ids]
    result = world.advance(days=1, incentives=tasks)
    p = result.response_probability
    assert p[risk > 0.7].mean() > 2 * p[risk < 0.1].mean()


def test_it_rejects_a_task_for_an_unknown_advertiser(saved):
    world = World.load(saved)
    with pytest.raises(SimulationError, match="unknown advertiser_id"):
        world.advance(days=1, incentives=[Incentive("nobody", None, "login_days", 3, 5.0, 7)])


def test_it_rejects_an_unknown_task_kind(saved):
    world = World.load(saved)
    task = Incentive("adv-000001", "display", "free_lunch", 3, 5.0, 7)
    with pytest.raises(SimulationError, match="unknown kind"):
        world.advance(days=1, incentives=[task])


def test_it_rejects_too_few_days():
    with pytest.raises(SimulationError, match="days must be"):
        simulate(advertisers=10, days=7, seed=1)


def test_it_writes_the_files_and_the_world_state_from_the_command(tmp_path, capsys):
    call_command("simulate", advertisers=50, days=21, seed=2, out=tmp_path)
    out = capsys.readouterr().out
    for name in ("scenarios.csv", "advertisers.csv", "daily_stats.csv", "world.npz"):
        assert (tmp_path / name).exists() and name in out
    assert World.load(tmp_path / "world.npz").end_date == END


def test_it_takes_the_end_date_from_the_command(tmp_path):
    call_command(
        "simulate", advertisers=20, days=14, seed=2, out=tmp_path, end_date=date(2025, 1, 31)
    )
    _, rows = read_rows(tmp_path / "daily_stats.csv")
    assert max(row["date"] for row in rows) == "2025-01-31"


def test_it_refuses_fewer_than_14_days_from_the_command(tmp_path):
    with pytest.raises(CommandError, match="days must be an integer from 14"):
        call_command("simulate", advertisers=10, days=13, seed=1, out=tmp_path)


def test_it_refuses_an_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(CommandError, match="is a file"):
        call_command("simulate", advertisers=10, days=14, seed=1, out=target)


def test_it_scores_a_columnar_batch_as_the_same_tasks_one_by_one(saved):
    world = World.load(saved)
    ids = world.advertisers_table()["advertiser_id"].to_pylist()[:50]
    tasks = [
        Incentive(a, None if i % 3 == 0 else "sponsored_search", kind, 4.0 + i % 5, 20.0, 7)
        for i, a in enumerate(ids)
        for kind in ("spend_target", "active_days_target")
    ]
    batch = IncentiveBatch.of(tasks)
    noise = np.array([-1.0, 0.0, 1.5])
    together = world.response_probability(batch, noise=noise)  # [3, n]
    assert together.shape == (3, len(tasks))
    for q, value in enumerate(noise):
        one_by_one = [world.response_probability([t], noise=float(value))[0] for t in tasks]
        np.testing.assert_allclose(together[q], one_by_one)
    np.testing.assert_allclose(world.response_extra_spend(batch), world.response_extra_spend(tasks))
