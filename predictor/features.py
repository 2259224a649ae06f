"""Feature building: DailyStat rows -> a dense numpy cube -> model inputs and targets.

A sample is one (advertiser, scenario, as-of date). `as_of` is the last observed day: the inputs
cover the T days [as_of - T + 1, as_of] and the targets sum the tau days [as_of + 1, as_of + tau]
(DESIGN section 4; T=40, tau=7 by default).

The pipeline is vectorised end to end:

1. `cube_load` reads every DailyStat row of a date range with ONE query (PostgreSQL: a binary
   `COPY ... TO STDOUT` of one array per column and day, parsed by numpy; SQLite: one
   `SELECT`) and scatters it into a float32 cube `[n_advertisers, n_scenarios, n_days, 8]`
   (ids mapped to dense indices with searchsorted; a missing row is a day of zeros, as the
   data contract says).
2. Samples are chosen with boolean masks over `[advertiser, scenario, as-of]` built from
   cumulative sums along the day axis, and their windows are gathered with fancy indexing.
3. Continuous values are discretised with per-channel quantile bins of log1p(value) fitted on
   the training window only (0 stays bin 0), scenario attributes and statistics are
   standardised with training statistics, and the targets are divided by per-task scales
   (the training mean) that prediction multiplies back. All of it lives in `FeatureSpec`, a
   JSON-serialisable record saved in the model artifact and in `ModelVersion.feature_spec`.

Which pairs are samples:
- training and evaluation: the pairs with any activity in that scenario during the input window,
  for advertisers registered and scenarios launched by the as-of date;
- prediction additionally scores every scenario launched within the input window (so with
  little or no history of its own) for every registered advertiser active anywhere on the
  platform in that window: a new scenario gets predictions from its attributes alone, through
  the scenario features and the meta unit. A scenario not yet launched at as-of gets none.

Scenario statistics at an as-of date (active advertisers in the last 28 days, mean daily spend
per active advertiser, age since launch capped at a year) are computed from the same rows. They
describe the whole population, so when a prediction chunk loads only a range of advertisers they
come from one aggregate query instead (`scenario_activity_from_db`).

A new scenario is an extrapolation by construction: its kind may be unseen (it then gets an
all-zero one-hot), its attributes and statistics lie outside the training range. Kinds and
attribute standardisation are fitted on the scenarios that have training samples, and every
standardised input is clipped to +-5, so what reaches the meta unit stays in a sane range.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import torch
from django.db import connection, transaction
from django.db.models import Count, Sum
from psycopg import sql

from advertisers.models import Advertiser, DailyStat, Scenario
from predictor.models import TASKS
from predictor.networks import InputSpec

PERFORMANCE = ("impressions", "clicks", "expenditure", "gmv")
BEHAVIOUR = ("logins", "campaign_edits", "bid_changes", "budget_changes")
# Channel order of the cube's last axis.
COUNTERS = PERFORMANCE + BEHAVIOUR
CH = {name: i for i, name in enumerate(COUNTERS)}
KINDS = tuple(Scenario.Kind.values)
STATS = ("log_active_advertisers_28d", "log_mean_daily_expenditure", "log_age_days")
STATS_WINDOW_DAYS = 28
# Age says "new or established": beyond a year it adds nothing but an extrapolation.
AGE_CAP_DAYS = 365
# Standardised inputs are clipped: a new scenario's statistics (few advertisers, young) lie far
# outside what training saw, and the meta unit turns its input into weights.
Z_CLIP = 5.0
BUSINESS_SCALES = 5
STAR_LEVELS = 5
SPEC_VERSION = 1

Eligibility = Literal["active", "predict"]


class FeatureError(ValueError):
    """The data cannot produce the requested features (window too short, no samples, ...)."""


@dataclass
class FeatureSpec:
    """Everything needed to turn rows into the exact inputs a trained model expects."""

    window_days: int
    horizon_days: int
    n_bins: int
    # Quantile edges of log1p(value > 0), one list per channel, in batch channel order.
    behaviour_edges: list[list[float]]
    performance_edges: list[list[float]]
    kinds: list[str]
    attr_keys: list[str]
    attr_mean: list[float]
    attr_std: list[float]
    stat_mean: list[float]
    stat_std: list[float]
    categories: list[str]
    tenure_mean: float
    tenure_std: float
    target_scales: list[float]
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    version: int = SPEC_VERSION

    @property
    def n_scenario_features(self) -> int:
        return len(self.kinds) + len(self.attr_keys) + len(STATS)

    @property
    def profile_cardinalities(self) -> tuple[int, int, int]:
        # business_scale 1..5, main_category (0 = unknown), star_level 0..5
        return (BUSINESS_SCALES + 1, len(self.categories) + 1, STAR_LEVELS + 1)

    @property
    def n_profile_numeric(self) -> int:
        return 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        if data.get("version") != SPEC_VERSION:
            raise FeatureError(
                f"feature spec version {data.get('version')!r} is not {SPEC_VERSION}: "
                "the model was trained by an incompatible release; retrain it."
            )
        return cls(**data)

    def input_spec(self) -> InputSpec:
        """The networks' InputSpec for this feature layout (ids 0..len(edges) + 1 per channel)."""
        return InputSpec(
            seq_len=self.window_days,
            behaviour_bins=tuple(len(e) + 2 for e in self.behaviour_edges),
            performance_bins=tuple(len(e) + 2 for e in self.performance_edges),
            n_scenario=self.n_scenario_features,
            profile_cardinalities=self.profile_cardinalities,
            n_profile_num=self.n_profile_numeric,
            tasks=tuple(self.tasks),
            horizon_days=self.horizon_days,
            target_scales=tuple(self.target_scales),
            n_scenario_static=len(self.kinds) + len(self.attr_keys),
        )


# --- loading ---------------------------------------------------------------------------------


@dataclass
class Cube:
    """Daily counters of every (advertiser, scenario) pair with rows in [start, start + n_days)."""

    start: date
    advertiser_pks: np.ndarray  # [A] int64, sorted
    scenario_pks: np.ndarray  # [S] int64, sorted
    values: np.ndarray  # [A, S, D, 8] float32, channels in COUNTERS order
    complete: bool  # True when every advertiser's rows are in (not one pk range)

    @property
    def n_days(self) -> int:
        return self.values.shape[2]

    def day_index(self, days: np.ndarray) -> np.ndarray:
        return (days - np.datetime64(self.start, "D")).astype(np.int64)


@dataclass
class ScenarioTable:
    pks: np.ndarray  # [S] int64, sorted
    codes: list[str]
    kinds: list[str]
    launched_on: np.ndarray  # [S] datetime64[D]
    attributes: list[dict[str, Any]]


@dataclass
class AdvertiserTable:
    pks: np.ndarray  # [A] int64, aligned with the cube
    registered_on: np.ndarray  # [A] datetime64[D]
    business_scale: np.ndarray  # [A] int64
    main_category: np.ndarray  # [A] str_
    star_level: np.ndarray  # [A] int64


# `COPY ... (FORMAT binary)` of one row per day whose fields are arrays (no NULLs, one
# dimension): a field is a 4-byte length, then the array header (ndim, has-null flag, element
# type, length, lower bound) and per element a 4-byte length and a big-endian value.
_COPY_HEADER, _COPY_TRAILER = 19, 2  # signature, flags, extension length; the -1 field count
_ARRAY_HEADER = np.dtype(
    [("ndim", ">i4"), ("nulls", ">i4"), ("oid", ">u4"), ("n", ">i4"), ("lb", ">i4")]
)
_ARRAY_ELEMENT = {20: ">i8", 23: ">i4", 701: ">f8"}  # int8, int4, float8 by type oid


def _rows_postgres(start: date, end: date, pk_range: tuple[int, int] | None) -> np.ndarray:
    """The rows as [N, 11] float64 (advertiser, scenario, day, COUNTERS), from one COPY.

    The server aggregates each day's rows into one array per column, so the client receives a
    message per day rather than per row (reading those costs psycopg a few microseconds each:
    most of the feature time) and parses every array with numpy. The elements of one day's
    arrays come from the same rows in the same order. Money arrives as integer minor units
    (numeric to float8 would go through text on the server)."""
    table = DailyStat._meta.db_table
    where = sql.SQL("date BETWEEN {} AND {}").format(sql.Literal(start), sql.Literal(end))
    if pk_range is not None:
        where = sql.SQL("{} AND advertiser_id >= {} AND advertiser_id < {}").format(
            where, sql.Literal(int(pk_range[0])), sql.Literal(int(pk_range[1]))
        )
    minor_units = _minor_units()
    arrays = [sql.SQL("array_agg(advertiser_id), array_agg(scenario_id)")]
    for name in COUNTERS:
        value = sql.Identifier(name)
        if name in minor_units:  # a decimal: its minor units, exactly
            value = sql.SQL("({} * {})::int8").format(value, sql.Literal(minor_units[name]))
        arrays.append(sql.SQL("array_agg({})").format(value))
    query = sql.SQL(
        "COPY (SELECT (date - {start})::int8, {arrays} FROM {table} WHERE {where} GROUP BY date)"
        " TO STDOUT (FORMAT binary)"
    ).format(
        start=sql.Literal(start),
        arrays=sql.SQL(", ").join(arrays),
        table=sql.Identifier(table),
        where=where,
    )
    buffer = io.BytesIO()
    with transaction.atomic(), connection.cursor() as cursor:
        # Aggregate in date order, one day's arrays in memory at a time, rather than every
        # day's at once in a hash table (which the planner prefers for a whole-table read,
        # and which was 1.7 times slower there); a rollback undoes the setting too.
        cursor.execute("SET LOCAL enable_hashagg = off")
        with cursor.cursor.copy(query) as copy:
            for block in copy:
                buffer.write(block)
        cursor.execute("SET LOCAL enable_hashagg TO DEFAULT")
    data = buffer.getbuffer()
    days = _parse_day_arrays(data[_COPY_HEADER : len(data) - _COPY_TRAILER])
    rows = np.concatenate(days) if days else np.zeros((0, 3 + len(COUNTERS)))
    for name, per_unit in minor_units.items():
        rows[:, 3 + CH[name]] /= per_unit  # correctly rounded: the decimal's float8
    return rows


def _minor_units() -> dict[str, int]:
    """Minor units per unit of every decimal counter (100 for money in cents)."""
    fields = {name: DailyStat._meta.get_field(name) for name in COUNTERS}
    return {
        name: 10**f.decimal_places
        for name, f in fields.items()
        if getattr(f, "decimal_places", None) is not None
    }


def _parse_day_arrays(data: memoryview) -> list[np.ndarray]:
    """The [n, 11] rows of each COPY row (day, then 10 arrays of n elements)."""
    days, pos, n_columns = [], 0, 3 + len(COUNTERS)
    while pos < len(data):
        if int.from_bytes(data[pos : pos + 2], "big") != n_columns:  # the day and 10 arrays
            raise FeatureError("unexpected COPY layout from PostgreSQL (a changed column?).")
        day = int.from_bytes(data[pos + 6 : pos + 14], "big", signed=True)
        pos += 14
        rows = None
        for column in (0, 1, *range(3, n_columns)):
            length = int.from_bytes(data[pos : pos + 4], "big")
            head = np.frombuffer(data[pos + 4 : pos + 24], dtype=_ARRAY_HEADER)[0]
            kind = _ARRAY_ELEMENT.get(int(head["oid"]))
            if head["ndim"] != 1 or head["nulls"] or kind is None:
                raise FeatureError("unexpected COPY array from PostgreSQL (a NULL or a new type?).")
            elements = np.frombuffer(
                data[pos + 24 : pos + 4 + length], dtype=[("len", ">i4"), ("val", kind)]
            )
            if rows is None:
                rows = np.empty((len(elements), n_columns))
                rows[:, 2] = day
            rows[:, column] = elements["val"]
            pos += 4 + length
        days.append(rows)
    return days


def _rows_generic(start: date, end: date, pk_range: tuple[int, int] | None) -> np.ndarray:
    table = connection.ops.quote_name(DailyStat._meta.db_table)
    params: list[Any] = [start.isoformat(), start.isoformat(), end.isoformat()]
    where = "date BETWEEN %s AND %s"
    if pk_range is not None:
        where += " AND advertiser_id >= %s AND advertiser_id < %s"
        params += [int(pk_range[0]), int(pk_range[1])]
    query = (
        "SELECT advertiser_id, scenario_id, CAST(julianday(date) - julianday(%s) AS INTEGER),"
        " impressions, clicks, CAST(expenditure AS REAL), CAST(gmv AS REAL), logins,"
        f" campaign_edits, bid_changes, budget_changes FROM {table} WHERE {where}"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        rows = cursor.fetchall()
    return np.array(rows, dtype=np.float64).reshape(-1, 11)


def scenarios_load() -> ScenarioTable:
    rows = list(
        Scenario.objects.order_by("pk").values_list(
            "pk", "code", "kind", "launched_on", "attributes"
        )
    )
    return ScenarioTable(
        pks=np.array([r[0] for r in rows], dtype=np.int64),
        codes=[r[1] for r in rows],
        kinds=[r[2] for r in rows],
        launched_on=np.array([r[3] for r in rows], dtype="datetime64[D]"),
        attributes=[r[4] or {} for r in rows],
    )


def cube_load(
    *,
    start: date,
    end: date,
    scenario_pks: np.ndarray,
    advertiser_pk_range: tuple[int, int] | None = None,
) -> Cube:
    """Every DailyStat row in [start, end] (optionally advertiser pk in [lo, hi)) as a cube.

    The scenario axis follows `scenario_pks` (sorted; a ScenarioTable's `pks`), so the cube and
    the scenario features line up; rows of any other scenario are left out.
    """
    if end < start:
        raise FeatureError(f"data window ends ({end}) before it starts ({start}).")
    fetch = _rows_postgres if connection.vendor == "postgresql" else _rows_generic
    rows = fetch(start, end, advertiser_pk_range)
    row_scenarios = rows[:, 1].astype(np.int64)
    s = np.minimum(np.searchsorted(scenario_pks, row_scenarios), max(len(scenario_pks) - 1, 0))
    known = scenario_pks[s] == row_scenarios if len(scenario_pks) else np.zeros(len(rows), bool)
    rows, s = rows[known], s[known]
    advertiser_pks = np.unique(rows[:, 0].astype(np.int64))
    n_days = (end - start).days + 1
    values = np.zeros((len(advertiser_pks), len(scenario_pks), n_days, len(COUNTERS)), np.float32)
    a = np.searchsorted(advertiser_pks, rows[:, 0].astype(np.int64))
    values[a, s, rows[:, 2].astype(np.int64)] = rows[:, 3:]
    return Cube(start, advertiser_pks, scenario_pks, values, complete=advertiser_pk_range is None)


def advertisers_load(pks: np.ndarray) -> AdvertiserTable:
    """Profiles of the given advertisers (pks sorted), in the same order."""
    if len(pks) == 0:
        rows: list[tuple] = []
    else:
        rows = list(
            Advertiser.objects.filter(pk__gte=int(pks[0]), pk__lte=int(pks[-1]))
            .order_by("pk")
            .values_list("pk", "registered_on", "business_scale", "main_category", "star_level")
        )
    all_pks = np.array([r[0] for r in rows], dtype=np.int64)
    take = np.searchsorted(all_pks, pks)
    return AdvertiserTable(
        pks=pks,
        registered_on=np.array([r[1] for r in rows], dtype="datetime64[D]")[take],
        business_scale=np.array([r[2] for r in rows], dtype=np.int64)[take],
        main_category=np.array([r[3] for r in rows], dtype=str)[take],
        star_level=np.array([r[4] for r in rows], dtype=np.int64)[take],
    )


def data_window() -> tuple[date, date]:
    """First and last day with any DailyStat row."""
    first = DailyStat.objects.order_by("date").values_list("date", flat=True).first()
    last = DailyStat.objects.order_by("-date").values_list("date", flat=True).first()
    if first is None or last is None:
        raise FeatureError("there are no daily stats: ingest daily_stats.csv first.")
    return first, last


# --- scenario statistics ----------------------------------------------------------------------


def _window_sums(cumulative: np.ndarray, day_idx: np.ndarray, length: int) -> np.ndarray:
    """Sums over the `length` days ending at each day index, from a cumsum along the last axis
    that has a leading zero (shape [..., D + 1])."""
    hi = day_idx + 1
    lo = np.maximum(hi - length, 0)
    return cumulative[..., hi] - cumulative[..., lo]


def _cumsum0(x: np.ndarray, dtype: Any) -> np.ndarray:
    out = np.zeros((*x.shape[:-1], x.shape[-1] + 1), dtype=dtype)
    np.cumsum(x, axis=-1, dtype=dtype, out=out[..., 1:])
    return out


def scenario_activity_from_cube(cube: Cube, day_idx: np.ndarray) -> np.ndarray:
    """[S, Q, 2]: advertisers active (spend > 0) in the 28 days to each as-of, and their spend."""
    spend = cube.values[..., CH["expenditure"]]  # [A, S, D]
    active_days = _cumsum0(spend > 0, np.int32)
    n_active = (_window_sums(active_days, day_idx, STATS_WINDOW_DAYS) > 0).sum(0)  # [S, Q]
    total = _window_sums(_cumsum0(spend.sum(0, dtype=np.float64), np.float64), day_idx, 28)
    return np.stack([n_active.astype(np.float64), total], axis=-1)


ScenarioActivity = dict[int, tuple[int, float]]  # scenario pk -> (active advertisers, spend)


def scenario_activity_query(as_of: date) -> ScenarioActivity:
    """The same statistics for one as-of date over ALL advertisers, with one aggregate query."""
    rows = (
        DailyStat.objects.filter(
            date__gt=as_of - timedelta(days=STATS_WINDOW_DAYS), date__lte=as_of, expenditure__gt=0
        )
        .values("scenario_id")
        .annotate(n=Count("advertiser_id", distinct=True), spend=Sum("expenditure"))
        .values_list("scenario_id", "n", "spend")
    )
    return {scenario_id: (n, float(spend)) for scenario_id, n, spend in rows}


def scenario_activity_from_db(
    scenario_pks: np.ndarray, as_of: date, known: ScenarioActivity | None = None
) -> np.ndarray:
    """[S, 1, 2] activity of `scenario_pks` at as_of: `known` (keys may be JSON strings) when
    given, else queried."""
    by_pk = scenario_activity_query(as_of) if known is None else known
    out = np.zeros((len(scenario_pks), 1, 2), dtype=np.float64)
    for scenario_id, (n, spend) in by_pk.items():  # one item per scenario, not per sample
        idx = np.searchsorted(scenario_pks, int(scenario_id))
        if idx < len(scenario_pks) and scenario_pks[idx] == int(scenario_id):
            out[idx, 0] = (n, spend)
    return out


def _raw_scenario_stats(
    scenarios: ScenarioTable, as_of: np.ndarray, activity: np.ndarray
) -> np.ndarray:
    """[S, Q, 3] unstandardised statistics (see STATS)."""
    n_active, spend = activity[..., 0], activity[..., 1]
    mean_daily = spend / STATS_WINDOW_DAYS / np.maximum(n_active, 1)
    age = (as_of[None, :] - scenarios.launched_on[:, None]).astype(np.int64)
    age = np.clip(age, 0, AGE_CAP_DAYS)
    return np.stack([np.log1p(n_active), np.log1p(mean_daily), np.log1p(age)], axis=-1)


def _subset(scenarios: ScenarioTable, rows: np.ndarray) -> ScenarioTable:
    return ScenarioTable(
        pks=scenarios.pks[rows],
        codes=[scenarios.codes[i] for i in rows],
        kinds=[scenarios.kinds[i] for i in rows],
        launched_on=scenarios.launched_on[rows],
        attributes=[scenarios.attributes[i] for i in rows],
    )


def _attribute_matrix(scenarios: ScenarioTable, keys: list[str]) -> np.ndarray:
    """[S, n_keys] numeric attributes, NaN where a scenario lacks one (S is small)."""
    out = np.full((len(scenarios.pks), len(keys)), np.nan)
    for i, attrs in enumerate(scenarios.attributes):
        for j, key in enumerate(keys):
            value = attrs.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[i, j] = float(value)
    return out


def scenario_features(
    spec: FeatureSpec, scenarios: ScenarioTable, as_of: np.ndarray, activity: np.ndarray
) -> np.ndarray:
    """[S, Q, NS] float32: one-hot kind, standardised attributes, standardised statistics."""
    n_s, n_q = len(scenarios.pks), len(as_of)
    onehot = np.zeros((n_s, len(spec.kinds)), dtype=np.float32)
    kind_idx = {k: i for i, k in enumerate(spec.kinds)}
    for i, kind in enumerate(scenarios.kinds):
        if kind in kind_idx:
            onehot[i, kind_idx[kind]] = 1.0
    attrs = (_attribute_matrix(scenarios, spec.attr_keys) - spec.attr_mean) / spec.attr_std
    attrs = np.clip(np.nan_to_num(attrs, nan=0.0), -Z_CLIP, Z_CLIP)  # missing = training mean
    stats = (_raw_scenario_stats(scenarios, as_of, activity) - spec.stat_mean) / spec.stat_std
    stats = np.clip(stats, -Z_CLIP, Z_CLIP)
    static = np.concatenate([onehot, attrs.astype(np.float32)], axis=1)
    return np.concatenate(
        [np.broadcast_to(static[:, None, :], (n_s, n_q, static.shape[1])), stats], axis=2
    ).astype(np.float32)


# --- samples ---------------------------------------------------------------------------------


@dataclass
class SampleIndex:
    a: np.ndarray  # [N] advertiser index into the cube
    s: np.ndarray  # [N] scenario index
    q: np.ndarray  # [N] as-of index
    day: np.ndarray  # [N] cube day index of the as-of date


@dataclass
class SampleSet:
    """Model inputs (compact dtypes; `batch_tensors` widens them) plus the keys of each sample."""

    advertiser_pks: np.ndarray  # [N] int64
    scenario_pks: np.ndarray  # [N] int64
    as_of: np.ndarray  # [N] datetime64[D]
    behaviour: np.ndarray  # [N, T, 4] uint8 bin ids
    performance: np.ndarray  # [N, T, 8] uint8 bin ids
    scenario: np.ndarray  # [N, NS] float32
    profile_cat: np.ndarray  # [N, 3] int64
    profile_num: np.ndarray  # [N, 1] float32
    targets: np.ndarray | None  # [N, 5] float32 raw next-tau-day sums, TASKS order

    def __len__(self) -> int:
        return len(self.advertiser_pks)

    def tensors(self, spec: FeatureSpec) -> dict[str, torch.Tensor]:
        """The batch contract's tensors for all samples (ints still compact; see training)."""
        out = {
            "behaviour": torch.from_numpy(self.behaviour),
            "performance": torch.from_numpy(self.performance),
            "scenario": torch.from_numpy(self.scenario),
            "profile_cat": torch.from_numpy(self.profile_cat),
            "profile_num": torch.from_numpy(self.profile_num),
        }
        if self.targets is not None:
            scales = np.asarray(spec.target_scales, dtype=np.float32)
            out["target"] = torch.from_numpy((self.targets / scales).astype(np.float32))
        return out


def _sample_index(
    cube: Cube,
    scenarios: ScenarioTable,
    advertisers: AdvertiserTable,
    as_of: np.ndarray,
    *,
    window_days: int,
    eligibility: Eligibility,
) -> SampleIndex:
    if not np.array_equal(cube.scenario_pks, scenarios.pks):
        raise FeatureError("the cube and the scenario table list different scenarios.")
    if not np.array_equal(cube.advertiser_pks, advertisers.pks):
        raise FeatureError("the cube and the advertiser table list different advertisers.")
    day = cube.day_index(as_of)  # [Q]
    if len(day) and day.min() - window_days + 1 < 0:
        raise FeatureError(
            f"as-of {as_of[np.argmin(day)]} needs {window_days} days of history from"
            f" {cube.start}; move the as-of date later or the data window earlier."
        )
    any_activity = (cube.values > 0).any(axis=-1)  # [A, S, D]
    active = _window_sums(_cumsum0(any_activity, np.int32), day, window_days) > 0  # [A, S, Q]
    launched = scenarios.launched_on[:, None] <= as_of[None, :]  # [S, Q]
    registered = advertisers.registered_on[:, None] <= as_of[None, :]  # [A, Q]
    mask = active & launched[None] & registered[:, None, :]
    if eligibility == "predict":
        # New scenarios (launched inside the input window) for advertisers active anywhere.
        window_start = as_of - np.timedelta64(window_days - 1, "D")
        new = launched & (scenarios.launched_on[:, None] >= window_start[None, :])  # [S, Q]
        on_platform = active.any(axis=1) & registered  # [A, Q]
        mask |= on_platform[:, None, :] & new[None]
    a, s, q = np.nonzero(mask)
    return SampleIndex(a, s, q, day[q])


def _gather(cube: Cube, idx: SampleIndex, offsets: np.ndarray) -> np.ndarray:
    """[N, len(offsets), 8] counters at as-of + offsets for every sample."""
    days = idx.day[:, None] + offsets[None, :]
    return cube.values[idx.a[:, None], idx.s[:, None], days]


def _targets(cube: Cube, idx: SampleIndex, horizon_days: int) -> np.ndarray:
    if len(idx.day) and idx.day.max() + horizon_days >= cube.n_days:
        raise FeatureError(
            f"targets need {horizon_days} days after each as-of date; the data ends at day"
            f" {cube.n_days - 1} of the window. Use an earlier as-of date."
        )
    future = _gather(cube, idx, np.arange(1, horizon_days + 1))  # [N, tau, 8]
    sums = future.sum(axis=1, dtype=np.float64)  # [N, 8]
    active_days = (future[..., CH["expenditure"]] > 0).sum(axis=1)
    columns = {name: sums[:, CH[name]] for name in PERFORMANCE} | {"active_days": active_days}
    return np.stack([columns[t] for t in TASKS], axis=1).astype(np.float32)


def _digitize(x: np.ndarray, edges: list[list[float]]) -> np.ndarray:
    """Bin ids per channel (last axis): 0 for zero, 1..n_bins for positive values (log1p
    quantile bins). Only the positive entries are looked up: daily activity is sparse."""
    out = np.zeros(x.shape, dtype=np.uint8)
    for c, channel_edges in enumerate(edges):  # a handful of channels, not samples
        values = x[..., c]
        positive = values > 0
        ids = 1 + np.searchsorted(
            np.asarray(channel_edges), np.log1p(values[positive]), side="right"
        )
        out[..., c][positive] = ids
    return out


def _quantile_edges(values: np.ndarray, n_bins: int) -> list[float]:
    positive = np.log1p(values[values > 0].astype(np.float64))
    if positive.size == 0:
        return []
    edges = np.quantile(positive, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return [float(e) for e in np.unique(edges)]


def _totals(cube: Cube) -> np.ndarray:
    """[A, D, 4] performance summed over all scenarios of each advertiser."""
    return cube.values[..., : len(PERFORMANCE)].sum(axis=1)


def _standardise_fit(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Column means and standard deviations ignoring NaN; a constant column gets std 1."""
    if x.shape[0] == 0:
        return [0.0] * x.shape[1], [1.0] * x.shape[1]
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(x, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0)
    std = np.where(std > 1e-6, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


def _category_ids(vocabulary: list[str], values: np.ndarray) -> np.ndarray:
    """1-based index of each value in the sorted training vocabulary, 0 when unseen."""
    vocab = np.asarray(vocabulary, dtype=str)
    values = values.astype(str)
    if vocab.size == 0:
        return np.zeros(len(values), dtype=np.int64)
    pos = np.minimum(np.searchsorted(vocab, values), vocab.size - 1)
    return np.where(vocab[pos] == values, pos + 1, 0).astype(np.int64)


def _tenure(advertisers: AdvertiserTable, idx: SampleIndex, as_of: np.ndarray) -> np.ndarray:
    days = (as_of[idx.q] - advertisers.registered_on[idx.a]).astype(np.int64)
    return np.log1p(np.maximum(days, 0)).astype(np.float64)


def spec_fit(
    cube: Cube,
    scenarios: ScenarioTable,
    advertisers: AdvertiserTable,
    train_as_of: np.ndarray,
    activity: np.ndarray,
    *,
    window_days: int,
    horizon_days: int,
    n_bins: int,
) -> FeatureSpec:
    """Fit bins, vocabularies, standardisation and target scales on the training split only."""
    if not 1 <= n_bins <= 255:
        raise FeatureError(f"n_bins={n_bins} must be within 1..255 (bin ids are stored as bytes).")
    last_input_day = int(cube.day_index(train_as_of).max())
    seen = cube.values[:, :, : last_input_day + 1]  # the training window, no later day
    totals = _totals(cube)[:, : last_input_day + 1]
    behaviour_edges = [_quantile_edges(seen[..., CH[c]], n_bins) for c in BEHAVIOUR]
    performance_edges = [_quantile_edges(seen[..., CH[c]], n_bins) for c in PERFORMANCE] + [
        _quantile_edges(totals[..., i], n_bins) for i in range(len(PERFORMANCE))
    ]
    idx = _sample_index(
        cube, scenarios, advertisers, train_as_of, window_days=window_days, eligibility="active"
    )
    if len(idx.a) == 0:
        raise FeatureError("the training split has no samples: no pair was active in any window.")
    # Kinds and attributes as the training scenarios know them: a kind first seen later gets
    # an all-zero one-hot (unknown), an attribute first seen later is not an input.
    trained = _subset(scenarios, np.unique(idx.s))
    kinds = [k for k in KINDS if k in set(trained.kinds)]
    attr_keys = sorted({k for attrs in trained.attributes for k in attrs})
    attr_matrix = _attribute_matrix(trained, attr_keys)
    attr_keys = [k for j, k in enumerate(attr_keys) if not np.isnan(attr_matrix[:, j]).all()]
    attr_mean, attr_std = _standardise_fit(_attribute_matrix(trained, attr_keys))
    stats = _raw_scenario_stats(scenarios, train_as_of, activity)[idx.s, idx.q]  # [N, 3]
    stat_mean, stat_std = _standardise_fit(stats)
    tenure_mean, tenure_std = _standardise_fit(_tenure(advertisers, idx, train_as_of)[:, None])
    targets = _targets(cube, idx, horizon_days)
    scales = np.maximum(targets.mean(axis=0, dtype=np.float64), 1e-3)
    return FeatureSpec(
        window_days=window_days,
        horizon_days=horizon_days,
        n_bins=n_bins,
        behaviour_edges=behaviour_edges,
        performance_edges=performance_edges,
        kinds=kinds,
        attr_keys=attr_keys,
        attr_mean=attr_mean,
        attr_std=attr_std,
        stat_mean=stat_mean,
        stat_std=stat_std,
        categories=np.unique(advertisers.main_category[idx.a]).tolist(),
        tenure_mean=tenure_mean[0],
        tenure_std=tenure_std[0],
        target_scales=[float(v) for v in scales],
    )


def binned_windows(
    cube: Cube,
    a: np.ndarray,
    s: np.ndarray,
    days: np.ndarray,
    spec: FeatureSpec,
    *,
    gather_first: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Bin ids of the windows cube[a, s, days]: behaviour [N, T, 4] and performance [N, T, 8]
    (the pair's 4 counters, then the advertiser's totals over all scenarios).

    Binning is per value, so the order is free: bin every cell of the cube once and gather when
    windows overlap (training: consecutive as-of dates share most days), gather the windows
    first and bin only those when they cover less than the cube (scoring one date).
    """
    n_perf = len(PERFORMANCE)
    behaviour_channels = [CH[c] for c in BEHAVIOUR]
    perf_edges, total_edges = spec.performance_edges[:n_perf], spec.performance_edges[n_perf:]
    if gather_first:
        windows = cube.values[a, s, days]  # [N, T, 8]
        behaviour = _digitize(windows[..., behaviour_channels], spec.behaviour_edges)
        own = _digitize(windows[..., :n_perf], perf_edges)
        totals = _digitize(_totals(cube)[a, days], total_edges)  # [N, T, 4]
    else:
        behaviour = _digitize(cube.values[..., behaviour_channels], spec.behaviour_edges)[
            a, s, days
        ]
        own = _digitize(cube.values[..., :n_perf], perf_edges)[a, s, days]
        totals = _digitize(_totals(cube), total_edges)[a, days]  # [A, D, 4] -> [N, T, 4]
    return behaviour, np.concatenate([own, totals], axis=-1)


def samples_build(
    cube: Cube,
    scenarios: ScenarioTable,
    advertisers: AdvertiserTable,
    as_of: np.ndarray,
    activity: np.ndarray,
    spec: FeatureSpec,
    *,
    eligibility: Eligibility = "active",
    with_targets: bool = True,
) -> SampleSet:
    """Inputs (and targets) of every eligible sample at the given as-of dates."""
    T = spec.window_days
    idx = _sample_index(cube, scenarios, advertisers, as_of, window_days=T, eligibility=eligibility)
    days = idx.day[:, None] + np.arange(-T + 1, 1)[None, :]  # [N, T]
    few_windows = days.size < cube.values.shape[0] * cube.values.shape[1] * cube.values.shape[2]
    behaviour, performance = binned_windows(
        cube, idx.a[:, None], idx.s[:, None], days, spec, gather_first=few_windows
    )
    scen = scenario_features(spec, scenarios, as_of, activity)[idx.s, idx.q]
    categories = _category_ids(spec.categories, advertisers.main_category)
    profile_cat = np.stack(
        [
            np.clip(advertisers.business_scale[idx.a], 0, BUSINESS_SCALES),
            categories[idx.a],
            np.clip(advertisers.star_level[idx.a], 0, STAR_LEVELS),
        ],
        axis=1,
    ).astype(np.int64)
    tenure = (_tenure(advertisers, idx, as_of) - spec.tenure_mean) / spec.tenure_std
    tenure = np.clip(tenure, -Z_CLIP, Z_CLIP)
    return SampleSet(
        advertiser_pks=cube.advertiser_pks[idx.a],
        scenario_pks=cube.scenario_pks[idx.s],
        as_of=as_of[idx.q],
        behaviour=behaviour,
        performance=performance,
        scenario=scen,
        profile_cat=profile_cat,
        profile_num=tenure[:, None].astype(np.float32),
        targets=_targets(cube, idx, spec.horizon_days) if with_targets else None,
    )


# --- time split ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    train: list[date]
    valid: list[date]
    test: list[date]

    def to_dict(self) -> dict[str, list[str]]:
        return {
            name: [d.isoformat() for d in getattr(self, name)]
            for name in ("train", "valid", "test")
        }


def as_of_dates(
    *, start: date, end: date, window_days: int, horizon_days: int, stride: int
) -> list[date]:
    """Every `stride`-th day (counted back from the last possible one) that has a full input
    window (and the 28 days the scenario statistics need) and a full target window."""
    if stride < 1:
        raise FeatureError(f"stride={stride} must be at least 1 day.")
    first = start + timedelta(days=max(window_days, STATS_WINDOW_DAYS) - 1)
    last = end - timedelta(days=horizon_days)
    if last < first:
        return []
    n = (last - first).days // stride
    return [last - timedelta(days=stride * k) for k in range(n, -1, -1)]


def split_dates(
    dates: list[date], *, window_days: int, horizon_days: int, gap_days: int = 7
) -> Split:
    """Split as-of dates 8:1:1 in time order, then drop the trailing training dates whose target
    window ends less than `gap_days` before the first validation input day (so also before the
    first test input day): no training label overlaps what validation or test look at.

    Validation and test are not separated by a gap: validation only picks the stopping epoch.
    """
    dates = sorted(dates)
    n = len(dates)
    n_test, n_valid = max(1, round(n * 0.1)), max(1, round(n * 0.1))
    train, valid, test = (
        dates[: n - n_test - n_valid],
        dates[n - n_test - n_valid : n - n_test],
        dates[n - n_test :],
    )
    if valid:
        first_input = valid[0] - timedelta(days=window_days - 1)
        train = [d for d in train if d + timedelta(days=horizon_days + gap_days) <= first_input]
    if not train or not valid or not test:
        need = max(window_days, STATS_WINDOW_DAYS) + 2 * horizon_days + gap_days + window_days
        raise FeatureError(
            f"{n} as-of dates leave an empty split after the {gap_days}-day gap (train"
            f" {len(train)}, valid {len(valid)}, test {len(test)}). Widen the data window well"
            f" beyond {need} days,"
            " lower --stride or shorten --window."
        )
    return Split(train, valid, test)


# --- datasets --------------------------------------------------------------------------------


@dataclass
class Dataset:
    spec: FeatureSpec
    split: Split
    train: SampleSet
    valid: SampleSet
    test: SampleSet
    scenario_codes: dict[int, str]
    start: date
    end: date

    def scenario_labels(self, pks: np.ndarray) -> np.ndarray:
        return scenario_labels(self.scenario_codes, pks)


def scenario_labels(codes: dict[int, str], pks: np.ndarray) -> np.ndarray:
    """Scenario codes of an array of scenario pks, given {pk: code}."""
    keys = np.array(sorted(codes), dtype=np.int64)
    labels = np.array([codes[int(k)] for k in keys])  # one per scenario
    return labels[np.searchsorted(keys, pks)]


def _as_array(dates: list[date]) -> np.ndarray:
    return np.array(dates, dtype="datetime64[D]")


def dataset_build(
    *,
    start: date | None = None,
    end: date | None = None,
    window_days: int = 40,
    horizon_days: int = 7,
    stride: int = 7,
    n_bins: int = 32,
    gap_days: int = 7,
    advertiser_pk_range: tuple[int, int] | None = None,
) -> Dataset:
    """Training, validation and test samples over a data window, with a spec fitted on train.

    `advertiser_pk_range` ([lo, hi)) trains on a sample of the advertisers: their samples only,
    while the scenario statistics still describe the whole population (queried per as-of date),
    as they do when the model scores."""
    first, last = data_window()
    start, end = start or first, end or last
    dates = as_of_dates(
        start=start, end=end, window_days=window_days, horizon_days=horizon_days, stride=stride
    )
    split = split_dates(
        dates, window_days=window_days, horizon_days=horizon_days, gap_days=gap_days
    )
    scenarios = scenarios_load()
    cube = cube_load(
        start=start, end=end, scenario_pks=scenarios.pks, advertiser_pk_range=advertiser_pk_range
    )
    advertisers = advertisers_load(cube.advertiser_pks)
    parts = {name: _as_array(getattr(split, name)) for name in ("train", "valid", "test")}
    activity = {n: _scenario_activity(cube, scenarios, d) for n, d in parts.items()}
    spec = spec_fit(
        cube,
        scenarios,
        advertisers,
        parts["train"],
        activity["train"],
        window_days=window_days,
        horizon_days=horizon_days,
        n_bins=n_bins,
    )
    sets = {
        name: samples_build(cube, scenarios, advertisers, parts[name], activity[name], spec)
        for name in parts
    }
    return Dataset(
        spec=spec,
        split=split,
        scenario_codes=dict(zip(scenarios.pks.tolist(), scenarios.codes, strict=True)),
        start=start,
        end=end,
        **sets,
    )


def _scenario_activity(cube: Cube, scenarios: ScenarioTable, as_of: np.ndarray) -> np.ndarray:
    """[S, Q, 2] population statistics: from the cube when it holds every advertiser, else one
    aggregate query per as-of date."""
    if cube.complete:
        return scenario_activity_from_cube(cube, cube.day_index(as_of))
    per_date = [scenario_activity_from_db(scenarios.pks, d.item()) for d in as_of]
    return np.concatenate(per_date, axis=1) if per_date else np.zeros((len(scenarios.pks), 0, 2))


def samples_at(
    *,
    spec: FeatureSpec,
    as_of: date,
    advertiser_pk_range: tuple[int, int] | None = None,
    with_targets: bool = False,
    scenario_activity: ScenarioActivity | None = None,
) -> SampleSet:
    """Samples of one as-of date under a fitted spec: prediction-eligible pairs without targets,
    or (with_targets) the active pairs with their realised targets, for evaluating a version.

    For a range of advertisers, the scenario statistics need every advertiser's activity: pass
    `scenario_activity` (from `scenario_activity_query`) to save the query per range."""
    history = max(spec.window_days, STATS_WINDOW_DAYS)
    start = as_of - timedelta(days=history - 1)
    end = as_of + timedelta(days=spec.horizon_days if with_targets else 0)
    scenarios = scenarios_load()
    cube = cube_load(
        start=start, end=end, scenario_pks=scenarios.pks, advertiser_pk_range=advertiser_pk_range
    )
    as_of_arr = _as_array([as_of])
    if cube.complete:
        activity = scenario_activity_from_cube(cube, cube.day_index(as_of_arr))
    else:
        activity = scenario_activity_from_db(scenarios.pks, as_of, scenario_activity)
    return samples_build(
        cube,
        scenarios,
        advertisers_load(cube.advertiser_pks),
        as_of_arr,
        activity,
        spec,
        eligibility="active" if with_targets else "predict",
        with_targets=with_targets,
    )
