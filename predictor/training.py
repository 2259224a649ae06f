"""The plain training loop (paper 5.1.3), with no Django import: tensors in, a model out.

Read it top to bottom in `fit`: Adam(lr 2e-3, betas (0.9, 0.998), eps 1e-9), batches of 256,
the loss of eq. 19 (task-weighted Poisson loss of eq. 20 on per-task normalised targets, plus
alpha times the squared norms of the meta-unit and other weights), gradient clipping, up to 10
epochs with early stopping on the validation NMAE, and the best epoch's weights restored.

Choices the paper leaves open:
- "Gradient clipping is applied with range [-3, 3]" is read literally as element-wise value
  clipping (`clip_grad_value_`), not norm clipping.
- Early stopping and the kept epoch go by the overall NMAE of the validation set (eq. 22, mean
  over scenario x task cells: the metric the paper reports), `select_by="loss"` by the Poisson
  loss. The Poisson loss rewards predicting the mean of an overdispersed count, NMAE its
  median, and on the default world they disagree from epoch to epoch: Single Task's validation
  loss fell over epochs 1-3 while its validation NMAE went 0.573, 0.597, 0.594, and epoch 4,
  worse by the loss, was the best by NMAE (0.556; test 0.546 against 0.577 at epoch 3).
  The validation NMAE moved with the test NMAE at every epoch (docs/decisions.md).
- The meta units' generators (V_w, V_b of eq. 11-12) learn at lr / d_s, every other weight
  at lr (`generator_lr_scale`; 1.0 is the single rate of the paper). Under Adam each entry of
  V_w moves by about the same step, and a generated weight sums d_s of them weighted by S~, so
  with one rate it moves up to ||S~||_1 times as far per step as an ordinary weight. On three
  GPU seeds of the default world M2M's test NMAE went from 0.576 +- 0.020 to 0.561 +- 0.013
  (docs/decisions.md).
- Patience: stop after `patience` epochs without a better validation score, 4 by default.
  M2M's validation loss is the noisiest of the models (its generated weights jump early on):
  with a patience of 2, one seed in three of the default world stopped at epoch 3 with its
  best epoch the first, 0.64 NMAE against 0.61 and 0.59 for the other two. With 4 the
  baselines end where they did (within 0.005 NMAE) and M2M no longer stops on a blip
  (docs/evaluation.md).
- A checkpoint is written after every epoch (model, optimizer, epoch, best weights, RNG
  state). Starting again with the same checkpoint path and a compatible setup resumes after the
  last finished epoch; shuffling is seeded per epoch, so a resumed CPU run ends where an
  uninterrupted one would have.
- Determinism on CPU: the seed drives initialisation and shuffling, and deterministic
  algorithms are switched on for the duration of the fit. Subnormal floats are flushed to zero
  on the CPU (see `flush_denormals`: a 5x faster M2M step).
- CUDA: bf16 autocast for the forward pass (the loss is computed in float32) and batches
  copied from pinned host memory without blocking.
- Several GPUs: under torchrun (WORLD_SIZE > 1) the model is wrapped in
  DistributedDataParallel (NCCL on CUDA, Gloo on CPU), a DistributedSampler shards each epoch,
  every rank computes the same validation loss on the full validation set (so every rank takes
  the same stopping decision), and only rank 0 writes checkpoints.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from predictor.metrics import metric_table
from predictor.networks import build_model, l2_parameters, l2_penalties, poisson_loss
from predictor.networks.distribution import CONTINUOUS_TASKS, active_day_counts, p_inactive
from predictor.networks.meta import generator_parameters

log = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.998)
    eps: float = 1e-9
    grad_clip: float = 3.0  # element-wise, the paper's "range [-3, 3]"
    l2: float = 1e-6  # alpha of eq. 19
    # Learning rate of the meta units' generators (V_w, V_b of eq. 11-12) relative to `lr`:
    # None = 1 / d_s (see `make_optimizer`), 1.0 = the same rate as every other weight.
    generator_lr_scale: float | None = None
    task_weights: tuple[float, ...] | None = None  # lambda_t of eq. 19; None = all 1
    patience: int = 4  # epochs without a better validation score before stopping
    select_by: str = "nmae"  # the validation score: "nmae" (eq. 22, overall) or "loss"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_batch_size: int = 4096
    progress: bool = False
    checkpoint_path: str | None = None

    def fingerprint(self, *extra: Any) -> str:
        """What must match for a checkpoint to be resumed (not epochs: a run may be extended)."""
        fields_ = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("epochs", "progress", "checkpoint_path")
        }
        raw = json.dumps([fields_, *extra], sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class TrainResult:
    model: nn.Module  # the best epoch's weights, unwrapped from DDP
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_score: float = float("inf")  # of config.select_by
    resumed_from_epoch: int | None = None
    device: str = "cpu"
    stopped_early: bool = False


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size as torchrun sets them (one process when unset)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def dist_cleanup() -> None:
    """Leave the process group torchrun's ranks joined in `fit` (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str = "auto", info: DistInfo | None = None) -> torch.device:
    """auto: CUDA when there is one (the local rank's GPU under torchrun), else CPU."""
    info = info or dist_info()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} was asked for but CUDA is not available here; use --device cpu."
        )
    if name == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(name)


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU (x86 FTZ/DAZ) in this thread, for the block.

    Tiny gradients and Adam moments of M2M's generated weights drift into the subnormal range,
    where x86 arithmetic is many times slower: measured 5x on a whole M2M training step. Zero is
    as good a value for them, and it is deterministic. The flag lives in the thread's FPU state,
    which every later computation of the thread shares (a web or worker process, numpy, the
    test suite's own float generators), so the previous state comes back on exit.
    """
    before = _denormals_flushed_now()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _denormals_flushed_now() -> bool:
    tiny = np.array([1e-38], dtype=np.float32)
    return bool((tiny / np.float32(1e3))[0] == 0.0)  # a subnormal result, unless flushed


def flush_denormals() -> None:
    """`denormals_flushed` for the rest of this thread (benchmarks that time raw steps)."""
    torch.set_flush_denormal(True)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of glibc's malloc.h
_HEAP_BYTES = 1 << 30


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory of up to 1 GiB for reuse, for this process.

    By default it hands large freed blocks back to the system (unmapping them, or trimming the
    top of the heap), so the next equally large block faults in every page again. M2M makes
    and frees its generated weights (megabytes per layer) in every layer of every batch; the
    page faults cost about a tenth of CPU inference. A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_BYTES)
    except (OSError, AttributeError):
        pass


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def batch_to(batch: Tensors, device: torch.device) -> Tensors:
    """Widen compact integer tensors to int64 (the batch contract) and move to the device."""
    non_blocking = device.type == "cuda"
    out = {}
    for key, tensor in batch.items():
        tensor = tensor.to(device, non_blocking=non_blocking)
        out[key] = tensor.long() if not tensor.is_floating_point() else tensor
    return out


class _TensorDict(Dataset):
    """Samples held as a dict of tensors; `__getitems__` gathers a whole batch in one index."""

    def __init__(self, tensors: Tensors) -> None:
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: list[int]) -> Tensors:
        index = torch.as_tensor(idx, dtype=torch.long)
        return {k: v.index_select(0, index) for k, v in self.tensors.items()}


def _loader(
    data: _TensorDict, config: TrainConfig, epoch: int, info: DistInfo, cuda: bool
) -> DataLoader:
    if info.enabled:
        sampler: Any = DistributedSampler(
            data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        sampler = RandomSampler(data, generator=generator)
    # batch_size=None: the BatchSampler's index lists go straight to __getitem__.
    return DataLoader(
        data,
        sampler=BatchSampler(sampler, config.batch_size, drop_last=False),
        batch_size=None,
        pin_memory=cuda,
    )


def _penalty(model: nn.Module) -> torch.Tensor:
    """||W_meta||^2 + ||W_other||^2 of eq. 19 (one alpha for both, as in the paper)."""
    meta, other = l2_penalties(model)
    return meta + other


def _penalty_gradient_add(model: nn.Module, alpha: float) -> None:
    """Add the gradient of alpha * (||W_meta||^2 + ||W_other||^2) (eq. 19), 2 alpha W, to each
    penalised weight's gradient: what back-propagating the penalty adds, without building its
    graph (that graph cost a tenth of an M2M training step on a CPU)."""
    meta, other = l2_parameters(model)
    for param in meta + other:
        if param.grad is None:
            param.grad = param.detach() * (2 * alpha)
        else:
            param.grad.add_(param.detach(), alpha=2 * alpha)


def _data_loss(
    model: nn.Module, core: nn.Module, batch: Tensors, weights: torch.Tensor | None
) -> torch.Tensor:
    """The Poisson term of eq. 19 (task-weighted) for one batch, plus the distribution heads'
    loss, which reaches the heads only (networks.distribution)."""
    use_amp = batch["target"].is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
        out = model(batch, with_distribution=True)
    loss = poisson_loss(out.rate.float(), batch["target"], task_weights=weights)
    return loss + core.loss_terms(out, batch["target"])


def train_step(
    model: nn.Module,
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Tensors,
    config: TrainConfig,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step on one batch (already on the device); returns the detached loss
    of eq. 19, regulariser and distribution heads included.

    `model` is what runs the forward pass (the DDP wrapper under torchrun), `core` the module
    whose parameters are penalised and clipped. The regulariser's gradient is added to the
    data term's before clipping, exactly as if the sum had been back-propagated.
    """
    loss = _data_loss(model, core, batch, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    loss = loss.detach()
    if config.l2 > 0:
        _penalty_gradient_add(core, config.l2)
        with torch.no_grad():
            loss = loss + config.l2 * _penalty(core)
    nn.utils.clip_grad_value_(core.parameters(), config.grad_clip)
    optimizer.step()
    return loss


TASK_WEIGHTINGS = ("deviance", "equal")
SELECTIONS = ("nmae", "loss")  # TrainConfig.select_by


def task_weights_for(weighting: str, target: torch.Tensor) -> tuple[float, ...] | None:
    """lambda_t of eq. 19 from the training targets [N, M].

    "equal": every lambda_t = 1. "deviance": lambda_t proportional to 1 / D0_t, where
    D0_t = mean(y log(y / mean y)) is half the Poisson null deviance per sample of task t
    (what a constant prediction of the mean leaves to explain), scaled so the lambdas average
    1. Each task then weighs by the share of its own deviance the model explains, so a
    heavy-tailed task (impressions: D0 2.5) does not drown a nearly deterministic one (active
    days: D0 0.3) in the shared layers, as a sum of raw losses does.
    """
    if weighting not in TASK_WEIGHTINGS:
        raise ValueError(f"task weighting must be one of {TASK_WEIGHTINGS}, got {weighting!r}.")
    if weighting == "equal":
        return None
    y = target.double()
    mean = y.mean(dim=0).clamp_min(torch.finfo(torch.float64).tiny)  # [M]
    null_deviance = torch.xlogy(y, y / mean).mean(dim=0)  # [M]; 0 log 0 = 0
    inverse = torch.where(null_deviance > 0, 1 / null_deviance, torch.zeros_like(null_deviance))
    if not bool((inverse > 0).any()):
        return None  # nothing varies: no task to favour
    inverse = torch.where(inverse > 0, inverse, inverse[inverse > 0].mean())
    return tuple(float(w) for w in inverse / inverse.mean())


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Adam:
    """Adam with the paper's settings (5.1.3), fused: one pass over each parameter per step.

    The meta units' generators get `lr * generator_lr_scale` (1 / d_s by default). Adam moves
    every entry of V_w by about the same step, and a generated weight W = V_w S~ + v_w sums d_s
    of them weighted by S~: with the common rate, W would move up to ||S~||_1 times as far per
    step as an ordinary weight (docs/decisions.md).

    On the CPU torch's default Adam loops over the parameters with one kernel per operation;
    the fused kernel was 2.4x faster on M2M's 4 M parameters (15% of a CPU training step).
    """
    generators = generator_parameters(model)
    generator_ids = {id(param) for param, _ in generators}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if id(p) not in generator_ids]}
    ]
    scale = config.generator_lr_scale
    for d_scenario in sorted({d for _, d in generators}):
        groups.append(
            {
                "params": [p for p, d in generators if d == d_scenario],
                "lr": config.lr * (1.0 / d_scenario if scale is None else scale),
            }
        )
    return torch.optim.Adam(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=True)


@dataclass(frozen=True)
class Predicted:
    """A model's predictive distribution for N samples of M tasks (normalised units)."""

    rates: np.ndarray  # [N, M] float32 Poisson means (eq. 20)
    quantiles: np.ndarray  # [N, M, 3] float32 10th, 50th, 90th percentiles
    p_inactive: np.ndarray  # [N] float32 P(no active day in the horizon); NaN without the task


def interval_bounds(
    quantiles: np.ndarray, scales: Sequence[float], tasks: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The 80% interval, low and high [N, M], in the data's units, from normalised quantiles
    [N, M, 3]. A count's 10th and 90th percentiles are whole numbers: the pinball loss learns
    them to within its step (1.006 for 1), so a count's ends are rounded, else a count equal to
    the 10th percentile would fall outside. Ends are sorted and non-negative."""
    raw = quantiles[..., [0, 2]].astype(np.float64) * np.asarray(scales, np.float64)[:, None]
    low, high = np.maximum(np.sort(raw, axis=-1), 0.0).transpose(2, 0, 1)  # [N, M] each
    counts = np.array([t not in CONTINUOUS_TASKS for t in tasks])
    low[:, counts], high[:, counts] = np.round(low[:, counts]), np.round(high[:, counts])
    return low, high


def predict_rates(
    model: nn.Module,
    tensors: Tensors,
    *,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> np.ndarray:
    """Model output [N, M] (normalised rates) for every sample, in float32."""
    return predict_outputs(model, tensors, device=device, batch_size=batch_size).rates


def predict_outputs(
    model: nn.Module,
    tensors: Tensors,
    *,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    calibrated: bool = True,
) -> Predicted:
    """Means, quantiles and P(inactive) for every sample (see `Predicted`), through the
    head's calibration maps unless `calibrated` is False.

    By default 256 samples a batch on the CPU, 8,192 on a GPU. 256 keep M2M's generated
    weights (4 MiB a layer) near the CPU caches; larger batches were slower per sample on CPU
    (1,024: 10% slower), while a GPU needs large batches to be more than kernel launches. On a
    CPU with several threads the batches are shared out to one Python thread per torch thread,
    each running its ops single-threaded: the many small matmuls of the meta units scale better
    that way than split across threads op by op (measured 1.2 times the throughput on two
    cores).
    """
    device = torch.device(device)
    model.eval()
    n = len(next(iter(tensors.values())))
    m = model.spec.n_tasks
    if n == 0:
        empty = np.zeros((0, m), dtype=np.float32)
        return Predicted(empty, np.zeros((0, m, 3), np.float32), np.zeros(0, np.float32))
    inputs = {k: v for k, v in tensors.items() if k != "target"}
    batch_size = batch_size or (256 if device.type == "cpu" else 8192)
    horizon = model.spec.horizon_days

    @torch.inference_mode()
    def score(lo: int) -> np.ndarray:
        """[b, M + 3 M + 1]: rates, quantiles flattened, P(inactive)."""
        batch = batch_to({k: v[lo : lo + batch_size] for k, v in inputs.items()}, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch, with_distribution=True)
        rate = out.rate.float()
        if out.active_shape is None:
            p = torch.full_like(rate[:, 0], float("nan"))
        else:
            p = p_inactive(out.active_shape.float(), horizon)
        quantiles = out.quantiles.float()
        if calibrated:
            quantiles, p = model.distribution.calibrated(quantiles, p, batch["scenario"].float())
        return torch.cat([rate, quantiles.flatten(1), p[:, None]], 1).cpu().numpy()

    starts = range(0, n, batch_size)
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    if workers == 1 or len(starts) == 1:
        if device.type == "cpu":
            keep_freed_memory()
        with denormals_flushed() if device.type == "cpu" else nullcontext():
            return _split_outputs(np.concatenate([score(lo) for lo in starts]), m)

    def score_on_cpu(lo: int) -> np.ndarray:
        with denormals_flushed():  # per thread: the flag lives in each thread's FPU state
            return score(lo)

    keep_freed_memory()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return _split_outputs(np.concatenate(list(pool.map(score_on_cpu, starts))), m)
    finally:
        torch.set_num_threads(workers)


def _split_outputs(packed: np.ndarray, m: int) -> Predicted:
    return Predicted(
        rates=packed[:, :m],
        quantiles=packed[:, m : 4 * m].reshape(-1, m, 3),
        p_inactive=packed[:, 4 * m],
    )


@torch.inference_mode()
def validation_scores(
    model: nn.Module,
    tensors: Tensors,
    *,
    device: torch.device,
    batch_size: int,
    weights: torch.Tensor | None,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """The early-stopping scores: mean Poisson loss (no penalty) and overall NMAE.

    NMAE is the mean over group x task cells of eq. 22 (groups: each sample's scenario; None
    is one group). Each cell's NMAE does not change when a task's targets and predictions are
    scaled alike, so the normalised targets give the NMAE of the raw ones. Undefined: inf.
    """
    model.eval()
    n, tasks = tensors["target"].shape
    total, rates = 0.0, []
    with torch.inference_mode():
        for lo in range(0, n, batch_size):
            batch = batch_to({k: v[lo : lo + batch_size] for k, v in tensors.items()}, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                rate = model(batch).float()
            loss = poisson_loss(rate, batch["target"], task_weights=weights)
            total += float(loss) * len(rate)
            rates.append(rate.cpu())
    labels = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    predicted = torch.cat(rates).numpy() if rates else np.zeros((0, tasks), dtype=np.float32)
    table = metric_table(
        tensors["target"].numpy(), predicted, labels, [str(t) for t in range(tasks)]
    )
    nmae = table["overall"]["nmae"]
    return {"loss": total / max(n, 1), "nmae": float("inf") if nmae is None else nmae}


@dataclass(frozen=True)
class ScoredRun:
    rates: np.ndarray  # [N, M] normalised test rates
    best_epoch: int
    quantiles: np.ndarray  # [N, M, 3] normalised 10th, 50th, 90th percentiles
    p_inactive: np.ndarray  # [N] P(no active day in the horizon)


def fit_and_predict(
    kind: str,
    spec: dict[str, Any],
    hparams: dict[str, Any],
    data: tuple[Tensors, Tensors, Tensors],
    config: TrainConfig,
    valid_groups: np.ndarray | None = None,
    threads: int | None = None,
) -> ScoredRun:
    """Train a fresh `kind` model on data = (train, valid, test) and score its test split.

    Everything in and out is plain data, so `evaluate` can run it in worker processes, which
    import this Django-free module only; `threads` caps torch's threads in such a worker.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    train, valid, test = data
    fitted = fit(
        lambda: build_model(kind, spec, **hparams), train, valid, config, valid_groups=valid_groups
    )
    out = predict_outputs(fitted.model, test, device=fitted.device)
    return ScoredRun(
        rates=out.rates,
        best_epoch=fitted.best_epoch,
        quantiles=out.quantiles,
        p_inactive=out.p_inactive,
    )


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s belongs to another setup; starting from scratch", path)
        return None
    return state


def _batches(loader: DataLoader, device: torch.device) -> Iterator[Tensors]:
    for batch in loader:
        yield batch_to(batch, device)


def fit(
    build: Callable[[], nn.Module],
    train: Tensors,
    valid: Tensors,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, list[dict[str, float]]], None] | None = None,
    fingerprint_extra: Any = None,
    valid_groups: np.ndarray | None = None,
) -> TrainResult:
    """Train a fresh model from `build()` on `train`, stop early on `valid`, return the best.

    valid_groups: the scenario of each validation sample, for the NMAE's scenario x task cells.
    """
    if config.select_by not in SELECTIONS:
        raise ValueError(f"select_by must be one of {SELECTIONS}, got {config.select_by!r}.")
    info = dist_info()
    device = resolve_device(config.device, info)
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        keep_freed_memory()
    try:
        with denormals_flushed() if device.type == "cpu" else nullcontext():
            return _fit(
                build,
                train,
                valid,
                config,
                info,
                device,
                on_epoch,
                fingerprint_extra,
                valid_groups,
            )
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _fit(
    build: Callable[[], nn.Module],
    train: Tensors,
    valid: Tensors,
    config: TrainConfig,
    info: DistInfo,
    device: torch.device,
    on_epoch: Callable[[int, list[dict[str, float]]], None] | None,
    fingerprint_extra: Any,
    valid_groups: np.ndarray | None,
) -> TrainResult:
    if len(train["target"]) == 0 or len(valid["target"]) == 0:
        raise ValueError("training needs at least one training and one validation sample.")
    seed_everything(config.seed)
    core = build().to(device)
    model: nn.Module = core
    if info.enabled:
        model = DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = make_optimizer(core, config)
    weights = torch.tensor(config.task_weights, device=device) if config.task_weights else None
    cuda = device.type == "cuda"
    if cuda:  # page-locked host memory: the DataLoader's copies to the GPU do not block
        train = {k: v.pin_memory() for k, v in train.items()}
    data = _TensorDict(train)
    valid_dev = valid

    checkpoint = Path(config.checkpoint_path) if config.checkpoint_path else None
    fingerprint = config.fingerprint(
        len(data), len(valid["target"]), fingerprint_extra, info.world_size
    )
    result = TrainResult(model=core, device=str(device))
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, start_epoch = 0, 0
    state = _load_checkpoint(checkpoint, fingerprint)
    if state is not None:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        best_state, bad_epochs = state["best_state"], int(state["bad_epochs"])
        result.history = [dict(h) for h in state["history"]]
        result.best_epoch, result.best_valid_score = (
            int(state["best_epoch"]),
            float(state["best_valid"]),
        )
        start_epoch = result.resumed_from_epoch = int(state["epoch"]) + 1
        log.info("resuming from %s after epoch %d", checkpoint, start_epoch)

    for epoch in range(start_epoch, config.epochs):
        if bad_epochs >= config.patience:
            result.stopped_early = True
            break
        started = time.perf_counter()
        model.train()
        loader = _loader(data, config, epoch, info, cuda)
        bar = tqdm(
            _batches(loader, device),
            total=len(loader),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not (config.progress and info.is_main),
            leave=False,
        )
        running, seen = torch.zeros((), device=device), 0
        for step, batch in enumerate(bar):
            running += train_step(model, core, optimizer, batch, config, weights)
            seen += 1
            if step % 20 == 0:  # .item() waits for the GPU: only now and then for the bar
                bar.set_postfix(loss=f"{float(running) / seen:.4f}")
        bar.close()
        scores = validation_scores(
            core,
            valid_dev,
            device=device,
            batch_size=config.eval_batch_size,
            weights=weights,
            groups=valid_groups,
        )
        result.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(running) / max(seen, 1),
                "valid_loss": scores["loss"],
                "valid_nmae": scores["nmae"],
                "seconds": time.perf_counter() - started,
            }
        )
        score = scores[config.select_by]
        if score < result.best_valid_score:
            result.best_valid_score, result.best_epoch, bad_epochs = score, epoch + 1, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in core.state_dict().items()})
        else:
            bad_epochs += 1
        if checkpoint is not None and info.is_main:
            _save_checkpoint(
                checkpoint,
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "model": core.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "best_state": best_state,
                    "best_valid": result.best_valid_score,
                    "best_epoch": result.best_epoch,
                    "bad_epochs": bad_epochs,
                    "history": result.history,
                },
            )
        if config.progress and info.is_main:
            h = result.history[-1]
            tqdm.write(
                f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}, valid loss"
                f" {h['valid_loss']:.4f}, valid NMAE {h['valid_nmae']:.4f} ({h['seconds']:.1f}s)"
            )
        if on_epoch is not None:
            on_epoch(epoch + 1, result.history)
        if bad_epochs >= config.patience:
            result.stopped_early = True
            break
    if best_state is not None:
        core.load_state_dict(best_state)
    core.eval()
    calibrate(core, valid, device=device, batch_size=config.eval_batch_size)
    return result


def calibrate(model: nn.Module, valid: Tensors, *, device: torch.device, batch_size: int) -> None:
    """Fit the distribution head's calibration maps on the validation split (distribution.py)."""
    raw = predict_outputs(model, valid, device=device, batch_size=batch_size, calibrated=False)
    spec = model.spec
    target = valid["target"].float()
    index = spec.tasks.index("active_days") if "active_days" in spec.tasks else None
    inactive = (
        active_day_counts(target, spec, index) == 0
        if index is not None
        else torch.zeros(len(target), dtype=torch.bool)
    )
    head = model.distribution
    head.fit_calibration(
        torch.from_numpy(raw.quantiles).to(head.shift.device),
        torch.from_numpy(raw.p_inactive).to(head.shift.device),
        target.to(head.shift.device),
        inactive.to(head.shift.device),
        valid["scenario"].float().to(head.shift.device),
    )
