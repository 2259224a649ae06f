"""Ingestion of the data contract: good files, each class of bad input, idempotence, atomicity."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from advertisers import services
from advertisers.ingestion import IngestError, ingest_files, pg_bulk, pg_copy, reading
from advertisers.models import Advertiser, DailyStat, Scenario
from advertisers.services import scenario_stats_refresh
from advertisers.simulator import simulate

pytestmark = pytest.mark.django_db

SCENARIOS = "code,name,kind,launched_on,attr_avg_cpc"
ADVERTISERS = "advertiser_id,name,registered_on,business_scale,main_category,star_level"
STATS = (
    "advertiser_id,scenario,date,impressions,clicks,expenditure,gmv,"
    "logins,campaign_edits,bid_changes,budget_changes"
)


def write(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def stat_row(
    advertiser: str = "a1", scenario: str = "search", day: str = "2024-06-01", **kw
) -> str:
    values = {
        "impressions": "100",
        "clicks": "5",
        "expenditure": "12.50",
        "gmv": "40",
        "logins": "1",
        "campaign_edits": "0",
        "bid_changes": "2",
        "budget_changes": "0",
    }
    values.update(kw)
    return ",".join([advertiser, scenario, day, *values.values()])


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "scenarios": write(
            tmp_path / "scenarios.csv",
            SCENARIOS,
            "search,Sponsored search,search,2020-01-01,0.8",
            "live,Live stream,live,2024-05-01,0.6",
        ),
        "advertisers": write(
            tmp_path / "advertisers.csv",
            ADVERTISERS,
            "a1,Alpha,2021-03-04,3,apparel,2",
            'a2,"Beta, Inc.",2022-01-01,1,food,0',
        ),
        "stats": write(
            tmp_path / "daily_stats.csv",
            STATS,
            stat_row("a1", "search", "2024-06-01"),
            stat_row("a1", "live", "2024-06-01", expenditure="3.10"),
            stat_row("a2", "search", "2024-06-02", expenditure="0", gmv="0.5"),
        ),
    }


def problems_of(**kwargs) -> list[str]:
    with pytest.raises(IngestError) as caught:
        ingest_files(**kwargs)
    return caught.value.lines()


def stats_with(tmp_path: Path, *rows: str, header: str = STATS) -> Path:
    return write(tmp_path / "daily_stats.csv", header, *rows)


def loaded(files: dict[str, Path]) -> None:
    ingest_files(scenarios=files["scenarios"], advertisers=files["advertisers"])


# --- Good files ----------------------------------------------------------------------------------


def test_it_loads_good_files(files):
    report = ingest_files(**files)

    assert report.daily_stats.inserted == 3
    row = DailyStat.objects.get(advertiser__advertiser_id="a1", scenario__code="live")
    assert row.expenditure == Decimal("3.10")
    assert row.date == dt.date(2024, 6, 1)
    assert (row.impressions, row.clicks, row.bid_changes) == (100, 5, 2)
    assert Advertiser.objects.get(advertiser_id="a2").name == "Beta, Inc."
    assert Scenario.objects.get(code="search").attributes == {"attr_avg_cpc": 0.8}


def test_it_reports_rows_inserted_and_updated_and_the_time(files):
    summary = ingest_files(**files).summary()

    assert summary.startswith("Loaded in ")
    assert "scenarios 2 inserted, 0 updated" in summary
    assert "advertisers 2 inserted, 0 updated" in summary
    assert "daily stats 3 inserted, 0 updated" in summary


def test_it_leaves_the_same_rows_when_loading_the_same_files_twice(files):
    ingest_files(**files)
    before = list(DailyStat.objects.order_by("date", "advertiser_id", "scenario_id").values())

    report = ingest_files(**files)

    after = list(DailyStat.objects.order_by("date", "advertiser_id", "scenario_id").values())
    assert after == before
    assert (report.daily_stats.inserted, report.daily_stats.updated) == (0, 3)
    assert (report.advertisers.inserted, report.advertisers.updated) == (0, 2)
    assert Scenario.objects.count() == 2


def test_it_replaces_the_row_of_the_same_advertiser_scenario_and_day(files, tmp_path):
    ingest_files(**files)
    stats_with(tmp_path, stat_row("a1", "search", "2024-06-01", clicks="9", gmv="1.25"))

    report = ingest_files(stats=tmp_path / "daily_stats.csv")

    row = DailyStat.objects.get(advertiser__advertiser_id="a1", scenario__code="search")
    assert (row.clicks, row.gmv) == (9, Decimal("1.25"))
    assert (report.daily_stats.inserted, report.daily_stats.updated) == (0, 1)
    assert DailyStat.objects.count() == 3


def test_it_updates_a_scenario_by_its_code(files, tmp_path):
    ingest_files(scenarios=files["scenarios"])
    write(tmp_path / "s2.csv", "code,name,kind,launched_on", "search,Search ads,search,2019-01-01")

    ingest_files(scenarios=tmp_path / "s2.csv")

    scenario = Scenario.objects.get(code="search")
    assert (scenario.name, scenario.launched_on) == ("Search ads", dt.date(2019, 1, 1))
    assert scenario.attributes == {}


def test_it_accepts_codes_stored_by_an_earlier_load(files):
    loaded(files)

    report = ingest_files(stats=files["stats"])

    assert report.daily_stats.inserted == 3


def test_it_reads_parquet_files_with_the_same_columns(files, tmp_path):
    loaded(files)
    table = pa.table(
        {
            "advertiser_id": ["a1", "a2"],
            "scenario": ["search", "live"],
            "date": pa.array([dt.date(2024, 6, 3), dt.date(2024, 6, 4)]),
            "impressions": [10, 20],
            "clicks": [1, 2],
            "expenditure": pa.array([Decimal("1.50"), Decimal("0.00")], pa.decimal128(14, 2)),
            "gmv": ["3.25", "0"],
            "logins": [1, 0],
            "campaign_edits": [0, 0],
            "bid_changes": [0, 1],
            "budget_changes": [0, 0],
        }
    )
    pq.write_table(table, tmp_path / "daily_stats.parquet")

    ingest_files(stats=tmp_path / "daily_stats.parquet")

    row = DailyStat.objects.get(advertiser__advertiser_id="a1", date=dt.date(2024, 6, 3))
    assert (row.clicks, row.expenditure, row.gmv) == (1, Decimal("1.50"), Decimal("3.25"))


def test_it_numbers_parquet_rows_as_csv_lines(files, tmp_path):
    loaded(files)
    table = pa.table({name: ["1"] * 2 for name in STATS.split(",")})
    table = table.set_column(0, "advertiser_id", pa.array(["a1", "a2"]))
    table = table.set_column(1, "scenario", pa.array(["search", "search"]))
    table = table.set_column(2, "date", pa.array(["2024-06-01", "2024-06-99"]))
    pq.write_table(table, tmp_path / "daily_stats.parquet")

    problems = problems_of(stats=tmp_path / "daily_stats.parquet")

    assert problems == ["daily_stats.parquet:3: date: '2024-06-99' is not a date; write YYYY-MM-DD"]


def test_it_skips_blank_lines_and_keeps_line_numbers(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row("a1"), "", stat_row("a2", clicks="x"), "")

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == ["daily_stats.csv:4: clicks: 'x' is not a whole number"]


def test_it_ignores_unknown_columns_when_asked(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row() + ",whatever", header=STATS + ",note")

    report = ingest_files(stats=tmp_path / "daily_stats.csv", ignore_unknown_columns=True)

    assert report.daily_stats.inserted == 1


def test_it_refreshes_scenario_statistics_after_a_load(files):
    ingest_files(**files)

    search = Scenario.objects.get(code="search")
    assert search.stats_as_of == dt.date(2024, 6, 2)
    assert search.active_advertisers_28d == 1  # a2 spent 0
    assert search.mean_daily_expenditure == Decimal("12.50")


# --- Bad input: each class of problem, with its message -------------------------------------------


def test_it_rejects_missing_columns(files, tmp_path):
    loaded(files)
    header = STATS.replace(",clicks", "")
    stats_with(tmp_path, "a1,search,2024-06-01,100,12.50,40,1,0,2,0", header=header)

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:1: clicks: missing column; a daily stats file needs advertiser_id, "
        "scenario, date, impressions, clicks, expenditure, gmv, logins, campaign_edits, "
        "bid_changes, budget_changes"
    ]


def test_it_rejects_unknown_columns(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row() + ",x", header=STATS + ",note")

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:1: note: unknown column; remove it, or ask to ignore unknown columns "
        "(--ignore-unknown-columns)"
    ]


def test_it_rejects_bad_dates(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row(day="2024-02-30"), stat_row(day="01/06/2024"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:2: date: '2024-02-30' is not a date; write YYYY-MM-DD",
        "daily_stats.csv:3: date: '01/06/2024' is not a date; write YYYY-MM-DD",
    ]


def test_it_rejects_negative_counts(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row(logins="-1"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == ["daily_stats.csv:2: logins: '-1' is negative; counts are never negative"]


def test_it_rejects_non_integer_counts(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row(clicks="2.5"), stat_row("a2", impressions=""))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:2: clicks: '2.5' is not a whole number",
        "daily_stats.csv:3: impressions: is empty; a value is required",
    ]


def test_it_rejects_counts_too_large_for_their_column(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row(bid_changes="3000000000"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:2: bid_changes: '3000000000' is out of range 0..2147483647"
    ]


def test_it_rejects_money_with_more_than_two_decimals(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row(expenditure="1.234"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:2: expenditure: '1.234' has more than 2 decimals; round it to cents"
    ]


def test_it_rejects_negative_or_malformed_money(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row(gmv="-3.00"), stat_row("a2", gmv="1,5"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems[0] == "daily_stats.csv:2: gmv: '-3.00' is negative; amounts are never negative"
    # "1,5" splits the row: one field too many.
    assert problems[1] == "daily_stats.csv:3: -: has 12 fields, the header has 11"


def test_it_rejects_money_that_is_not_an_amount(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row(gmv="12e3"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == ["daily_stats.csv:2: gmv: '12e3' is not an amount; write it like 1234.56"]


def test_it_rejects_unknown_advertiser_and_scenario_codes(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row("zz", "nope"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:2: advertiser_id: unknown advertiser 'zz'; add it to the advertisers "
        "file in the same load or load it first",
        "daily_stats.csv:2: scenario: unknown scenario 'nope'; add it to the scenarios file in "
        "the same load or load it first",
    ]


def test_it_checks_codes_against_a_rejected_file_of_the_same_load(files, tmp_path):
    write(tmp_path / "advertisers.csv", ADVERTISERS, "a1,Alpha,2021-03-04,9,apparel,2")

    problems = problems_of(
        scenarios=files["scenarios"],
        advertisers=tmp_path / "advertisers.csv",
        stats=stats_with(tmp_path, stat_row("a1")),
    )

    assert problems == ["advertisers.csv:2: business_scale: '9' is out of range 1..5"]


def test_it_rejects_duplicate_keys_inside_a_file(files, tmp_path):
    loaded(files)
    stats_with(tmp_path, stat_row("a1"), stat_row("a2"), stat_row("a1", clicks="7"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert problems == [
        "daily_stats.csv:4: advertiser_id/scenario/date: duplicate of line 2 "
        "(a1, search, 2024-06-01); keep one row per key"
    ]


def test_it_rejects_bad_reference_rows(tmp_path):
    write(tmp_path / "scenarios.csv", SCENARIOS, "new one,New,radio,2024-01-01,high")

    problems = problems_of(scenarios=tmp_path / "scenarios.csv")

    assert problems == [
        "scenarios.csv:2: code: 'new one' is not a code; use letters, digits, - and _",
        "scenarios.csv:2: kind: 'radio' is not one of "
        "search, display, shop, feed, brand, live, other",
        "scenarios.csv:2: attr_avg_cpc: 'high' is not a number",
    ]


def test_it_rejects_files_of_another_type(tmp_path):
    problems = problems_of(stats=write(tmp_path / "daily_stats.xlsx", STATS))

    assert problems == ["daily_stats.xlsx:0: -: unsupported file type; use .csv or .parquet"]


def test_it_lists_the_first_50_problems_and_counts_the_rest(files, tmp_path):
    loaded(files)
    rows = [stat_row("a1", day=f"2024-06-{d:02d}", clicks="-1", logins="x") for d in range(1, 31)]
    stats_with(tmp_path, *rows)

    with pytest.raises(IngestError) as caught:
        ingest_files(stats=tmp_path / "daily_stats.csv")

    lines = caught.value.lines()
    assert len(lines) == 51
    assert lines[0] == "daily_stats.csv:2: clicks: '-1' is negative; counts are never negative"
    assert lines[1] == "daily_stats.csv:2: logins: 'x' is not a whole number"
    assert lines[49] == "daily_stats.csv:26: logins: 'x' is not a whole number"
    assert lines[50] == "... and 10 more problems"


# --- Atomicity -----------------------------------------------------------------------------------


def test_it_stores_nothing_when_the_last_row_of_a_file_is_bad(files, tmp_path):
    rows = [stat_row("a1", day=f"2024-06-{d:02d}") for d in range(1, 29)]
    stats_with(tmp_path, *rows, stat_row("a2", expenditure="0.001"))

    with pytest.raises(IngestError):
        ingest_files(
            scenarios=files["scenarios"],
            advertisers=files["advertisers"],
            stats=tmp_path / "daily_stats.csv",
        )

    assert (Scenario.objects.count(), Advertiser.objects.count(), DailyStat.objects.count()) == (
        0,
        0,
        0,
    )


def test_it_keeps_earlier_data_untouched_when_a_reload_fails(files, tmp_path):
    ingest_files(**files)
    stats_with(tmp_path, stat_row("a1", clicks="99"), stat_row("a2", clicks="-1"))

    with pytest.raises(IngestError):
        ingest_files(stats=tmp_path / "daily_stats.csv")

    assert (
        DailyStat.objects.get(advertiser__advertiser_id="a1", scenario__code="search").clicks == 5
    )


# --- The bulk strategy (PostgreSQL, large loads) -------------------------------------------------


def index_definitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname",
            [DailyStat._meta.db_table],
        )
        indexes = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass ORDER BY conname",
            [DailyStat._meta.db_table],
        )
        # A bulk load adds the foreign keys back NOT VALID (it checked the keys it used):
        # test_it_keeps_enforcing_foreign_keys_after_bulk_loads shows they still hold.
        constraints = [
            f"{name}: {ddl.removesuffix(' NOT VALID')}" for name, ddl in cursor.fetchall()
        ]
        return indexes + constraints


@pytest.fixture
def bulk(settings):
    settings.INGEST_BULK_MIN_ROWS = 1


@pytest.mark.postgres
def test_it_bulk_loads_and_restores_every_index_and_constraint(files, bulk):
    before = index_definitions()

    report = ingest_files(**files)

    assert report.daily_stats.inserted == 3
    assert index_definitions() == before
    assert DailyStat.objects.get(advertiser__advertiser_id="a1", scenario__code="live").gmv == 40


def immediately(sql: str, params: list | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(sql, params)


@pytest.mark.postgres
def test_it_keeps_enforcing_foreign_keys_after_bulk_loads(files, bulk):
    ingest_files(**files)
    ingest_files(**files)  # re-adds keys that were NOT VALID
    table = DailyStat._meta.db_table

    with pytest.raises(IntegrityError):
        immediately(
            f"UPDATE {table} SET advertiser_id = -1 WHERE id = (SELECT min(id) FROM {table})"
        )
    with pytest.raises(IntegrityError):
        immediately(f"DELETE FROM {Scenario._meta.db_table} WHERE code = %s", ["live"])


@pytest.mark.postgres
def test_it_refuses_a_bulk_load_whose_advertiser_was_deleted_while_it_ran(
    files, tmp_path, bulk, monkeypatch
):
    ingest_files(**files)
    stats_with(tmp_path, stat_row("a1", day="2024-06-03"), stat_row("a2", day="2024-06-03"))
    start = pg_bulk._bulk_start

    def then_delete_a2(cursor, db_table):  # after the codes were mapped, before the lock
        a2 = Advertiser.objects.get(advertiser_id="a2")
        DailyStat.objects.filter(advertiser=a2).delete()
        a2.delete()
        return start(cursor, db_table)

    monkeypatch.setattr(pg_bulk, "_bulk_start", then_delete_a2)

    assert problems_of(stats=tmp_path / "daily_stats.csv") == [
        "daily_stats.csv:0: advertiser_id: advertiser 'a2' was deleted while this load ran; "
        "load again"
    ]
    assert Advertiser.objects.filter(advertiser_id="a2").exists()
    assert DailyStat.objects.count() == 3


@pytest.mark.postgres
def test_it_computes_a_first_bulk_load_statistics_as_the_database_would(
    tmp_path, bulk, monkeypatch
):
    world = simulate(advertisers=300, days=45, seed=5).write(tmp_path)
    # A load into an empty table knows the figures from its rows and asks no query for them.
    monkeypatch.setattr(services, "window_activity", lambda: pytest.fail("queried"))
    ingest_files(
        scenarios=world["scenarios"], advertisers=world["advertisers"], stats=world["daily_stats"]
    )
    monkeypatch.undo()
    from_rows = [
        (s.code, s.active_advertisers_28d, s.mean_daily_expenditure, s.stats_as_of)
        for s in Scenario.objects.order_by("code")
    ]

    scenario_stats_refresh()

    assert [
        (s.code, s.active_advertisers_28d, s.mean_daily_expenditure, s.stats_as_of)
        for s in Scenario.objects.order_by("code")
    ] == from_rows
    assert all(active > 0 for _, active, _, _ in from_rows)


@pytest.mark.postgres
def test_it_bulk_reloads_by_replacing_rows(files, bulk):
    ingest_files(**files)
    values = list(
        DailyStat.objects.order_by("date", "advertiser_id", "scenario_id").values_list(
            "advertiser_id", "scenario_id", "date", "expenditure"
        )
    )

    report = ingest_files(**files)

    assert (report.daily_stats.inserted, report.daily_stats.updated) == (0, 3)
    assert (
        list(
            DailyStat.objects.order_by("date", "advertiser_id", "scenario_id").values_list(
                "advertiser_id", "scenario_id", "date", "expenditure"
            )
        )
        == values
    )
    DailyStat.objects.create(  # the id sequence was moved past the bulk-loaded ids
        advertiser=Advertiser.objects.get(advertiser_id="a1"),
        scenario=Scenario.objects.get(code="search"),
        date=dt.date(2024, 7, 1),
    )


@pytest.mark.postgres
def test_it_restores_the_table_when_a_bulk_load_fails(files, tmp_path, bulk):
    ingest_files(**files)
    before = index_definitions()
    stats_with(tmp_path, stat_row("a1", clicks="99"), stat_row("a2", clicks="99"), stat_row("a1"))

    with pytest.raises(IngestError):
        ingest_files(stats=tmp_path / "daily_stats.csv")

    assert index_definitions() == before
    assert DailyStat.objects.count() == 3
    assert DailyStat.objects.filter(clicks=99).count() == 0


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["staging", "bulk"])
def test_it_reports_a_row_the_database_refuses_as_a_problem(files, tmp_path, settings, strategy):
    settings.INGEST_BULK_MIN_ROWS = 1 if strategy == "bulk" else 10**9
    loaded(files)
    with connection.cursor() as cursor:  # a rule the checks do not know about
        cursor.execute(
            f"ALTER TABLE {DailyStat._meta.db_table} ADD CONSTRAINT few CHECK (clicks < 1000)"
        )
    stats_with(tmp_path, stat_row(impressions="9000", clicks="5000"))

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert len(problems) == 1
    assert problems[0].startswith("daily_stats.csv:0: -: the database refused the rows (")
    assert DailyStat.objects.count() == 0


# PostgreSQL only: SQLite keeps a decimal as an 8-byte float, and 16 significant digits of
# money do not survive that (the demo database does not hold such sums).
@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["staging", "bulk"])
def test_it_stores_the_extremes_of_every_column_exactly(files, tmp_path, settings, strategy):
    settings.INGEST_BULK_MIN_ROWS = 1 if strategy == "bulk" else 10**9
    loaded(files)
    stats_with(
        tmp_path,
        stat_row(
            "a1",
            day="1000-01-01",
            impressions="999999999999999999",
            clicks="0",
            expenditure="999999999999.99",
            gmv="99999999999999.99",
            logins="2147483647",
            bid_changes="007",
        ),
        stat_row("a1", day="2999-12-31", expenditure="0", gmv="0.5"),
        stat_row("a1", day="2024-02-29", expenditure="10000.01", gmv="7.05"),
        stat_row("a2", day="1999-12-31", expenditure="0.00", gmv="123456789.1"),
    )

    # The extreme days are before the advertisers registered, or in the future: implausible.
    ingest_files(stats=tmp_path / "daily_stats.csv", allow_implausible=True)

    rows = DailyStat.objects.order_by("advertiser__advertiser_id", "date").values_list(
        "date", "impressions", "clicks", "expenditure", "gmv", "logins", "bid_changes"
    )
    assert list(rows) == [
        (
            dt.date(1000, 1, 1),
            999999999999999999,
            0,
            Decimal("999999999999.99"),
            Decimal("99999999999999.99"),
            2147483647,
            7,
        ),
        (dt.date(2024, 2, 29), 100, 5, Decimal("10000.01"), Decimal("7.05"), 1, 2),
        (dt.date(2999, 12, 31), 100, 5, Decimal("0"), Decimal("0.5"), 1, 2),
        (dt.date(1999, 12, 31), 100, 5, Decimal("0"), Decimal("123456789.1"), 1, 2),
    ]


@pytest.mark.postgres
def test_it_rejects_a_whole_bulk_load_for_a_bad_row_late_in_it(files, tmp_path, bulk, monkeypatch):
    ingest_files(**files)
    before = index_definitions()
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(300)]
    rows = [stat_row("a1", "search", day.isoformat()) for day in days]
    stats_with(tmp_path, *rows, stat_row("a2", "search", "2024-01-01", clicks="-3"), rows[7])
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", 1024)  # many blocks sent before the bad one
    sent = []
    encode = pg_copy.BinaryRows.encode
    monkeypatch.setattr(
        pg_copy.BinaryRows, "encode", lambda self, table: sent.append(1) or encode(self, table)
    )

    problems = problems_of(stats=tmp_path / "daily_stats.csv")

    assert len(sent) > 10
    assert problems == [
        "daily_stats.csv:302: clicks: '-3' is negative; counts are never negative",
        "daily_stats.csv:303: advertiser_id/scenario/date: duplicate of line 9 "
        "(a1, search, 2024-01-08); keep one row per key",
    ]
    assert index_definitions() == before
    assert DailyStat.objects.count() == 3


@pytest.mark.postgres
def test_it_leaves_the_pages_of_a_first_bulk_load_all_visible(files, bulk):
    ingest_files(**files)

    with connection.cursor() as cursor:  # COPY FREEZE set the visibility map; ANALYZE counted it
        cursor.execute(
            "SELECT relallvisible FROM pg_class WHERE oid = %s::regclass",
            [DailyStat._meta.db_table],
        )
        assert cursor.fetchone()[0] == 1


@pytest.mark.postgres
def test_it_keeps_a_key_another_table_references_in_a_bulk_load(files, bulk):
    table = DailyStat._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE stat_note (stat_id bigint REFERENCES {table} (id))")
    before = index_definitions()

    report = ingest_files(**files)

    assert report.daily_stats.inserted == 3
    assert index_definitions() == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE confrelid = %s::regclass", [table])
        assert cursor.fetchone()[0] == 1


# --- The command ---------------------------------------------------------------------------------


def test_the_command_loads_a_directory_and_prints_the_summary_line(files, capsys):
    call_command("ingest", str(files["stats"].parent), "--no-progress")

    out = capsys.readouterr().out
    assert "daily stats 3 inserted, 0 updated" in out
    assert DailyStat.objects.count() == 3


def test_the_command_prints_every_problem_and_fails(files, tmp_path, capsys):
    stats_with(tmp_path, stat_row("a1", clicks="-2"), stat_row("a9"))

    with pytest.raises(CommandError, match="2 problems; nothing was stored"):
        call_command("ingest", str(tmp_path))

    err = capsys.readouterr().err
    assert "daily_stats.csv:2: clicks: '-2' is negative; counts are never negative" in err
    assert "daily_stats.csv:3: advertiser_id: unknown advertiser 'a9'" in err
    assert DailyStat.objects.count() == 0


def test_the_command_exits_with_status_1_on_problems(files, tmp_path):
    stats_with(tmp_path, stat_row("a1", clicks="-2"))

    with pytest.raises(CommandError) as caught:
        call_command("ingest", "--stats", str(tmp_path / "daily_stats.csv"))

    assert caught.value.returncode == 1  # what manage.py exits with
