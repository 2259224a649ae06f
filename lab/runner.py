"""One closed-loop lab run through the product's normal paths.

simulate -> ingest -> train -> predict -> exploration week (randomised offers + holdout) ->
uplift model -> predict -> k-arm experiment (campaign production per arm) -> push uptake ->
advance the world with the simulator's incentive response -> ingest -> settle -> analyse.

The world is the simulator's; its physics (the incentive-response formula) are never changed
here. Every write goes through the services the product uses (ingest, model_train, predict,
campaign_produce, experiment_start, tasks_settle, experiment_analyse); the lab only plays the
world and the push system (delivery and the advertisers' take-up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.core.management import call_command
from django.db import connection

ARMS = (
    # name, role, model kind, targeting
    ("single-task", "control", "single_task", "least_activity"),
    ("no-task", "treatment", "", "none"),
    ("random", "treatment", "m2m", "random"),
    ("m2m", "treatment", "m2m", "least_activity"),
    ("m2m-uplift", "treatment", "m2m", "uplift"),
    ("oracle", "treatment", "", "external"),
)
ORACLE_ARM = "oracle"
NO_TASK_ARM = "no-task"
EXPLORATION_DAYS = 7
MIN_ADVERTISERS_PER_ARM = 200


class LabError(Exception):
    """A lab run that cannot start; the message says what is wrong and what to change."""


@dataclass(frozen=True)
class LabConfig:
    """What one lab run does; `manage.py lab --help` explains each field."""

    advertisers: int = 200_000
    days: int = 130
    seed: int = 11
    train_advertisers: int = 20_000
    epochs: int = 2
    exploration_share: float = 0.03
    campaign_holdout_share: float = 0.05
    budget_per_arm: Decimal | None = None  # None: BUDGET_PER_ADVERTISER x the arm's size
    reward_cap: Decimal = Decimal(100)
    evaluation_days: int = 7
    uplift_estimator: str = "take-up"  # campaigns.uplift.ESTIMATORS
    reuse_models: bool = False
    out: Path = Path("var/lab")

    @property
    def arm_size(self) -> int:
        return self.advertisers // len(ARMS)

    @property
    def budget(self) -> Decimal:
        if self.budget_per_arm is not None:
            return self.budget_per_arm
        return (BUDGET_PER_ADVERTISER * self.arm_size).quantize(Decimal("1"))


# About one task in 20 advertisers of an arm at the default templates' rewards.
BUDGET_PER_ADVERTISER = Decimal("2.5")


@dataclass
class LabResult:
    config: LabConfig
    experiment_key: str = ""
    report: dict = field(default_factory=dict)
    uplift_quality: dict = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    exploration: dict = field(default_factory=dict)
    # per arm: the world's expected incremental actives of the tasks it handed out (lab.oracle)
    expected: dict[str, dict] = field(default_factory=dict)
    # per arm: its true incremental actives, against a twin world without any task
    true_increments: dict[str, dict] = field(default_factory=dict)


Progress = Callable[[str], None]


class _Stages:
    """Times each stage and reports it as it starts and ends."""

    def __init__(self, progress: Progress, result: LabResult) -> None:
        self.progress, self.result = progress, result
        self.started = time.monotonic()

    def run(self, name: str, fn: Callable[[], object]) -> object:
        self.progress(f"[{time.monotonic() - self.started:7.1f} s] {name} ...")
        t0 = time.monotonic()
        value = fn()
        self.result.stage_seconds[name] = round(time.monotonic() - t0, 1)
        self.progress(
            f"[{time.monotonic() - self.started:7.1f} s] {name}: done in "
            f"{self.result.stage_seconds[name]:.1f} s"
        )
        return value


def lab_check(config: LabConfig) -> None:
    """Refuse a run that cannot work, before anything is written."""
    from advertisers.models import Advertiser
    from campaigns.services import templates_default_ensure  # noqa: F401  (import check)

    if config.arm_size < MIN_ADVERTISERS_PER_ARM:
        raise LabError(
            f"--advertisers {config.advertisers} gives {config.arm_size} per arm for "
            f"{len(ARMS)} arms; give at least {MIN_ADVERTISERS_PER_ARM * len(ARMS)}."
        )
    if config.budget < config.reward_cap / 10:
        raise LabError(
            f"the budget per arm ({config.budget}) is too small for one task (rewards go up "
            f"to {config.reward_cap}); raise --budget-per-arm."
        )
    if not 0 < config.exploration_share <= 0.5:
        raise LabError(f"--exploration-share must be in (0, 0.5], got {config.exploration_share}.")
    from campaigns.uplift import ESTIMATORS

    if config.uplift_estimator not in ESTIMATORS:
        raise LabError(
            f"--uplift-estimator must be one of {', '.join(ESTIMATORS)}, "
            f"got {config.uplift_estimator!r}."
        )
    if config.train_advertisers < 500:
        raise LabError(f"--train-advertisers must be >= 500, got {config.train_advertisers}.")
    if config.reuse_models:
        _models_required()
    elif Advertiser.objects.exists():
        raise LabError(
            "the lab builds its own world, and this database already holds advertisers: point "
            "DATABASE_URL at an empty database (or run `manage.py flush`), or pass "
            "--reuse-models to run on the world and models already here."
        )


def _models_required() -> None:
    from predictor.models import ModelVersion

    for kind in ("m2m", "single_task"):
        if not ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.READY).exists():
            raise LabError(
                f"--reuse-models: there is no trained {kind} model; train one "
                f"(`manage.py train --model {kind} --activate`) or run without --reuse-models."
            )


def lab_run(config: LabConfig, *, progress: Progress = print) -> LabResult:
    """One closed-loop run (module docstring); the report is the experiment's, plus the lab's."""
    lab_check(config)
    result = LabResult(config=config)
    stages = _Stages(progress, result)
    world_dir = config.out / f"world-{config.seed}"
    if not config.reuse_models:
        stages.run("simulate", lambda: _simulate(config, world_dir))
        stages.run("ingest", lambda: _ingest_world(world_dir))
        stages.run("train", lambda: _train(config))
    # The exploration campaign and the uplift features read M2M forecasts only.
    stages.run("predict (m2m)", lambda: _predict(("m2m",)))
    exploration = stages.run("exploration week", lambda: _exploration(config, world_dir))
    result.exploration = exploration
    result.uplift_quality = stages.run(
        "uplift model", lambda: _uplift_train(exploration, config.uplift_estimator)
    )
    stages.run("predict (m2m, single-task)", lambda: _predict(("m2m", "single_task")))
    experiment = stages.run("experiment: production", lambda: _experiment_start(config, world_dir))
    result.expected = _expected_gains(world_dir, experiment)
    result.true_increments = stages.run(
        "experiment: window", lambda: _experiment_window(config, world_dir, experiment)
    )
    result.experiment_key = experiment.key
    result.report = stages.run("analyse", lambda: _analyse(experiment))
    return result


# --- the world ------------------------------------------------------------------------------


def _simulate(config: LabConfig, world_dir: Path) -> None:
    call_command(
        "simulate",
        advertisers=config.advertisers,
        days=config.days,
        seed=config.seed,
        out=str(world_dir),
    )


def _ingest_world(world_dir: Path) -> None:
    # The world's last simulated day is the lab's "today": its dates may be past the real one.
    load_date = _world(world_dir).end_date
    call_command("ingest", str(world_dir), no_progress=True, load_date=load_date)


def _world(world_dir: Path):  # -> World
    from advertisers.simulator import World

    return World.load(world_dir / "world.npz")


def _advance(world_dir: Path, days: int, tasks: list[int]):  # -> (np.ndarray, pa.Table)
    """Deliver the tasks, run the world `days` on with them, ingest the new days; returns the
    ids of the tasks taken up (accepted) and the new daily stats."""
    from campaigns.models import TaskState
    from campaigns.services import tasks_transition_bulk

    for state in (TaskState.PUSHED, TaskState.DELIVERED):  # the push system sends every one
        tasks_transition_bulk(task_ids=tasks, to=state, actor="lab-push")
    ids, incentives = _incentives(tasks)
    world = _world(world_dir)
    out_file = world_dir / f"daily_stats_{world.end_date + timedelta(days=1)}.csv"
    advanced = world.advance(days=days, incentives=incentives, out_path=out_file)
    world.save(world_dir / "world.npz")
    accepted = ids[advanced.responded] if len(ids) else ids
    tasks_transition_bulk(task_ids=accepted.tolist(), to=TaskState.ACCEPTED, actor="lab-push")
    call_command("ingest", stats=str(out_file), no_progress=True, load_date=world.end_date)
    call_command("settle")
    return accepted, advanced.daily_stats


def _incentives(task_ids: list[int]) -> tuple[np.ndarray, list]:
    """(task ids in pk order, the simulator's Incentive of each)."""
    from advertisers.simulator import Incentive
    from campaigns.models import IncentiveTask

    rows = list(
        IncentiveTask.objects.filter(pk__in=task_ids)
        .order_by("pk")
        .values_list(
            "pk",
            "advertiser__advertiser_id",
            "scenario__code",
            "kind",
            "target",
            "reward",
            "valid_from",
            "valid_until",
        )
    )
    incentives = [
        Incentive(
            advertiser_id=a,
            scenario=s,
            kind=k,
            target=float(t),
            reward=float(r),
            valid_days=(u - f).days + 1,
        )
        for _, a, s, k, t, r, f, u in rows
    ]
    return np.array([r[0] for r in rows], dtype=np.int64), incentives


# --- models ---------------------------------------------------------------------------------


def _train(config: LabConfig) -> None:
    """M2M and the single-task baseline on the first `train_advertisers` advertisers (a random
    sample: the simulator draws advertisers independently, so their pks are in random order)."""
    from advertisers.models import Advertiser
    from predictor.services import TrainOptions, model_train, model_version_activate

    pks = Advertiser.objects.order_by("pk").values_list("pk", flat=True)
    first = pks.first()
    last = pks[min(config.train_advertisers, pks.count()) - 1]
    options = TrainOptions(
        epochs=config.epochs,
        stride=7,
        generator_lr_scale=1.0,
        seed=config.seed,
        advertiser_pk_range=(int(first), int(last) + 1),
        resume=False,
    )
    for kind in ("m2m", "single_task"):
        version = model_train(kind=kind, options=options)
        model_version_activate(version=version)


def _predict(kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        call_command("predict", kind=kind)


# --- exploration and uplift -----------------------------------------------------------------


def _templates():
    from campaigns.services import templates_default_ensure

    return templates_default_ensure()


def _exploration(config: LabConfig, world_dir: Path) -> dict:
    """A small randomised campaign: random candidates, random offers, a no-task holdout."""
    from advertisers.models import Advertiser
    from campaigns.models import Campaign
    from campaigns.services import campaign_create, campaign_produce

    n_tasks = max(int(config.exploration_share * Advertiser.objects.count()), 10)
    campaign = campaign_create(
        name=f"lab exploration (seed {config.seed})",
        budget=Decimal(n_tasks) * config.reward_cap,
        reward_cap=config.reward_cap,
        templates=_templates(),
        model_kind="m2m",
        policy=Campaign.Policy.BOTTOM_N,
        targeting=Campaign.Targeting.EXPLORATION,
        top_n=n_tasks,
        holdout_share=config.campaign_holdout_share,
    )
    produced = campaign_produce(campaign=campaign, actor="lab")
    accepted, _ = _advance(world_dir, EXPLORATION_DAYS, produced.task_ids)
    return {
        "campaign_id": campaign.pk,
        "tasks": len(produced.task_ids),
        "accepted": len(accepted),
        "holdout": campaign.holdouts.count(),
    }


def _uplift_train(exploration: dict, estimator: str) -> dict:
    """Fit the uplift model on the exploration campaign's tasks and holdout; register it."""
    from campaigns.models import Campaign
    from campaigns.services import uplift_model_train

    campaign = Campaign.objects.get(pk=exploration["campaign_id"])
    version = uplift_model_train(campaigns=[campaign], estimator=estimator)
    return version.quality


# --- the experiment -------------------------------------------------------------------------


def _experiment_start(config: LabConfig, world_dir: Path):  # -> Experiment
    from abtest.services import ArmSpec, experiment_create, experiment_start

    templates = _templates()
    experiment = experiment_create(
        key=f"lab-{config.seed}-{int(time.time())}",
        hypothesis="Uplift allocation wins back more advertisers per unit of budget than "
        "least-predicted-activity targeting; M2M targeting beats the single-task baseline.",
        template_ids=[t.pk for t in templates],
        targets_per_arm=config.arm_size,  # the budget binds, not the count
        budget_per_arm=config.budget,
        reward_cap=config.reward_cap,
        evaluation_days=config.evaluation_days,
        arms=[
            ArmSpec(name=name, role=role, model_kind=kind, targeting=targeting)
            for name, role, kind, targeting in ARMS
        ],
    )
    experiment_start(experiment=experiment)
    _oracle_produce(config, world_dir, experiment)
    return experiment


def _oracle_produce(config: LabConfig, world_dir: Path, experiment) -> None:
    """The oracle arm's tasks: the uplift policy's allocation with the world's true gains."""
    from abtest.models import Arm, Assignment
    from abtest.services import experiment_targets_record
    from campaigns.models import Campaign, IncentiveTask
    from campaigns.services import campaign_create, campaign_produce
    from lab.oracle import OracleScorer

    arm = Arm.objects.get(experiment=experiment, name=ORACLE_ARM)
    campaign = campaign_create(
        name=f"{experiment.key} / {ORACLE_ARM}",
        budget=experiment.budget_per_arm,
        reward_cap=experiment.reward_cap,
        templates=_templates(),
        model_kind="m2m",
        policy=Campaign.Policy.BOTTOM_N,
        targeting=Campaign.Targeting.UPLIFT,
        top_n=experiment.targets_per_arm,
        holdout_share=0.0,  # like every arm: the no-task arm measures the increment
    )
    Arm.objects.filter(pk=arm.pk).update(campaign_id=campaign.pk)
    members = Assignment.objects.filter(arm=arm).values("advertiser_id")
    campaign_produce(
        campaign=campaign,
        candidate_advertiser_ids=members,
        offer_scorer=OracleScorer(_world(world_dir)),
        actor=f"experiment {experiment.key}",
    )
    chosen = IncentiveTask.objects.filter(campaign=campaign).values_list("advertiser_id", flat=True)
    experiment_targets_record(arm=arm, advertiser_ids=set(chosen))


def _expected_gains(world_dir: Path, experiment) -> dict[str, dict]:
    """Per arm, before the window: the world's expected incremental active advertisers of the
    tasks it handed out (lab.oracle.oracle_gains, noise-free) and per 1,000 of the budget.
    The measured increments carry the sampling noise of a few thousand responders; this figure
    ranks the arms' choices without it."""
    from abtest.models import Arm
    from campaigns.models import IncentiveTask
    from lab.oracle import oracle_gains

    world = _world(world_dir)
    budget = float(experiment.budget_per_arm)
    out = {}
    for arm in Arm.objects.filter(experiment=experiment).order_by("pk"):
        task_ids = list(
            IncentiveTask.objects.filter(campaign_id=arm.campaign_id).values_list("pk", flat=True)
        )
        _, incentives = _incentives(task_ids) if arm.campaign_id else (None, [])
        gain_active, _ = oracle_gains(world, incentives)
        total = float(gain_active.sum())
        out[arm.name] = {
            "tasks": len(incentives),
            "expected_incremental_active": total,
            "per_1000_budget": 1000.0 * total / budget if budget else float("nan"),
        }
    return out


def _experiment_window(config: LabConfig, world_dir: Path, experiment) -> dict[str, dict]:
    """Run the evaluation window with every arm's tasks; returns each arm's true increments.

    The simulator draws every advertiser's churn and activity from streams keyed by day, not
    by the tasks (its docstring, "Incentive response"), so a twin of the world advanced over
    the same days without any task is each advertiser's counterfactual: active in the real
    window and not in the twin is an advertiser the tasks won back, and the reverse one they
    lost. Summed over an arm, that is its true increment, free of the sampling noise of the
    comparison with the no-task arm (which the report's measured figures carry)."""
    from abtest.models import Arm
    from campaigns.models import IncentiveTask

    campaigns = Arm.objects.filter(experiment=experiment).values("campaign_id")
    tasks = list(IncentiveTask.objects.filter(campaign__in=campaigns).values_list("pk", flat=True))
    twin = _world(world_dir).advance(days=config.evaluation_days).daily_stats
    _, factual = _advance(world_dir, config.evaluation_days, tasks)
    return _true_increments(experiment, _active_ids(factual), _active_ids(twin))


def _active_ids(daily_stats) -> np.ndarray:  # pa.Table -> sorted unique advertiser ids
    """Advertisers with a day of expenditure > 0 (any scenario), as the A/B module counts."""
    import pyarrow.compute as pc

    spent = daily_stats.filter(pc.greater(daily_stats["expenditure"], 0))
    return np.unique(np.asarray(spent["advertiser_id"].to_numpy(zero_copy_only=False), str))


def _true_increments(experiment, factual: np.ndarray, twin: np.ndarray) -> dict[str, dict]:
    from abtest.models import Arm, Assignment

    budget = float(experiment.budget_per_arm)
    out = {}
    for arm in Arm.objects.filter(experiment=experiment).order_by("pk"):
        members = np.asarray(
            Assignment.objects.filter(arm=arm).values_list("advertiser__advertiser_id", flat=True),
            dtype=str,
        )
        won = int(np.isin(members, factual).sum() - np.isin(members, twin).sum())
        out[arm.name] = {
            "incremental_active": won,
            "per_1000_budget": 1000.0 * won / budget if budget else float("nan"),
        }
    return out


def _analyse(experiment) -> dict:
    from abtest.selectors import experiment_report
    from abtest.services import experiment_analyse

    experiment.refresh_from_db()
    experiment_analyse(experiment=experiment, today=experiment.evaluation_end + timedelta(days=1))
    experiment.refresh_from_db()
    return experiment_report(experiment=experiment)


def database_label() -> str:
    return f"{connection.vendor} ({connection.settings_dict['NAME']})"


def today_window(as_of: date, days: int) -> tuple[date, date]:
    return as_of + timedelta(days=1), as_of + timedelta(days=days)
