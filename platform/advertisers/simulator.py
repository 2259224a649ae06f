"""A synthetic advertising world that writes the three contract files (DESIGN.md section 3).

`simulate(advertisers=N, days=D, seed=S)` builds a population of advertisers with latent traits
and runs a day-by-day latent process over every (advertiser, scenario) pair at once (numpy,
vectorised; the only Python loop is over days). `World.write(dir)` writes scenarios.csv,
advertisers.csv and daily_stats.csv; `World.save(path)` / `World.load(path)` keep the whole
latent state in one .npz so that `World.advance(days=..., incentives=[...])` continues the same
process later and shows how advertisers react to incentive tasks. `simulate(..., through=day)`
stops the same world on an earlier day, and `World.futures(days=..., replicas=R)` draws R other
continuations from its state: the spread no model can foresee (`predictor.oracle`). Each
simulated day draws from its own stream `SeedSequence(seed, spawn_key=(stream, day))`, so a
seed always gives the same files (with the same numpy version), and a saved and loaded world
continues exactly as one kept in memory. 10,000 advertisers x 180 days (1.3 million rows)
simulate and write in about 5 seconds on two cores.

World at a glance
-----------------
Share = share of advertiser-days with positive expenditure, 10,000 advertisers x 180 days
ending 2026-10-31, seed 1 (seed 2 gives the same to within 0.2 points).

    code              kind     launched          cpc   ctr    cvr    traffic weekend  share
    sponsored_search  search   8 years earlier   0.80  0.045  0.030  1.00    -0.10    69.4%
    news_feed         feed     4 years earlier   0.45  0.012  0.015  0.10    +0.10    13.6%
    display           display  6 years earlier   0.30  0.004  0.008  0.09     0.00    12.1%
    star_shop         shop     3 years earlier   1.20  0.060  0.050  0.03    +0.20     3.0%
    live_stream       live     end - 59 days     0.60  0.020  0.040  0.06    +0.30     1.9%

One major scenario, two medium, one minor and one new (rows only from its launch, 60 days
before the end; it ramps up as advertisers adopt it). scenarios.csv carries these numbers as
attr_avg_cpc, attr_ctr, attr_cvr, attr_traffic_index and attr_weekend_lift, and they are what
the world runs on, so a model that reads scenario attributes can carry what it learnt over to
the minor and the new scenario:

    counter / effect         driven by
    adoption of a scenario   traffic (logit + 1.5 ln traffic), scale, engagement, category x kind
    active on a day          traffic (logit + 1.1 ln traffic), engagement 2 days earlier,
                             affinity, weekend lift, scenario trend
    expenditure              budget scale x traffic^0.3 x exp(0.5 affinity) x budget factors
    clicks                   expenditure / (attr_avg_cpc x the advertiser's cpc multiplier)
    impressions              clicks / (attr_ctr x the advertiser's ctr multiplier)
    gmv                      clicks x attr_cvr x cvr multiplier x category order value
    weekly seasonality       attr_weekend_lift: + lift Sat/Sun, - 2/5 lift Mon-Fri
    logins, edits, bids,     engagement today (so behaviour leads performance by two days);
    budget changes           edits peak on Mondays, bids scale with the scenario's bid intensity,
                             budget changes spike when engagement moves

Advertisers
-----------
business_scale 1-5 (35/28/20/12/5%), star_level 0-5 (rises with scale), main_category (8, each
with an order value, a cvr multiplier and an affinity to every scenario kind), and latent:
log budget scale 2.7 + 0.55 (business_scale - 1) + N(0, 0.6); long-run engagement
mu = 0.15 (scale - 3) + 0.1 (star - 2) + N(0, 0.9); yearly trends of engagement (N(0, 0.5)) and
budget (N(0, 0.4)); an orientation o ~ N(0, 1) (brand +, performance -); a return rate (0 for
half of them, U(1%, 5%) a day for the rest). About 15% register during the period and have no
row before registered_on. Each (advertiser, scenario) pair has an affinity (category x kind
+ orientation + noise), cpc/ctr/cvr multipliers (lognormal, sd 0.3) and an adoption day.

Daily latent process (day t; 60 burn-in days run before the first written day)
---------------------------------------------------------------------------------
- engagement e_t = mu + trend t/365 + x_t, with AR(1) x_t = 0.95 x_{t-1} + 0.3 eps_t;
- churn: an alive advertiser goes dormant with hazard sigmoid(-6.4 - 1.2 e_t) a day, high when
  engagement is low; a dormant one comes back at its return rate with fresh engagement;
- adoption: from max(registered_on, launched_on) + Exp(10 days) (Exp(20 days) for the new
  scenario) for pairs drawn with P = sigmoid(2.3 + 1.5 ln traffic + 0.35 (scale - 3) + 0.5 mu +
  affinity + N(0, 0.6)); at 180 days: search 85%, feed 25%, display 23%, shop 8%, live 16%;
- activity: an alive advertiser is active in an adopted scenario with probability
  sigmoid(1.2 + 1.1 ln traffic + 1.6 e_{t-2} + affinity + weekly + scenario trend t/365);
- spend on an active day: exp(log scale + 0.45 e_{t-2} + budget trend t/365 + 0.5 affinity
  + 0.3 ln traffic + weekly + L_c c_t + L_p p_t + u_t), where c is a common "performance push"
  factor (L_c = 1 for search and feed, 0.3 display, 0.5 live), p a display/shop substitution
  factor (L_p = +1 display, -1 shop: money moved between them) and u idiosyncratic, all AR(1);
- counts, all overdispersed (negative binomial as gamma-Poisson) and consistent:
  clicks = 1 + NB(spend / cpc - 1); expenditure = clicks x the day's paid cpc (lognormal around
  cpc), so an active row always has clicks >= 1; impressions = clicks + NB(clicks (1/ctr - 1));
  orders = NB(clicks x cvr); gmv = orders x order value x lognormal noise. Money is in whole
  cents. A row is written when the pair has positive expenditure or any behaviour count; no
  row means no activity.
Measured at 10,000 x 180: 20% of advertisers active in the first 30 days have no activity in
the last 28; 23% have a gap of 28+ days and 40% of those come back; 95.5% of advertisers active
in a week are active the next, 6.6% of the inactive ones are.

Cross-scenario correlations differ by task, as the paper's Table 1 says: the common factor
moves search and feed together; brand-oriented advertisers (o > 0) like display and buy its
clicks cheap (orientation loads +0.7 on display's affinity, -0.4 on its cpc), and the reverse
for the shop, while the substitution factor moves money between the two. Pearson correlation
of 180-day totals, advertisers active in both (10,000 x 180, seed 1):

    pair                   expenditure  clicks
    search / news_feed        0.87       0.80
    search / display          0.84       0.61
    news_feed / display       0.78       0.60
    display / star_shop       0.44       0.08

Incentive response
------------------
`World.advance(days=..., incentives=[Incentive(advertiser_id, scenario, kind, target, reward,
valid_days), ...])` applies the tasks from the first advanced day. The advertiser takes a task
up (changes its behaviour) with probability

    p = reach x sigmoid(-3.0 + 4.0 risk + 0.8 ln((reward / cost) / 0.1) + 0.8 eps),  eps ~ N(0, 1)

- risk = 1 - P(active at least once in the task's scenario within valid_days without the
  task), from the current latent state (`World.active_probability(days=...)`); an advertiser
  that has not adopted the scenario has risk 1;
- cost = money-equivalent effort: spend_target -> target; click_target -> target x its cpc
  there; active_days_target -> target x half its usual daily spend there; login_days ->
  target x 1.0;
- reach = 1 while alive, 0.4 while dormant (many never open the message), 0 if the
  advertiser registers only after the window;
- eps is per (advertiser, task) noise, so equal inputs do not give equal responses.
A safe advertiser (risk 0) offered a 10% rebate (reward / cost = 0.1) takes it up with
p = 0.05, one that would surely go inactive (risk 1, alive) with p = 0.73.
`incentive_response_probability` is this formula as a pure function. For `valid_days` days a
responder is revived if dormant, adopts the scenario if new to it, gains +0.3 engagement (which
then decays with the AR(1)), and in the task's scenario (its favourite scenario, preferring
ones it uses, when the task names none), with g ~ U(0.8, 1.3) per task:
- spend_target / click_target: active with probability >= 0.85 and spends at least
  target / (0.85 valid_days) x g (clicks converted at its cpc) on an active day;
- active_days_target: active with probability >= target / valid_days x g;
- login_days: logs in with probability >= target / valid_days x g, active with p >= 0.3.
So some overshoot and some fall short. Non-responders are unchanged: churn and activity draws
come first each day with a fixed shape, so an advertiser without a response keeps the same
active/inactive path whatever tasks others get (only its count noise differs). Measured on
3,000 x 90 (seed 3) with "spend 300 in sponsored search in 7 days, earn 30" for everyone:
take-up 7% at risk < 0.05 and 42% at risk >= 0.95; responders' active days in the window
1.2 -> 6.0, and 65% of them reach the target.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

DEFAULT_END_DATE = date(2026, 10, 31)
NEW_SCENARIO_AGE_DAYS = 60
BURN_IN_DAYS = 60  # latent process runs this long before the first written day (stationarity)
NEVER = 2**30  # "day index" of something that never happens
FORMAT_VERSION = 1
MIN_DAYS = 14
MAX_DAYS = 3650
MAX_ADVERTISERS = 5_000_000

KINDS = ("search", "display", "shop", "feed", "brand", "live", "other")
INCENTIVE_KINDS = ("spend_target", "click_target", "active_days_target", "login_days")


class SimulationError(ValueError):
    """Bad arguments for the simulator; the message names the argument and the fix."""


@dataclass(frozen=True)
class ScenarioSpec:
    code: str
    name: str
    kind: str
    launched_years_before_start: float | None  # None: the new scenario, launched near the end
    avg_cpc: float
    ctr: float
    cvr: float
    traffic_index: float
    weekend_lift: float
    trend_per_year: float  # drift of the activity logit (market growth or decline)
    bid_intensity: float  # bid changes per active day, relative to search


SCENARIOS: tuple[ScenarioSpec, ...] = (
    ScenarioSpec("sponsored_search", "Sponsored Search", "search", 8, 0.80, 0.045, 0.030, 1.00,
                 -0.10, -0.10, 1.0),
    ScenarioSpec("news_feed", "News Feed Ads", "feed", 4, 0.45, 0.012, 0.015, 0.10,
                 0.10, 0.25, 0.6),
    ScenarioSpec("display", "Display Ads", "display", 6, 0.30, 0.004, 0.008, 0.09,
                 0.00, 0.00, 0.5),
    ScenarioSpec("star_shop", "Star Shop", "shop", 3, 1.20, 0.060, 0.050, 0.03,
                 0.20, 0.10, 0.8),
    ScenarioSpec("live_stream", "Live Stream Ads", "live", None, 0.60, 0.020, 0.040, 0.06,
                 0.30, 0.50, 0.4),
)  # fmt: skip
ATTRIBUTES = ("avg_cpc", "ctr", "cvr", "traffic_index", "weekend_lift")

CATEGORIES = ("apparel", "electronics", "food", "beauty", "home", "sports", "toys", "automotive")
CATEGORY_WEIGHTS = np.array([0.22, 0.14, 0.14, 0.12, 0.12, 0.10, 0.08, 0.08])
CATEGORY_ORDER_VALUE = np.array([60.0, 350.0, 30.0, 80.0, 150.0, 120.0, 70.0, 400.0])
CATEGORY_CVR = np.array([1.2, 0.6, 1.5, 1.1, 0.9, 1.0, 1.1, 0.5])
# Log-affinity of each category (rows) for each scenario kind (columns, in KINDS order).
CATEGORY_KIND_AFFINITY = np.array([
    # search display shop  feed  brand live  other
    [0.0,   -0.2,   0.3,  0.5,  0.2,  0.8,  0.0],   # apparel
    [0.4,    0.4,  -0.3, -0.2,  0.3, -0.3,  0.0],   # electronics
    [-0.1,  -0.4,   0.6,  0.3, -0.3,  0.5,  0.0],   # food
    [0.0,    0.0,   0.4,  0.6,  0.3,  0.7,  0.0],   # beauty
    [0.2,    0.2,   0.0, -0.1,  0.0, -0.2,  0.0],   # home
    [0.1,    0.1,   0.0,  0.2,  0.1,  0.2,  0.0],   # sports
    [0.0,    0.3,   0.2,  0.0, -0.1,  0.1,  0.0],   # toys
    [0.5,    0.5,  -0.6, -0.4,  0.4, -0.6,  0.0],   # automotive
], dtype=np.float32)  # fmt: skip
# How each kind loads on orientation (brand +, performance -) in affinity and in cpc, and on the
# two budget factors (common performance push, display/shop substitution).
KIND_ORIENTATION_AFFINITY = {"display": 0.7, "shop": -0.7, "brand": 0.5}
KIND_ORIENTATION_CPC = {"display": -0.4, "shop": 0.4}
KIND_COMMON_LOADING = {"search": 1.0, "feed": 1.0, "display": 0.3, "live": 0.5, "brand": 0.3}
KIND_POOL_LOADING = {"display": 1.0, "shop": -1.0}

# Latent process constants (see the module docstring for the formulas they enter).
ENGAGEMENT_PHI, ENGAGEMENT_SD = 0.95, 0.3
ACTIVITY_LAG = 2
HAZARD_BASE, HAZARD_ENGAGEMENT = -6.4, 1.2
RETURNER_SHARE, RETURN_RATE_RANGE = 0.5, (0.01, 0.05)
ADOPT_BASE, ADOPT_TRAFFIC, ADOPT_DELAY_DAYS, NEW_ADOPT_DELAY_DAYS = 2.3, 1.5, 10.0, 20.0
ACT_BASE, ACT_TRAFFIC, ACT_ENGAGEMENT = 1.2, 1.1, 1.6
BUDGET_BASE, BUDGET_PER_SCALE, BUDGET_ENGAGEMENT = 2.7, 0.55, 0.45
SPEND_AFFINITY, SPEND_TRAFFIC = 0.5, 0.3
FACTOR_PHI, COMMON_SD, POOL_SD, IDIO_PHI, IDIO_SD = 0.9, 0.4, 0.6, 0.8, 0.25
CLICK_SHAPE, IMPRESSION_SHAPE, ORDER_SHAPE, BEHAVIOUR_SHAPE = 3.0, 5.0, 1.5, 2.0
PAID_CPC_SD, ORDER_VALUE_SD = 0.12, 0.35
LOGIN_RATE, LOGIN_IDLE = 0.9, 0.25
EDIT_RATE, MONDAY_EDIT_BOOST = 0.15, 1.8
BID_RATE = 0.35
BUDGET_CHANGE_BASE, BUDGET_CHANGE_SHOCK = 0.04, 1.5

# Incentive response (module docstring, "Incentive response").
RESPONSE_INTERCEPT, RESPONSE_RISK, RESPONSE_VALUE = -3.0, 4.0, 0.8
RESPONSE_VALUE_REF, RESPONSE_NOISE_SD = 0.1, 0.8
RESPONSE_DORMANT_REACH = 0.4  # a dormant advertiser often never opens the message
RESPONSE_ENGAGEMENT_BUMP = 0.3
RESPONSE_TARGET_ACTIVITY = 0.85
RESPONSE_LOGIN_ACTIVITY = 0.3
RESPONSE_EFFORT_RANGE = (0.8, 1.3)
ACTIVE_DAY_COST_SHARE, LOGIN_DAY_COST = 0.5, 1.0

STREAM_INIT, STREAM_LATENT, STREAM_COUNTS, STREAM_INCENTIVE = 0, 1, 2, 3
FUTURE_COUNTERS = ("impressions", "clicks", "expenditure", "gmv", "active_days")
DAY_KEY_OFFSET = 1_000_000  # spawn keys must be non-negative; burn-in days are negative

# daily_stats.csv as written; money is decimal with 2 places (cents exactly).
STATS_SCHEMA = pa.schema(
    [
        ("advertiser_id", pa.string()),
        ("scenario", pa.string()),
        ("date", pa.date32()),
        ("impressions", pa.int64()),
        ("clicks", pa.int64()),
        ("expenditure", pa.decimal128(14, 2)),
        ("gmv", pa.decimal128(16, 2)),
        ("logins", pa.int64()),
        ("campaign_edits", pa.int64()),
        ("bid_changes", pa.int64()),
        ("budget_changes", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Incentive:
    """A task handed to one advertiser: reach `target` within `valid_days` to earn `reward`.

    kind: spend_target (money), click_target (clicks), active_days_target (days with spend) or
    login_days (days with a login). scenario None means "any scenario": the response then goes to
    the advertiser's highest-affinity scenario.
    """

    advertiser_id: str
    scenario: str | None
    kind: str
    target: float
    reward: float
    valid_days: int


@dataclass(frozen=True)
class IncentiveBatch:
    """Many incentives as columns, one entry per task: what the world computes on. Callers with
    arrays at hand (the oracle scores N candidates x K offers) build it without a Python object
    per task; `of` converts a list of `Incentive`. scenario "" means "any scenario"."""

    advertiser_id: np.ndarray  # [n] str
    scenario: np.ndarray  # [n] str
    kind: np.ndarray  # [n] str
    target: np.ndarray  # [n] float
    reward: np.ndarray  # [n] float
    valid_days: np.ndarray  # [n] int

    @classmethod
    def of(cls, incentives: Sequence[Incentive]) -> IncentiveBatch:
        return cls(
            advertiser_id=np.array([i.advertiser_id for i in incentives], dtype=str),
            scenario=np.array([i.scenario or "" for i in incentives], dtype=str),
            kind=np.array([i.kind for i in incentives], dtype=str),
            target=np.array([i.target for i in incentives], dtype=np.float64),
            reward=np.array([i.reward for i in incentives], dtype=np.float64),
            valid_days=np.array([i.valid_days for i in incentives], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.target)


Incentives = Sequence[Incentive] | IncentiveBatch


@dataclass(frozen=True)
class AdvanceResult:
    """What `World.advance` produced: the new daily_stats rows and who responded to a task."""

    daily_stats: pa.Table
    start_date: date
    end_date: date
    path: Path | None
    responded: np.ndarray  # bool, one per incentive, in the order given
    response_probability: np.ndarray  # float, one per incentive


def incentive_response_probability(
    *,
    risk: np.ndarray | float,
    reward: np.ndarray | float,
    cost: np.ndarray | float,
    noise: np.ndarray | float | None = None,
    reach: np.ndarray | float = 1.0,
) -> np.ndarray:
    """p = reach x sigmoid(-3 + 4 risk + 0.8 ln((reward / cost) / 0.1) + 0.8 noise), element-wise.

    risk in [0, 1] (clipped), reward and cost in money (cost floored at 0.01, a zero reward
    gives p ~ 0), noise standard normal (None: the noise-free probability), reach the chance the
    advertiser sees the task at all (1 while alive, 0.4 while dormant in `World.advance`).
    """
    risk_arr = np.clip(np.asarray(risk, dtype=np.float64), 0.0, 1.0)
    value = np.asarray(reward, dtype=np.float64) / np.maximum(np.asarray(cost, np.float64), 0.01)
    z = (
        RESPONSE_INTERCEPT
        + RESPONSE_RISK * risk_arr
        + RESPONSE_VALUE * np.log(np.maximum(value, 1e-6) / RESPONSE_VALUE_REF)
    )
    if noise is not None:
        z = z + RESPONSE_NOISE_SD * np.asarray(noise, dtype=np.float64)
    return np.clip(np.asarray(reach, dtype=np.float64), 0.0, 1.0) / (1.0 + np.exp(-z))


@dataclass
class _Latent:
    """Every array the process needs to continue; saved as is by `World.save`."""

    # per advertiser, fixed
    registered_day: np.ndarray  # int32, day index (0 = first written day)
    business_scale: np.ndarray  # int8 1-5
    star_level: np.ndarray  # int8 0-5
    category: np.ndarray  # int8 index into CATEGORIES
    log_scale: np.ndarray  # float32
    mu: np.ndarray  # float32 long-run engagement
    engagement_trend: np.ndarray  # float32 per year
    budget_trend: np.ndarray  # float32 per year
    orientation: np.ndarray  # float32 brand (+) vs performance (-)
    login_base: np.ndarray  # float32
    return_rate: np.ndarray  # float32 per day while dormant
    # per (advertiser, scenario), fixed unless a task changes it
    adopt_day: np.ndarray  # int32
    affinity: np.ndarray  # float32 log-affinity
    cpc_mult: np.ndarray  # float32
    ctr_mult: np.ndarray  # float32
    cvr_mult: np.ndarray  # float32
    # dynamic
    x: np.ndarray  # float32 AR(1) engagement deviation
    engagement: np.ndarray  # float32 [A, ACTIVITY_LAG + 1], oldest first
    alive: np.ndarray  # bool
    common: np.ndarray  # float32 common budget factor
    pool: np.ndarray  # float32 display/shop substitution factor
    idio: np.ndarray  # float32 [A, K]
    # incentive effects in force until task_until (exclusive day index)
    task_until: np.ndarray  # int32 [A, K]
    task_active_floor: np.ndarray  # float32 [A, K]
    task_spend_floor: np.ndarray  # float32 [A, K]
    task_login_floor: np.ndarray  # float32 [A, K]


def _stream(seed: int, stream: int, day: int, replica: int | None = None) -> np.random.Generator:
    """The draws of one day; a replica (see `World.futures`) gets streams of its own."""
    key = (stream, day + DAY_KEY_OFFSET) + (() if replica is None else (replica,))
    seq = np.random.SeedSequence(entropy=seed, spawn_key=key)
    return np.random.Generator(np.random.PCG64(seq))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _nb(rng: np.random.Generator, mean: np.ndarray, shape: float) -> np.ndarray:
    """Negative binomial counts with this mean (gamma-Poisson mixture, variance m + m^2/shape)."""
    lam = np.asarray(mean, dtype=np.float64) * rng.gamma(shape, 1.0 / shape, size=np.shape(mean))
    return rng.poisson(lam).astype(np.int64)


def _by_kind(table: dict[str, float], kinds: Sequence[str]) -> np.ndarray:
    return np.array([table.get(kind, 0.0) for kind in kinds], dtype=np.float32)


class World:
    """The simulated population and its latent state; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int,
        start_date: date,
        first_end_date: date,
        next_day: int,
        latent: _Latent,
        daily_stats: pa.Table | None = None,
    ) -> None:
        self.seed = seed
        self.start_date = start_date
        self.first_end_date = first_end_date
        self.next_day = next_day
        self.latent = latent
        self.specs = SCENARIOS
        self.daily_stats = daily_stats if daily_stats is not None else STATS_SCHEMA.empty_table()
        kinds = [s.kind for s in self.specs]
        self._kind_index = np.array([KINDS.index(k) for k in kinds])
        self._ln_traffic = np.log([s.traffic_index for s in self.specs]).astype(np.float32)
        self._avg_cpc = np.array([s.avg_cpc for s in self.specs], dtype=np.float32)
        self._ctr = np.array([s.ctr for s in self.specs], dtype=np.float32)
        self._cvr = np.array([s.cvr for s in self.specs], dtype=np.float32)
        self._weekend = np.array([s.weekend_lift for s in self.specs], dtype=np.float32)
        self._trend = np.array([s.trend_per_year for s in self.specs], dtype=np.float32)
        self._bid = np.array([s.bid_intensity for s in self.specs], dtype=np.float32)
        self._common_loading = _by_kind(KIND_COMMON_LOADING, kinds)
        self._pool_loading = _by_kind(KIND_POOL_LOADING, kinds)
        self._ids = _advertiser_ids(len(latent.mu))
        self._codes = pa.array([s.code for s in self.specs], pa.string())
        self._replica: int | None = None  # set while `futures` runs an alternative future

    # ---------------------------------------------------------------- public surface
    @property
    def n_advertisers(self) -> int:
        return len(self.latent.mu)

    @property
    def end_date(self) -> date:
        """The last simulated day."""
        return self.start_date + timedelta(days=self.next_day - 1)

    @property
    def scenario_codes(self) -> list[str]:
        return [s.code for s in self.specs]

    def launched_on(self) -> list[date]:
        new_launch = self.first_end_date - timedelta(days=NEW_SCENARIO_AGE_DAYS - 1)
        return [
            new_launch
            if s.launched_years_before_start is None
            else self.start_date - timedelta(days=round(365.25 * s.launched_years_before_start))
            for s in self.specs
        ]

    def scenarios_table(self) -> pa.Table:
        columns: dict[str, pa.Array] = {
            "code": self._codes,
            "name": pa.array([s.name for s in self.specs]),
            "kind": pa.array([s.kind for s in self.specs]),
            "launched_on": pa.array(self.launched_on(), pa.date32()),
        }
        for attr in ATTRIBUTES:
            columns[f"attr_{attr}"] = pa.array([float(getattr(s, attr)) for s in self.specs])
        return pa.table(columns)

    def advertisers_table(self) -> pa.Table:
        lat = self.latent
        category = pa.array(CATEGORIES).take(pa.array(lat.category.astype(np.int32)))
        number = pc.utf8_slice_codeunits(self._ids, 4)
        title = pc.utf8_capitalize(category)
        return pa.table(
            {
                "advertiser_id": self._ids,
                "name": pc.binary_join_element_wise(title, "Co.", number, " "),
                "registered_on": _dates(self.start_date, lat.registered_day),
                "business_scale": pa.array(lat.business_scale.astype(np.int64)),
                "main_category": category,
                "star_level": pa.array(lat.star_level.astype(np.int64)),
            }
        )

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write scenarios.csv, advertisers.csv and daily_stats.csv (the rows `simulate` made;
        a loaded world holds none, so its daily_stats.csv has the header only)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "scenarios": out / "scenarios.csv",
            "advertisers": out / "advertisers.csv",
            "daily_stats": out / "daily_stats.csv",
        }
        _write_csv(self.scenarios_table(), paths["scenarios"])
        _write_csv(self.advertisers_table(), paths["advertisers"])
        _write_csv(self.daily_stats, paths["daily_stats"])
        return paths

    def save(self, path: str | Path) -> Path:
        """Save the latent state (not the written rows) so `World.load` can continue it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "seed": self.seed,
            "start_date": self.start_date.isoformat(),
            "first_end_date": self.first_end_date.isoformat(),
            "next_day": self.next_day,
            "scenarios": self.scenario_codes,
        }
        arrays = {f.name: getattr(self.latent, f.name) for f in fields(_Latent)}
        with target.open("wb") as fh:
            np.savez_compressed(fh, _meta=np.array(json.dumps(meta)), **arrays)
        return target

    @classmethod
    def load(cls, path: str | Path) -> World:
        source = Path(path)
        try:
            data = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SimulationError(
                f"{source}: not a saved world ({exc}); pass the world.npz that `simulate` wrote."
            ) from exc
        with data:
            if "_meta" not in data.files:
                raise SimulationError(f"{source}: no _meta entry; this is not a saved world.")
            meta = json.loads(str(data["_meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise SimulationError(
                    f"{source}: world format {meta.get('format')!r}, this simulator reads "
                    f"{FORMAT_VERSION}; re-run `simulate` to make a new world."
                )
            if meta["scenarios"] != [s.code for s in SCENARIOS]:
                raise SimulationError(
                    f"{source}: saved with scenarios {meta['scenarios']}, this simulator has "
                    f"{[s.code for s in SCENARIOS]}; re-run `simulate`."
                )
            missing = [f.name for f in fields(_Latent) if f.name not in data.files]
            if missing:
                raise SimulationError(
                    f"{source}: the saved world lacks {missing}; re-run `simulate`."
                )
            latent = _Latent(**{f.name: data[f.name].copy() for f in fields(_Latent)})
        return cls(
            seed=int(meta["seed"]),
            start_date=date.fromisoformat(meta["start_date"]),
            first_end_date=date.fromisoformat(meta["first_end_date"]),
            next_day=int(meta["next_day"]),
            latent=latent,
        )

    def advance(
        self,
        *,
        days: int,
        incentives: Incentives | None = None,
        out_path: str | Path | None = None,
    ) -> AdvanceResult:
        """Continue the process for `days` more days, applying the incentive response from the
        first new day; return (and write to out_path, if given) the new daily_stats rows."""
        if not isinstance(days, int) or days < 1:
            raise SimulationError(f"advance: days must be a positive integer, got {days!r}.")
        first = self.next_day
        responded, probability = self._apply_incentives(
            [] if incentives is None else incentives, first
        )
        table = self._run(first, first + days)
        path = None
        if out_path is not None:
            path = Path(out_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_csv(table, path)
        return AdvanceResult(
            daily_stats=table,
            start_date=self.start_date + timedelta(days=first),
            end_date=self.end_date,
            path=path,
            responded=responded,
            response_probability=probability,
        )

    def active_probability(self, *, days: int = 7) -> np.ndarray:
        """[A, K] probability that each advertiser is active at least once in each scenario in
        the next `days` days without any task, from the current latent state (ignores weekly
        seasonality). 1 - this is the `risk` of the incentive response."""
        lat = self.latent
        g = self.next_day
        p_day = self._activity_probability(lat.engagement[:, -1], g, weekly=0.0)
        adopted = lat.adopt_day <= g + days // 2  # adoption that happens within the window
        p_alive = 1.0 - (1.0 - p_day) ** days
        returning = 1.0 - (1.0 - lat.return_rate[:, None]) ** days
        p_dormant = returning * (1.0 - (1.0 - p_day) ** max(days // 2, 1))
        registered = (lat.registered_day <= g + days - 1)[:, None]
        p = np.where(lat.alive[:, None], p_alive, p_dormant) * adopted * registered
        return p.astype(np.float32)

    def futures(self, *, days: int, replicas: int, own_path: bool = False) -> dict[str, np.ndarray]:
        """`replicas` other continuations of the next `days` days from the current state, each
        with draws of its own, leaving the world where it was.

        Returns, per counter of FUTURE_COUNTERS, the sums over the days [replicas, A, K] (money
        in currency units; active_days counts days with expenditure); with `own_path`, the
        world's own continuation (what `advance` would write, without tasks) comes first as an
        extra slice. The spread of the replicas is what no model can foresee; their mean and
        median per pair are the best predictions the full latent state allows.
        """
        if not isinstance(days, int) or days < 1:
            raise SimulationError(f"futures: days must be a positive integer, got {days!r}.")
        if not isinstance(replicas, int) or replicas < 1:
            raise SimulationError(
                f"futures: replicas must be a positive integer, got {replicas!r}."
            )
        keys: list[int | None] = [None] * own_path + list(range(replicas))
        start_latent, start_day = self.latent, self.next_day
        n, k = start_latent.idio.shape
        sums = {name: np.zeros((len(keys), n, k), dtype=np.float32) for name in FUTURE_COUNTERS}
        try:
            for slot, replica in enumerate(keys):
                self.latent, self.next_day, self._replica = (
                    _copied(start_latent),
                    start_day,
                    replica,
                )
                for day in range(start_day, start_day + days):
                    self._add_day(sums, slot, self._emit(day, self._latent_step(day)))
        finally:
            self.latent, self.next_day, self._replica = start_latent, start_day, None
        return sums

    def _add_day(self, sums: dict[str, np.ndarray], slot: int, rows: dict[str, np.ndarray]) -> None:
        n, k = self.latent.idio.shape
        cell = rows["advertiser"].astype(np.int64) * k + rows["scenario"]  # flat [A * K] index
        values = {
            "impressions": rows["impressions"],
            "clicks": rows["clicks"],
            "expenditure": rows["expenditure_cents"] / 100.0,
            "gmv": rows["gmv_cents"] / 100.0,
            "active_days": rows["expenditure_cents"] > 0,
        }
        for name, v in values.items():
            sums[name][slot] += np.bincount(cell, weights=v, minlength=n * k).reshape(n, k)

    # ---------------------------------------------------------------- the process
    def _activity_probability(
        self, engagement: np.ndarray, day: int, weekly: np.ndarray | float
    ) -> np.ndarray:
        logit = (
            ACT_BASE
            + ACT_TRAFFIC * self._ln_traffic[None, :]
            + ACT_ENGAGEMENT * engagement[:, None]
            + self.latent.affinity
            + weekly
            + self._trend[None, :] * (day / 365.0)
        )
        return _sigmoid(logit)

    def _latent_step(self, day: int) -> np.ndarray:
        """Move engagement, churn and the budget factors one day; return the activity uniforms.

        All draws here have a fixed shape, so tasks given to some advertisers never change
        the churn and activity path of the others.
        """
        lat = self.latent
        n, k = lat.idio.shape
        rng = _stream(self.seed, STREAM_LATENT, day, self._replica)
        eps = rng.standard_normal(n, dtype=np.float32)
        u_churn = rng.random(n, dtype=np.float32)
        u_return = rng.random(n, dtype=np.float32)
        restart = rng.standard_normal(n, dtype=np.float32)
        eps_common = rng.standard_normal(n, dtype=np.float32)
        eps_pool = rng.standard_normal(n, dtype=np.float32)
        eps_idio = rng.standard_normal((n, k), dtype=np.float32)
        u_active = rng.random((n, k), dtype=np.float32)

        registered = lat.registered_day <= day
        newcomer = lat.registered_day == day
        hazard = _sigmoid(HAZARD_BASE - HAZARD_ENGAGEMENT * lat.engagement[:, -1])
        churn = lat.alive & (u_churn < hazard)
        comeback = ~lat.alive & registered & ~newcomer & (u_return < lat.return_rate)
        fresh = newcomer | comeback
        lat.alive = (lat.alive & ~churn) | fresh
        lat.alive &= registered

        lat.x = ENGAGEMENT_PHI * lat.x + ENGAGEMENT_SD * eps
        lat.x = np.where(fresh, 0.3 + 0.5 * restart, lat.x).astype(np.float32)
        engagement = lat.mu + lat.engagement_trend * (day / 365.0) + lat.x
        lat.engagement = np.concatenate([lat.engagement[:, 1:], engagement[:, None]], axis=1)

        lat.common = FACTOR_PHI * lat.common + COMMON_SD * math.sqrt(1 - FACTOR_PHI**2) * eps_common
        lat.pool = FACTOR_PHI * lat.pool + POOL_SD * math.sqrt(1 - FACTOR_PHI**2) * eps_pool
        lat.idio = IDIO_PHI * lat.idio + IDIO_SD * math.sqrt(1 - IDIO_PHI**2) * eps_idio
        return u_active

    def _emit(self, day: int, u_active: np.ndarray) -> dict[str, np.ndarray]:
        """Draw the day's counters for every alive, adopted pair; keep pairs with any activity."""
        lat = self.latent
        weekday = (self.start_date + timedelta(days=day)).weekday()
        weekly = np.where(weekday >= 5, self._weekend, -self._weekend * 2.0 / 5.0)
        lagged = lat.engagement[:, 0]
        now = lat.engagement[:, -1]
        in_task = lat.task_until > day

        p = self._activity_probability(lagged, day, weekly[None, :])
        p = np.where(in_task, np.maximum(p, lat.task_active_floor), p)
        live = lat.alive[:, None] & (lat.adopt_day <= day)
        active = live & (u_active < p)

        ai, ki = np.nonzero(live)
        on = active[ai, ki]
        rng = _stream(self.seed, STREAM_COUNTS, day, self._replica)
        perf = self._performance(rng, ai[on], ki[on], lagged, weekly, in_task, day)
        behaviour = self._behaviour(rng, ai, ki, on, now, weekday, in_task)

        n_rows = len(ai)
        out = {name: np.zeros(n_rows, dtype=np.int64) for name in perf}
        for name, values in perf.items():
            out[name][on] = values
        out.update(behaviour)
        keep = on | (behaviour["logins"] + behaviour["campaign_edits"] > 0)
        keep |= behaviour["bid_changes"] + behaviour["budget_changes"] > 0
        out["advertiser"] = ai.astype(np.int32)
        out["scenario"] = ki.astype(np.int8)
        out["day"] = np.full(n_rows, day, dtype=np.int32)
        return {name: values[keep] for name, values in out.items()}

    def _performance(
        self,
        rng: np.random.Generator,
        ai: np.ndarray,
        ki: np.ndarray,
        lagged: np.ndarray,
        weekly: np.ndarray,
        in_task: np.ndarray,
        day: int,
    ) -> dict[str, np.ndarray]:
        lat = self.latent
        years = day / 365.0
        budget_factor = (
            self._common_loading[ki] * lat.common[ai] + self._pool_loading[ki] * lat.pool[ai]
        )
        log_spend = (
            lat.log_scale[ai]
            + BUDGET_ENGAGEMENT * lagged[ai]
            + lat.budget_trend[ai] * years
            + SPEND_AFFINITY * lat.affinity[ai, ki]
            + SPEND_TRAFFIC * self._ln_traffic[ki]
            + weekly[ki]
            + budget_factor
            + lat.idio[ai, ki]
        )
        spend = np.exp(log_spend)
        spend = np.where(in_task[ai, ki], np.maximum(spend, lat.task_spend_floor[ai, ki]), spend)
        cpc = self._avg_cpc[ki] * lat.cpc_mult[ai, ki]
        clicks = 1 + _nb(rng, np.maximum(spend / cpc - 1.0, 0.0), CLICK_SHAPE)
        paid_cpc = cpc * np.exp(PAID_CPC_SD * rng.standard_normal(len(ai)) - PAID_CPC_SD**2 / 2)
        expenditure = np.maximum(np.rint(clicks * paid_cpc * 100.0), 1).astype(np.int64)
        ctr = np.clip(self._ctr[ki] * lat.ctr_mult[ai, ki], 1e-4, 0.9)
        impressions = clicks + _nb(rng, clicks * (1.0 / ctr - 1.0), IMPRESSION_SHAPE)
        cvr = np.clip(self._cvr[ki] * lat.cvr_mult[ai, ki], 0.0, 0.9)
        orders = _nb(rng, clicks * cvr, ORDER_SHAPE)
        order_value = CATEGORY_ORDER_VALUE[lat.category[ai]] * np.exp(
            ORDER_VALUE_SD * rng.standard_normal(len(ai)) - ORDER_VALUE_SD**2 / 2
        )
        gmv = np.rint(orders * order_value * 100.0).astype(np.int64)
        return {
            "impressions": impressions,
            "clicks": clicks,
            "expenditure_cents": expenditure,
            "gmv_cents": gmv,
        }

    def _behaviour(
        self,
        rng: np.random.Generator,
        ai: np.ndarray,
        ki: np.ndarray,
        on: np.ndarray,
        now: np.ndarray,
        weekday: int,
        in_task: np.ndarray,
    ) -> dict[str, np.ndarray]:
        lat = self.latent
        act = on.astype(np.float32)
        drive = np.exp(0.7 * now[ai])
        jump = np.abs(lat.engagement[ai, -1] - lat.engagement[ai, -2])
        edit_boost = MONDAY_EDIT_BOOST if weekday == 0 else 1.0
        logins = _nb(
            rng,
            LOGIN_RATE * np.exp(lat.login_base[ai]) * drive * (LOGIN_IDLE + act),
            BEHAVIOUR_SHAPE,
        )
        forced = in_task[ai, ki] & (rng.random(len(ai)) < lat.task_login_floor[ai, ki])
        logins = np.where(forced, np.maximum(logins, 1), logins)
        edits = _nb(rng, EDIT_RATE * edit_boost * drive * (0.3 + act), BEHAVIOUR_SHAPE)
        bids = _nb(rng, BID_RATE * self._bid[ki] * drive * act, BEHAVIOUR_SHAPE)
        budget = _nb(
            rng, (BUDGET_CHANGE_BASE + BUDGET_CHANGE_SHOCK * jump) * (0.3 + act), BEHAVIOUR_SHAPE
        )
        return {
            "logins": logins,
            "campaign_edits": edits,
            "bid_changes": bids,
            "budget_changes": budget,
        }

    def _run(self, first: int, stop: int) -> pa.Table:
        chunks = []
        for day in range(first, stop):
            u_active = self._latent_step(day)
            chunks.append(self._emit(day, u_active))
            self.next_day = day + 1
        return self._rows_table(chunks)

    def _rows_table(self, chunks: list[dict[str, np.ndarray]]) -> pa.Table:
        cols = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
        columns = [
            self._ids.take(pa.array(cols["advertiser"])),
            self._codes.take(pa.array(cols["scenario"].astype(np.int32))),
            _dates(self.start_date, cols["day"]),
            pa.array(cols["impressions"]),
            pa.array(cols["clicks"]),
            _money(cols["expenditure_cents"], STATS_SCHEMA.field("expenditure").type),
            _money(cols["gmv_cents"], STATS_SCHEMA.field("gmv").type),
            *(pa.array(cols[name]) for name in STATS_SCHEMA.names[7:]),
        ]
        return pa.Table.from_arrays(columns, schema=STATS_SCHEMA)

    # ---------------------------------------------------------------- incentives
    def _apply_incentives(
        self, incentives: Incentives, first: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw who responds to each task and put the responders' lifts in force."""
        if not len(incentives):
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.float64)
        tasks = self._parse_tasks(incentives, first)
        lat = self.latent
        expired = lat.task_until <= first  # floors of finished tasks must not lift new ones
        for floor in (lat.task_active_floor, lat.task_spend_floor, lat.task_login_floor):
            floor[expired] = 0.0
        rng = _stream(self.seed, STREAM_INCENTIVE, first)
        noise, u = rng.standard_normal(tasks.n), rng.random(tasks.n)
        effort = rng.uniform(*RESPONSE_EFFORT_RANGE, size=tasks.n)
        probability = self._response_probability(tasks, noise, first)
        responded = u < probability
        self._lift(tasks, responded, effort, first)
        return responded, probability

    def response_probability(
        self, incentives: Incentives, *, noise: float | np.ndarray = 0.0
    ) -> np.ndarray:
        """The take-up probability of each task if it started on the next day, at a given value
        of the response noise eps (0: its median), without drawing or applying anything: the
        formula of `advance`, for an oracle that knows the world. `noise` [Q] (or a scalar)
        gives [Q, n]: one row per value, the tasks parsed once."""
        tasks = self._parse_tasks(incentives, self.next_day)
        values = np.atleast_1d(np.asarray(noise, dtype=np.float64))
        rows = [
            self._response_probability(tasks, np.full(tasks.n, v), self.next_day) for v in values
        ]
        return rows[0] if np.ndim(noise) == 0 else np.stack(rows)

    def response_extra_spend(self, incentives: Incentives) -> np.ndarray:
        """Expected money a responder spends above its no-task path in the task's scenario and
        window: the target's money equivalent x the mean effort, less the usual spend on the
        days it would have been active anyway (an approximation for the oracle; `advance`
        draws the real path)."""
        tasks = self._parse_tasks(incentives, self.next_day)
        lat, ai, ki = self.latent, tasks.ai, tasks.ki
        usual_spend = np.exp(
            lat.log_scale[ai] + SPEND_AFFINITY * lat.affinity[ai, ki]
            + SPEND_TRAFFIC * self._ln_traffic[ki]
        )  # fmt: skip
        effort = float(np.mean(RESPONSE_EFFORT_RANGE))
        days_active = np.minimum(tasks.target * effort, tasks.valid)
        money = np.select(
            [tasks.kind == 0, tasks.kind == 1, tasks.kind == 2],
            [tasks.target * effort, tasks.target * effort * tasks.cpc, days_active * usual_spend],
            default=RESPONSE_LOGIN_ACTIVITY * tasks.valid * usual_spend,
        )
        baseline = usual_spend * tasks.valid * self.active_probability(days=1)[ai, ki]
        return np.maximum(money - baseline, 0.0)

    def _response_probability(self, tasks: _Tasks, noise: np.ndarray, first: int) -> np.ndarray:
        lat, ai, ki, kind, target = self.latent, tasks.ai, tasks.ki, tasks.kind, tasks.target
        usual_spend = np.exp(
            lat.log_scale[ai] + SPEND_AFFINITY * lat.affinity[ai, ki]
            + SPEND_TRAFFIC * self._ln_traffic[ki]
        )  # fmt: skip
        cost = np.select(
            [kind == 0, kind == 1, kind == 2],
            [target, target * tasks.cpc, target * ACTIVE_DAY_COST_SHARE * usual_spend],
            default=target * LOGIN_DAY_COST,
        )
        risk = np.empty(tasks.n)
        for window in np.unique(tasks.valid):  # one pass per distinct window length
            sel = tasks.valid == window
            risk[sel] = 1.0 - self.active_probability(days=int(window))[ai[sel], ki[sel]]
        reach = np.where(lat.alive[ai], 1.0, RESPONSE_DORMANT_REACH)
        reach = np.where(lat.registered_day[ai] < first + tasks.valid, reach, 0.0)
        return incentive_response_probability(
            risk=risk, reward=tasks.reward, cost=cost, noise=noise, reach=reach
        )

    def _lift(self, tasks: _Tasks, responded: np.ndarray, effort: np.ndarray, first: int) -> None:
        lat, r = self.latent, responded
        ar, kr, kind = tasks.ai[r], tasks.ki[r], tasks.kind[r]
        per_day = tasks.target[r] / tasks.valid[r] * effort[r]
        money = np.select([kind == 0, kind == 1], [per_day, per_day * tasks.cpc[r]], default=0.0)
        active_floor = np.select(
            [kind <= 1, kind == 2],
            [RESPONSE_TARGET_ACTIVITY, np.minimum(per_day, 0.97)],
            default=RESPONSE_LOGIN_ACTIVITY,
        )
        login_floor = np.where(kind == 3, np.minimum(per_day, 0.97), 0.0)
        f32 = np.float32
        lat.alive[ar] |= lat.registered_day[ar] <= first
        lat.adopt_day[ar, kr] = np.minimum(lat.adopt_day[ar, kr], max(first, 0))
        np.add.at(lat.x, ar, f32(RESPONSE_ENGAGEMENT_BUMP))
        np.maximum.at(lat.task_until, (ar, kr), (first + tasks.valid[r]).astype(np.int32))
        np.maximum.at(lat.task_active_floor, (ar, kr), active_floor.astype(f32))
        np.maximum.at(
            lat.task_spend_floor, (ar, kr), (money / RESPONSE_TARGET_ACTIVITY).astype(f32)
        )
        np.maximum.at(lat.task_login_floor, (ar, kr), login_floor.astype(f32))

    def _parse_tasks(self, incentives: Incentives, first: int) -> _Tasks:
        """Check the tasks and turn them into arrays; errors name the bad values."""
        batch = (
            incentives if isinstance(incentives, IncentiveBatch) else IncentiveBatch.of(incentives)
        )
        ai = self.advertiser_index(batch.advertiser_id, what="incentives")
        codes = {c: i for i, c in enumerate(self.scenario_codes)} | {"": -1}
        scenarios, scenario_of = np.unique(batch.scenario, return_inverse=True)
        unknown = sorted(set(scenarios.tolist()) - set(codes))
        if unknown:
            raise SimulationError(
                f"incentives: unknown scenario {unknown}; use one of {list(codes)[:-1]} or None."
            )
        kinds, kind_of = np.unique(batch.kind, return_inverse=True)
        bad_kinds = sorted(set(kinds.tolist()) - set(INCENTIVE_KINDS))
        if bad_kinds:
            raise SimulationError(
                f"incentives: unknown kind {bad_kinds}; use one of {list(INCENTIVE_KINDS)}."
            )
        kind = np.array([INCENTIVE_KINDS.index(k) for k in kinds.tolist()], np.int64)[kind_of]
        target, reward = batch.target.astype(np.float64), batch.reward.astype(np.float64)
        valid = batch.valid_days.astype(np.int64)
        if (target <= 0).any() or (reward < 0).any() or (valid < 1).any():
            raise SimulationError(
                "incentives: target must be > 0, reward >= 0 and valid_days >= 1 for every task."
            )
        code_index = np.array([codes[c] for c in scenarios.tolist()], np.int64)[scenario_of]
        ki = self._task_scenario(ai, code_index, first)
        cpc = self._avg_cpc[ki] * self.latent.cpc_mult[ai, ki]
        return _Tasks(ai=ai, ki=ki, kind=kind, target=target, reward=reward, valid=valid, cpc=cpc)

    def advertiser_index(self, advertiser_ids: Sequence[str], *, what: str) -> np.ndarray:
        """The row of each advertiser_id in the latent arrays; `what` names the caller's input."""
        ids = np.array(advertiser_ids, dtype=str)
        known = self._ids.to_numpy(zero_copy_only=False).astype(str)
        index = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        bad = known[index] != ids
        if bad.any():
            raise SimulationError(
                f"{what}: unknown advertiser_id {ids[bad][:5].tolist()}; use ids from "
                "advertisers.csv of this world."
            )
        return index

    def _task_scenario(self, ai: np.ndarray, codes: np.ndarray, first: int) -> np.ndarray:
        """The scenario index of each task; "any scenario" (-1) becomes the advertiser's
        favourite, preferring scenarios it already uses."""
        ki = np.array(codes, dtype=np.int64)
        launched = np.array([(d - self.start_date).days for d in self.launched_on()])
        anywhere = ki < 0
        if anywhere.any():
            aa = ai[anywhere]
            favour = self.latent.affinity[aa] + 100.0 * (self.latent.adopt_day[aa] <= first)
            ki[anywhere] = np.where(launched[None, :] <= first, favour, -1e9).argmax(axis=1)
        not_yet = launched[ki] > first
        if not_yet.any():
            names = sorted({self.scenario_codes[k] for k in ki[not_yet]})
            raise SimulationError(f"incentives: scenario {names} is not launched yet.")
        return ki


@dataclass(frozen=True)
class _Tasks:
    """Validated incentive tasks as arrays (one entry per task)."""

    ai: np.ndarray  # advertiser index
    ki: np.ndarray  # scenario index
    kind: np.ndarray  # index into INCENTIVE_KINDS
    target: np.ndarray
    reward: np.ndarray
    valid: np.ndarray  # days
    cpc: np.ndarray  # the advertiser's cpc in the task's scenario

    @property
    def n(self) -> int:
        return len(self.ai)


def simulate(
    *,
    advertisers: int,
    days: int,
    seed: int,
    end_date: date | None = None,
    through: date | None = None,
) -> World:
    """Build a world of `advertisers` and simulate `days` days ending on `end_date`.

    With `through`, the same world stops after that day: its rows are the full run's up to
    then, and `advance` or `futures` continue from the state it had on that day.
    """
    _check_args(advertisers=advertisers, days=days, seed=seed)
    end = end_date or DEFAULT_END_DATE
    start = end - timedelta(days=days - 1)
    stop = days if through is None else (through - start).days + 1
    if not 1 <= stop <= days:
        raise SimulationError(f"through={through} is outside the simulated days {start}..{end}.")
    world = World(
        seed=seed,
        start_date=start,
        first_end_date=end,
        next_day=-BURN_IN_DAYS,
        latent=_initial_latent(advertisers=advertisers, days=days, seed=seed),
    )
    launch = np.array([(d - start).days for d in world.launched_on()])
    world.latent.adopt_day = _adoption(world, launch, seed)
    for day in range(-BURN_IN_DAYS, 0):  # latent only: nothing is written before the start
        world._latent_step(day)
    world.next_day = 0
    world.daily_stats = world._run(0, stop)
    return world


def _check_args(*, advertisers: int, days: int, seed: int) -> None:
    if not isinstance(advertisers, int) or not 1 <= advertisers <= MAX_ADVERTISERS:
        raise SimulationError(
            f"advertisers must be an integer from 1 to {MAX_ADVERTISERS:,}, got {advertisers!r}."
        )
    if not isinstance(days, int) or not MIN_DAYS <= days <= MAX_DAYS:
        raise SimulationError(
            f"days must be an integer from {MIN_DAYS} to {MAX_DAYS}, got {days!r} "
            "(the model needs weeks of history)."
        )
    if not isinstance(seed, int) or seed < 0:
        raise SimulationError(f"seed must be a non-negative integer, got {seed!r}.")


def _initial_latent(*, advertisers: int, days: int, seed: int) -> _Latent:
    rng = _stream(seed, STREAM_INIT, 0)
    n, k = advertisers, len(SCENARIOS)
    f32 = np.float32
    newcomer = rng.random(n) < 0.15
    registered = np.where(
        newcomer, rng.integers(0, days, n), -rng.integers(BURN_IN_DAYS + 1, 2000, n)
    ).astype(np.int32)
    scale = rng.choice(np.arange(1, 6), size=n, p=[0.35, 0.28, 0.2, 0.12, 0.05]).astype(np.int8)
    star = np.clip(np.rint(0.6 * scale + rng.normal(0.3, 1.0, n)), 0, 5).astype(np.int8)
    category = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_WEIGHTS).astype(np.int8)
    mu = (0.15 * (scale - 3) + 0.1 * (star - 2) + rng.normal(0.0, 0.9, n)).astype(f32)
    returner = rng.random(n) < RETURNER_SHARE
    return _Latent(
        registered_day=registered,
        business_scale=scale,
        star_level=star,
        category=category,
        log_scale=(BUDGET_BASE + BUDGET_PER_SCALE * (scale - 1) + rng.normal(0, 0.6, n)).astype(
            f32
        ),
        mu=mu,
        engagement_trend=rng.normal(0.0, 0.5, n).astype(f32),
        budget_trend=rng.normal(0.0, 0.4, n).astype(f32),
        orientation=rng.standard_normal(n).astype(f32),
        login_base=rng.normal(0.0, 0.5, n).astype(f32),
        return_rate=(returner * rng.uniform(*RETURN_RATE_RANGE, n)).astype(f32),
        adopt_day=np.full((n, k), NEVER, dtype=np.int32),  # drawn by _adoption
        affinity=np.zeros((n, k), dtype=f32),  # drawn by _adoption
        cpc_mult=np.exp(rng.normal(0.0, 0.3, (n, k))).astype(f32),
        ctr_mult=np.exp(rng.normal(0.0, 0.3, (n, k))).astype(f32),
        cvr_mult=(np.exp(rng.normal(0.0, 0.3, (n, k))) * CATEGORY_CVR[category, None]).astype(f32),
        x=rng.normal(0.0, 0.6, n).astype(f32),
        engagement=np.repeat(mu[:, None], ACTIVITY_LAG + 1, axis=1).astype(f32),
        alive=registered < -BURN_IN_DAYS,
        common=rng.normal(0.0, COMMON_SD, n).astype(f32),
        pool=rng.normal(0.0, POOL_SD, n).astype(f32),
        idio=rng.normal(0.0, IDIO_SD, (n, k)).astype(f32),
        task_until=np.zeros((n, k), dtype=np.int32),
        task_active_floor=np.zeros((n, k), dtype=f32),
        task_spend_floor=np.zeros((n, k), dtype=f32),
        task_login_floor=np.zeros((n, k), dtype=f32),
    )


def _adoption(world: World, launch: np.ndarray, seed: int) -> np.ndarray:
    """Which scenarios each advertiser uses and from when; also sets the pair affinities."""
    lat = world.latent
    rng = _stream(seed, STREAM_INIT, 1)
    n, k = lat.adopt_day.shape
    kinds = [s.kind for s in world.specs]
    orient_aff = _by_kind(KIND_ORIENTATION_AFFINITY, kinds)
    orient_cpc = _by_kind(KIND_ORIENTATION_CPC, kinds)
    base_affinity = CATEGORY_KIND_AFFINITY[lat.category][:, world._kind_index]  # [A, K]
    lat.affinity = (
        base_affinity + orient_aff[None, :] * lat.orientation[:, None] + rng.normal(0, 0.4, (n, k))
    ).astype(np.float32)
    lat.cpc_mult = (lat.cpc_mult * np.exp(orient_cpc[None, :] * lat.orientation[:, None])).astype(
        np.float32
    )
    logit = (
        ADOPT_BASE
        + ADOPT_TRAFFIC * world._ln_traffic[None, :]
        + 0.35 * (lat.business_scale[:, None] - 3)
        + 0.5 * lat.mu[:, None]
        + lat.affinity
        + rng.normal(0.0, 0.6, (n, k))
    )
    adopts = rng.random((n, k)) < _sigmoid(logit)
    is_new = np.array([s.launched_years_before_start is None for s in world.specs])
    delay = rng.exponential(np.where(is_new, NEW_ADOPT_DELAY_DAYS, ADOPT_DELAY_DAYS), (n, k))
    start = np.maximum(lat.registered_day[:, None], launch[None, :])
    return np.where(adopts, start + np.ceil(delay), NEVER).astype(np.int32)


def _copied(latent: _Latent) -> _Latent:
    return _Latent(**{f.name: getattr(latent, f.name).copy() for f in fields(_Latent)})


def _advertiser_ids(n: int) -> pa.Array:
    """adv-000001 ... zero-padded so that text order is index order (searchsorted relies on it)."""
    width = max(6, len(str(n)))
    numbers = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
    return pc.binary_join_element_wise("adv-", pc.utf8_lpad(numbers, width, "0"), "")


def _dates(start: date, day_index: np.ndarray) -> pa.Array:
    epoch = (start - date(1970, 1, 1)).days
    return pa.array(np.asarray(day_index, dtype=np.int32) + np.int32(epoch), pa.date32())


def _money(cents: np.ndarray, money_type: pa.Decimal128Type) -> pa.Array:
    """Exact decimal(p, 2) from integer cents: a decimal's 128-bit integer is the cents."""
    raw = np.zeros((len(cents), 2), dtype=np.int64)
    raw[:, 0] = cents  # never negative, so the high word stays 0
    return pa.Array.from_buffers(money_type, len(cents), [None, pa.py_buffer(raw)])


def _write_csv(table: pa.Table, path: Path) -> None:
    # Our own unquoted header: pyarrow quotes header names, which some readers keep literally.
    with path.open("wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
