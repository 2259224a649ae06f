"""What the networks are fed (InputSpec) and how each model family is sized (frozen configs).

`InputSpec` describes the batch contract: sequence length, the number of quantile bins of every
discretised channel, the width of the scenario vector, the profile fields and the task names in
target-column order. The feature builder creates it; the networks size their embedding tables
from it; the checkpoint stores it next to the model config so a model can be rebuilt from its
artifact alone.

Every model family has one frozen config dataclass. `dataclasses.asdict(config)` goes into the
checkpoint (and may pass through JSON, which turns tuples into lists: the configs turn them back).
Defaults follow the paper (5.1.3 and 5.3.2) where it gives a number: d_input=16, 2 attention
heads, d_view=256, scenario-knowledge width d=64, K=3 meta-unit layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

DEFAULT_TASKS = ("clicks", "expenditure", "active_days", "impressions", "gmv")


def _as_tuple(obj: Any, name: str) -> None:
    """Coerce list-valued fields (what JSON gives back) to tuples on a frozen dataclass."""
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))


def _check_positive(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class InputSpec:
    """Shapes and cardinalities of one batch (see the module docstring of predictor.networks).

    seq_len: T, days of history per sample.
    behaviour_bins: number of bins of each behaviour channel (NB entries; ids in [0, bins)).
    performance_bins: number of bins of each performance channel (NP entries).
    n_scenario: NS, width of the float scenario vector.
    profile_cardinalities: number of categories of each categorical profile field (NC entries).
    n_profile_num: NN, width of the float profile vector (may be 0).
    tasks: task names in the column order of "target" and of the model output (M entries).
    horizon_days: tau, the days the targets sum over (the support of active days is 0..tau).
    target_scales: the per-task divisors of "target" (M entries; empty = 1), so the
        distribution heads can count raw active days.
    n_scenario_static: how many leading columns of the scenario vector describe the scenario
        itself (kind, attributes) rather than its state at the as-of date (statistics, age);
        None: all of them. The calibration maps condition on these columns only.
    """

    seq_len: int
    behaviour_bins: tuple[int, ...]
    performance_bins: tuple[int, ...]
    n_scenario: int
    profile_cardinalities: tuple[int, ...]
    n_profile_num: int
    tasks: tuple[str, ...] = DEFAULT_TASKS
    horizon_days: int = 7
    target_scales: tuple[float, ...] = ()
    n_scenario_static: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "behaviour_bins",
            "performance_bins",
            "profile_cardinalities",
            "tasks",
            "target_scales",
        ):
            _as_tuple(self, name)
        _check_positive("InputSpec", "horizon_days", self.horizon_days)
        if self.target_scales and (
            len(self.target_scales) != len(self.tasks) or not all(s > 0 for s in self.target_scales)
        ):
            raise ValueError(
                f"InputSpec.target_scales must be {len(self.tasks)} positive numbers, one per"
                f" task, got {self.target_scales!r}."
            )
        _check_positive("InputSpec", "seq_len", self.seq_len)
        _check_positive("InputSpec", "n_scenario", self.n_scenario)
        if self.n_scenario_static is not None and not (
            isinstance(self.n_scenario_static, int)
            and 0 <= self.n_scenario_static <= self.n_scenario
        ):
            raise ValueError(
                f"InputSpec.n_scenario_static must be between 0 and n_scenario={self.n_scenario},"
                f" got {self.n_scenario_static!r}."
            )
        if not isinstance(self.n_profile_num, int) or self.n_profile_num < 0:
            raise ValueError(f"InputSpec.n_profile_num must be >= 0, got {self.n_profile_num!r}.")
        for name in ("behaviour_bins", "performance_bins", "profile_cardinalities"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"InputSpec.{name} is empty: give one cardinality per channel.")
            for i, bins in enumerate(values):
                _check_positive("InputSpec", f"{name}[{i}]", bins)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"InputSpec.tasks must be distinct task names, got {self.tasks!r}.")

    @property
    def n_behaviour(self) -> int:
        return len(self.behaviour_bins)

    @property
    def n_performance(self) -> int:
        return len(self.performance_bins)

    @property
    def n_profile_cat(self) -> int:
        return len(self.profile_cardinalities)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(**data)

    def expected_shapes(self, batch_size: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of every batch key for `batch_size` samples."""
        b, t = batch_size, self.seq_len
        return {
            "behaviour": ((b, t, self.n_behaviour), torch.int64),
            "performance": ((b, t, self.n_performance), torch.int64),
            "scenario": ((b, self.n_scenario), torch.float32),
            "profile_cat": ((b, self.n_profile_cat), torch.int64),
            "profile_num": ((b, self.n_profile_num), torch.float32),
            "target": ((b, self.n_tasks), torch.float32),
        }

    def check_batch(self, batch: dict[str, torch.Tensor], *, with_target: bool = False) -> None:
        """Raise ValueError naming the first key whose shape, dtype or values break the contract.

        Checks the bin ids against the cardinalities too (one pass over the integer tensors), so
        call it once per data set or chunk rather than on every training step.
        """
        batch_size = _batch_size(batch)
        for key, (shape, dtype) in self.expected_shapes(batch_size).items():
            if key == "target" and not with_target:
                continue
            if key not in batch:
                raise ValueError(f'batch is missing "{key}": expected {dtype} {list(shape)}.')
            tensor = batch[key]
            if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise ValueError(
                    f'batch["{key}"] is {tensor.dtype} {list(tensor.shape)}, expected {dtype} '
                    f"{list(shape)}; rebuild the features with the spec the model was built from."
                )
        for key, bins in (
            ("behaviour", self.behaviour_bins),
            ("performance", self.performance_bins),
            ("profile_cat", self.profile_cardinalities),
        ):
            ids = batch[key].reshape(-1, len(bins))
            limit = torch.tensor(bins, dtype=ids.dtype, device=ids.device)
            bad = (ids < 0) | (ids >= limit)
            if bool(bad.any()):
                channel = int(bad.any(dim=0).nonzero()[0, 0])
                raise ValueError(
                    f'batch["{key}"] channel {channel} has ids outside [0, {bins[channel]}); '
                    "the bins were fitted with different edges than the spec records."
                )
        for key in ("scenario", "profile_num", *(("target",) if with_target else ())):
            if not bool(torch.isfinite(batch[key]).all()):
                raise ValueError(f'batch["{key}"] holds NaN or infinite values.')
        if with_target and bool((batch["target"] < 0).any()):
            raise ValueError('batch["target"] holds negative values; Poisson targets are >= 0.')


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    if "behaviour" not in batch:
        raise ValueError('batch is missing "behaviour": expected int64 [B, T, NB].')
    return int(batch["behaviour"].shape[0])


class _Config:
    """Shared behaviour of the per-model configs: JSON round trip and checked construction."""

    kind: ClassVar[str]
    may_be_zero: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            _as_tuple(self, f.name)
            value = getattr(self, f.name)
            owner = type(self).__name__
            if isinstance(value, int) and not isinstance(value, bool):
                if f.name in self.may_be_zero and value == 0:
                    continue
                _check_positive(owner, f.name, value)
            elif isinstance(value, tuple):
                for i, width in enumerate(value):
                    _check_positive(owner, f"{f.name}[{i}]", width)

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(hparams) - known)
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for model kind {cls.kind!r}; "
                f"accepted: {sorted(known)}."
            )
        return cls(**hparams)


@dataclass(frozen=True)
class M2MConfig(_Config):
    """M2M (paper section 4) and its ablation switches (5.3.1)."""

    kind: ClassVar[str] = "m2m"
    may_be_zero: ClassVar[frozenset[str]] = frozenset({"tower_layers"})
    d_input: int = 16  # embedding width of every discretised input (5.1.3)
    d_day: int = 16  # width of a day vector after the day projection (embedding.FeatureEncoder)
    n_heads: int = 2  # heads of each sequence's self-attention (5.1.3)
    n_experts: int = 4  # k expert views (eq. 6)
    d_view: int = 256  # width of expert views and task views (5.1.3)
    d_task_embedding: int = 16  # lookup width before the task MLP (eq. 7)
    d_meta: int = 64  # d: width of scenario knowledge and of every meta unit (eq. 8-13)
    meta_layers: int = 3  # K layers per meta unit (eq. 10; best K in 5.3.2)
    tower_layers: int = 2  # L residual layers of the meta tower (eq. 18)
    meta_attention_per_task: bool = False  # one Meta_t per task (eq. 14) or one shared unit
    meta_contraction: str = "auto"  # "auto" | "outer" | "generate", see meta.MetaLayer
    use_transformer: bool = True  # ablation "w/o TL" when False
    use_meta_attention: bool = True  # ablation "w/o MA" when False
    use_meta_tower: bool = True  # ablation "w/o MT" when False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.meta_contraction not in ("auto", "outer", "generate"):
            raise ValueError(
                f"meta_contraction must be auto, outer or generate, got {self.meta_contraction!r}."
            )


@dataclass(frozen=True)
class SingleTaskConfig(_Config):
    """One independent Embedding&MLP per task."""

    kind: ClassVar[str] = "single_task"
    d_input: int = 16
    d_day: int = 16
    hidden: tuple[int, ...] = (256, 128)


@dataclass(frozen=True)
class SharedBottomConfig(_Config):
    kind: ClassVar[str] = "shared_bottom"
    d_input: int = 16
    d_day: int = 16
    bottom: tuple[int, ...] = (256, 256)
    tower: tuple[int, ...] = (64,)


@dataclass(frozen=True)
class CrossStitchConfig(_Config):
    kind: ClassVar[str] = "cross_stitch"
    d_input: int = 16
    d_day: int = 16
    hidden: tuple[int, ...] = (256, 128, 64)
    stitch_self: float = 0.9  # initial weight a column gives itself; the rest is shared evenly

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.stitch_self <= 1.0:
            raise ValueError(
                f"CrossStitchConfig.stitch_self must be in (0, 1], got {self.stitch_self}."
            )


@dataclass(frozen=True)
class MMoEConfig(_Config):
    kind: ClassVar[str] = "mmoe"
    d_input: int = 16
    d_day: int = 16
    n_experts: int = 4
    d_view: int = 256
    tower: tuple[int, ...] = (64,)


@dataclass(frozen=True)
class MRANConfig(_Config):
    kind: ClassVar[str] = "mran"
    d_input: int = 16
    d_model: int = 64  # width of every feature field and task token
    n_heads: int = 2
    tower: tuple[int, ...] = (64,)


@dataclass(frozen=True)
class CGCConfig(_Config):
    kind: ClassVar[str] = "cgc"
    may_be_zero: ClassVar[frozenset[str]] = frozenset({"n_shared_experts"})
    d_input: int = 16
    d_day: int = 16
    n_shared_experts: int = 2
    n_task_experts: int = 1
    d_view: int = 256
    tower: tuple[int, ...] = (64,)


CONFIGS: dict[str, type[_Config]] = {
    cls.kind: cls
    for cls in (
        M2MConfig,
        SingleTaskConfig,
        SharedBottomConfig,
        CrossStitchConfig,
        MMoEConfig,
        MRANConfig,
        CGCConfig,
    )
}
