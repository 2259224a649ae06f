"""Plausibility rules of ingestion: values well formed one by one that cannot be true together."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from advertisers.ingestion import IngestError, ingest_files, reading
from advertisers.models import Advertiser, DailyStat, Scenario

pytestmark = pytest.mark.django_db

LOAD_DATE = dt.date(2024, 7, 1)
SCENARIOS = "code,name,kind,launched_on"
ADVERTISERS = "advertiser_id,name,registered_on,business_scale,main_category,star_level"
STATS = (
    "advertiser_id,scenario,date,impressions,clicks,expenditure,gmv,"
    "logins,campaign_edits,bid_changes,budget_changes"
)
SEARCH = "search,Sponsored search,search,2020-01-01"
LIVE = "live,Live stream,live,2024-05-01"
A1 = "a1,Alpha,2021-03-04,3,apparel,2"
A2 = "a2,Beta,2024-05-15,1,food,0"


def stat(advertiser: str = "a1", scenario: str = "search", day: str = "2024-06-01", **kw) -> str:
    values = {"impressions": "100", "clicks": "5", "expenditure": "12.50", "gmv": "40"}
    values.update(kw)
    return ",".join([advertiser, scenario, day, *values.values(), "1", "0", "2", "0"])


@pytest.fixture(params=["csv", "parquet"])
def write(request, tmp_path: Path):
    """Writes a contract file as CSV, or as Parquet with the columns pyarrow infers from it
    (integers, dates, floats): the same rows, numbered as the same lines."""

    def write(stem: str, header: str, *rows: str) -> Path:
        path = tmp_path / f"{stem}.csv"
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        if request.param == "csv":
            return path
        parquet = path.with_suffix(".parquet")
        pq.write_table(pcsv.read_csv(path), parquet)
        path.unlink()
        return parquet

    return write


def reference(write) -> dict[str, Path]:
    return {
        "scenarios": write("scenarios", SCENARIOS, SEARCH, LIVE),
        "advertisers": write("advertisers", ADVERTISERS, A1, A2),
    }


def problems_of(**kwargs) -> list[str]:
    with pytest.raises(IngestError) as caught:
        ingest_files(load_date=LOAD_DATE, **kwargs)
    return caught.value.lines()


def stored() -> tuple[int, int, int]:
    return Scenario.objects.count(), Advertiser.objects.count(), DailyStat.objects.count()


def test_it_rejects_more_clicks_than_impressions(write):
    ingest_files(**reference(write), load_date=LOAD_DATE)
    stats = write("daily_stats", STATS, stat(), stat("a2", impressions="10", clicks="11"))

    problems = problems_of(stats=stats)

    assert problems == [
        f"{stats.name}:3: clicks: 11 clicks but 10 impressions; clicks cannot exceed impressions"
    ]
    assert DailyStat.objects.count() == 0


def test_it_accepts_as_many_clicks_as_impressions_on_the_load_date(write):
    ingest_files(**reference(write), load_date=LOAD_DATE)
    stats = write(
        "daily_stats", STATS, stat(day=LOAD_DATE.isoformat(), impressions="7", clicks="7")
    )

    report = ingest_files(stats=stats, load_date=LOAD_DATE)

    assert (report.daily_stats.inserted, report.warnings) == (1, ())


def test_it_rejects_a_day_of_stats_after_the_load_date(write):
    ingest_files(**reference(write), load_date=LOAD_DATE)
    stats = write("daily_stats", STATS, stat(day="2024-07-02"))

    assert problems_of(stats=stats) == [
        f"{stats.name}:2: date: '2024-07-02' is after the load date 2024-07-01; "
        "no day of stats can be in the future"
    ]


def test_it_takes_today_as_the_load_date_by_default(write):
    ingest_files(**reference(write))
    today = timezone.localdate()
    tomorrow = write("daily_stats", STATS, stat(day=(today + dt.timedelta(days=1)).isoformat()))

    with pytest.raises(IngestError, match="1 problem"):
        ingest_files(stats=tomorrow)
    report = ingest_files(stats=write("daily_stats", STATS, stat(day=today.isoformat())))

    assert report.daily_stats.inserted == 1


def test_it_rejects_a_registration_and_a_launch_after_the_load_date(write):
    scenarios = write("scenarios", SCENARIOS, SEARCH, "soon,Soon,display,2024-08-01")
    advertisers = write("advertisers", ADVERTISERS, A1, "a3,Gamma,2024-07-02,1,food,0")

    problems = problems_of(scenarios=scenarios, advertisers=advertisers)

    assert problems == [
        f"{scenarios.name}:3: launched_on: '2024-08-01' is after the load date 2024-07-01; "
        "a scenario cannot launch in the future",
        f"{advertisers.name}:3: registered_on: '2024-07-02' is after the load date 2024-07-01; "
        "an advertiser cannot register in the future",
    ]
    assert stored() == (0, 0, 0)


def test_it_rejects_stats_before_the_launch_of_a_scenario_in_the_same_load(write):
    stats = write(
        "daily_stats", STATS, stat("a1", "live", "2024-05-01"), stat("a1", "live", "2024-04-30")
    )

    problems = problems_of(**reference(write), stats=stats)

    assert problems == [
        f"{stats.name}:3: date: '2024-04-30' is before scenario 'live' was launched (2024-05-01); "
        "no stats can come before it"
    ]
    assert stored() == (0, 0, 0)


def test_it_rejects_stats_before_the_registration_of_a_stored_advertiser(write):
    ingest_files(**reference(write), load_date=LOAD_DATE)
    stats = write("daily_stats", STATS, stat("a2", day="2024-05-14"))

    assert problems_of(stats=stats) == [
        f"{stats.name}:2: date: '2024-05-14' is before advertiser 'a2' registered (2024-05-15); "
        "no stats can come before it"
    ]


@pytest.mark.parametrize("other_problem", [False, True], ids=["clean", "with-another-problem"])
def test_it_checks_stats_against_the_registration_the_same_load_gives(write, other_problem):
    ingest_files(**reference(write), load_date=LOAD_DATE)  # a2 registered on 2024-05-15
    extra = ["a9,Bad,2020-01-01,9,food,0"] if other_problem else []
    advertisers = write("advertisers", ADVERTISERS, "a2,Beta,2024-06-10,1,food,0", *extra)
    stats = write("daily_stats", STATS, stat("a2", day="2024-06-01"))

    problems = problems_of(advertisers=advertisers, stats=stats)

    assert problems[-1] == (
        f"{stats.name}:2: date: '2024-06-01' is before advertiser 'a2' registered (2024-06-10); "
        "no stats can come before it"
    )
    assert len(problems) == 1 + other_problem
    assert Advertiser.objects.get(advertiser_id="a2").registered_on == dt.date(2024, 5, 15)


def test_it_accepts_stats_an_earlier_registration_in_the_same_load_allows(write):
    ingest_files(**reference(write), load_date=LOAD_DATE)
    advertisers = write("advertisers", ADVERTISERS, "a2,Beta,2024-01-01,1,food,0")
    stats = write("daily_stats", STATS, stat("a2", day="2024-03-01"))

    report = ingest_files(advertisers=advertisers, stats=stats, load_date=LOAD_DATE)

    assert report.daily_stats.inserted == 1


def test_it_checks_plausibility_only_of_well_formed_values(write):
    ingest_files(**reference(write), load_date=LOAD_DATE)
    stats = write("daily_stats", STATS, stat(impressions="10", clicks="x"), stat(day="2024-13-01"))

    assert problems_of(stats=stats) == [
        f"{stats.name}:2: clicks: 'x' is not a whole number",
        f"{stats.name}:3: date: '2024-13-01' is not a date; write YYYY-MM-DD",
    ]


@pytest.mark.parametrize("strategy", ["staging", pytest.param("bulk", marks=pytest.mark.postgres)])
def test_it_loads_implausible_rows_as_warnings_when_allowed(tmp_path, settings, strategy):
    settings.INGEST_BULK_MIN_ROWS = 1 if strategy == "bulk" else 10**9
    files = {
        "scenarios": tmp_path / "scenarios.csv",
        "advertisers": tmp_path / "advertisers.csv",
        "stats": tmp_path / "daily_stats.csv",
    }
    files["scenarios"].write_text(f"{SCENARIOS}\n{SEARCH}\n{LIVE}\n")
    files["advertisers"].write_text(f"{ADVERTISERS}\n{A1}\n{A2}\n")
    files["stats"].write_text(
        f"{STATS}\n{stat(impressions='3', clicks='4')}\n{stat('a2', 'live', '2024-05-10')}\n"
    )

    report = ingest_files(**files, load_date=LOAD_DATE, allow_implausible=True)

    assert report.warnings == (
        "daily_stats.csv:2: clicks: 4 clicks but 3 impressions; clicks cannot exceed impressions",
        "daily_stats.csv:3: date: '2024-05-10' is before advertiser 'a2' registered "
        "(2024-05-15); no stats can come before it",
    )
    assert stored() == (2, 2, 2)
    assert DailyStat.objects.get(advertiser__advertiser_id="a1").clicks == 4


def test_it_still_rejects_malformed_values_when_implausible_ones_are_allowed(tmp_path):
    (tmp_path / "advertisers.csv").write_text(f"{ADVERTISERS}\n{A1}\na2,Beta,2099-01-01,7,food,0\n")

    with pytest.raises(IngestError) as caught:
        ingest_files(advertisers=tmp_path / "advertisers.csv", allow_implausible=True)

    assert caught.value.lines() == ["advertisers.csv:3: business_scale: '7' is out of range 1..5"]
    assert stored() == (0, 0, 0)


@pytest.mark.postgres
def test_it_rejects_a_whole_bulk_load_for_an_implausible_row_late_in_it(
    tmp_path, settings, monkeypatch
):
    settings.INGEST_BULK_MIN_ROWS = 1
    (tmp_path / "scenarios.csv").write_text(f"{SCENARIOS}\n{SEARCH}\n")
    (tmp_path / "advertisers.csv").write_text(f"{ADVERTISERS}\n{A1}\n")
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=d) for d in range(300)]
    rows = [stat(day=day.isoformat()) for day in days]
    (tmp_path / "daily_stats.csv").write_text(
        "\n".join([STATS, *rows, stat(day="2024-07-05")]) + "\n"
    )
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", 1024)  # many blocks sent before the bad one

    problems = problems_of(
        scenarios=tmp_path / "scenarios.csv",
        advertisers=tmp_path / "advertisers.csv",
        stats=tmp_path / "daily_stats.csv",
    )

    assert problems == [
        "daily_stats.csv:302: date: '2024-07-05' is after the load date 2024-07-01; "
        "no day of stats can be in the future"
    ]
    assert stored() == (0, 0, 0)


# --- The command and the admin -------------------------------------------------------------------


@pytest.fixture
def implausible_dir(tmp_path: Path) -> Path:
    (tmp_path / "scenarios.csv").write_text(f"{SCENARIOS}\n{SEARCH}\n")
    (tmp_path / "advertisers.csv").write_text(f"{ADVERTISERS}\n{A1}\n")
    (tmp_path / "daily_stats.csv").write_text(f"{STATS}\n{stat(day='2024-07-02')}\n")
    return tmp_path


def test_the_command_rejects_implausible_values_and_names_the_options(implausible_dir, capsys):
    with pytest.raises(CommandError, match="--allow-implausible") as caught:
        call_command("ingest", str(implausible_dir), "--no-progress", "--load-date", "2024-07-01")

    assert str(caught.value) == (
        "Rejected: 1 problem; nothing was stored. Fix the files and run again; 1 is an "
        "implausible value: if it is right, load with --allow-implausible (or give the right "
        "--load-date)."
    )
    assert "daily_stats.csv:2: date: '2024-07-02' is after the load date 2024-07-01" in (
        capsys.readouterr().err
    )
    assert stored() == (0, 0, 0)


def test_the_command_takes_the_load_date_it_is_given(implausible_dir):
    call_command("ingest", str(implausible_dir), "--no-progress", "--load-date", "2024-07-02")

    assert stored() == (1, 1, 1)


def test_the_command_loads_implausible_values_when_allowed_and_prints_them(implausible_dir, capsys):
    call_command(
        "ingest",
        str(implausible_dir),
        *("--no-progress", "--load-date", "2024-07-01", "--allow-implausible"),
    )

    captured = capsys.readouterr()
    assert "daily stats 1 inserted" in captured.out
    assert "daily_stats.csv:2: date: '2024-07-02' is after the load date 2024-07-01" in (
        captured.err
    )
    assert stored() == (1, 1, 1)


def test_the_command_refuses_a_load_date_that_is_not_a_date(implausible_dir):
    with pytest.raises(CommandError, match="--load-date '2024-7-1' is not a date"):
        call_command("ingest", str(implausible_dir), "--load-date", "2024-7-1")


def test_it_loads_a_world_simulated_past_today_on_the_day_simulate_names(tmp_path, capsys):
    end = timezone.localdate() + dt.timedelta(days=30)
    call_command("simulate", advertisers=20, days=14, seed=2, out=tmp_path, end_date=end)
    hint = capsys.readouterr().out.splitlines()[-1]

    with pytest.raises(CommandError, match="implausible values"):
        call_command("ingest", str(tmp_path), "--no-progress")  # today is before its last days
    call_command("ingest", str(tmp_path), "--no-progress", "--load-date", end.isoformat())

    assert hint == f"load it with: manage.py ingest {tmp_path} --load-date {end}"
    assert DailyStat.objects.latest("date").date == end
