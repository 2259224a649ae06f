"""Benchmark: training throughput of M2M against MMoE, and M2M's FLOP efficiency.

    python bench/train.py [--device auto|cpu|cuda] [--batch-size 256] [--seconds 20]
                          [--rounds 4] [--threads N] [--compile MODE] [--check]

In one run, on the same synthetic batches shaped like the real features (T=40 days, 4
behaviour and 8 performance channels of 33 bins, 15 scenario features, 3 profile fields) and
the same batch size, both models take optimisation steps through `predictor.training.train_step`
(the trainer's own step: forward, eq. 19 loss, backward, clipping, Adam). Time is split into
`--rounds` interleaved rounds per model (M2M, MMoE, M2M, ...) so that load from other programs
falls on both alike; the median round counts. `--compile default|reduce-overhead|max-autotune`
runs both models' forward and backward through `torch.compile` in that mode (on a GPU,
"reduce-overhead" also replays the step as CUDA graphs); the warm-up steps before timing
include the compilation. It prints:

- training samples/s of M2M and of MMoE, and their ratio (for information: at the paper's
  sizes M2M does about 2.7 times MMoE's arithmetic per sample, which caps the ratio near 0.37);
- M2M's FLOPs per training sample (forward + backward, torch.utils.flop_counter) and the
  float32 matmul rate of this machine measured in the same run, and the share of that rate the
  training step achieves: the target (>= 60%), since it measures our code, not the model's
  arithmetic;
- MMoE's FLOPs per sample and its share of the matmul rate, and the ratio M2M would reach if
  it ran at MMoE's FLOP/s: how much of the gap is arithmetic rather than efficiency;
- the share of the matmul rate M2M would need for the target, and the ratio it would reach
  if its whole training step ran at the matmul rate.

Exit status 1 with --check when the share misses the target. No database is needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from predictor import training
from predictor.networks import InputSpec, build_model

TARGET_SHARE = 0.6  # of the measured float32 matmul rate, M2M's training step
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
PAPER_RATIO = 0.5  # M2M / MMoE samples/s, the former target, still printed
SPEC = InputSpec(
    seq_len=40,
    behaviour_bins=(33,) * 4,
    performance_bins=(33,) * 8,
    n_scenario=15,
    profile_cardinalities=(6, 9, 6),
    n_profile_num=1,
)


def batches(n_batches: int, batch_size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Fixed synthetic batches (seeded): sparse-ish bins and Poisson targets of mean ~1."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        shapes = SPEC.expected_shapes(batch_size)
        batch = {
            "behaviour": torch.randint(0, 33, shapes["behaviour"][0], generator=g),
            "performance": torch.randint(0, 33, shapes["performance"][0], generator=g),
            "scenario": torch.randn(shapes["scenario"][0], generator=g),
            "profile_cat": torch.randint(0, 6, shapes["profile_cat"][0], generator=g),
            "profile_num": torch.randn(shapes["profile_num"][0], generator=g),
            "target": torch.poisson(torch.ones(shapes["target"][0]), generator=g),
        }
        out.append(training.batch_to(batch, device))
    return out


class Trainer:
    """A model, its optimizer and a cursor over the shared batches."""

    def __init__(
        self,
        kind: str,
        device: torch.device,
        config: training.TrainConfig,
        compile_mode: str | None = None,
    ) -> None:
        torch.manual_seed(0)
        self.kind, self.config, self.device = kind, config, device
        self.model = build_model(kind, SPEC).to(device).train()
        # what runs the step; the plain module is still what is clipped and penalised
        self.runner = torch.compile(self.model, mode=compile_mode) if compile_mode else self.model
        self.optimizer = training.make_optimizer(self.model, config)
        self.step_count = 0

    def warm_up(self, data: list[dict[str, torch.Tensor]], steps: int = 3) -> None:
        """Steps outside the timing: allocator, kernels, Adam's first state, compilation."""
        for _ in range(steps):
            self._step(data)
        self._sync()

    def _step(self, data: list[dict[str, torch.Tensor]]) -> int:
        batch = data[self.step_count % len(data)]
        training.train_step(self.runner, self.model, self.optimizer, batch, self.config)
        self.step_count += 1
        return len(batch["target"])

    def run(self, data: list[dict[str, torch.Tensor]], seconds: float) -> float:
        """Steps for about `seconds`; returns samples per second."""
        self._sync()
        started, samples = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            samples += self._step(data)
        self._sync()
        return samples / (time.perf_counter() - started)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def train_flops_per_sample(
    kind: str, batch: dict[str, torch.Tensor], device: torch.device
) -> float:
    """Forward + backward FLOPs of one training step, per sample (counted in float32)."""
    model = build_model(kind, SPEC).to(device)
    with FlopCounterMode(display=False) as counter:
        rate = model(batch)
        torch.nn.functional.poisson_nll_loss(rate, batch["target"], log_input=False).backward()
    return counter.get_total_flops() / len(batch["target"])


def matmul_rate(device: torch.device, seconds: float = 2.0, size: int = 2048) -> float:
    """Float32 matmul FLOP/s on this device, now."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        n += 1
        if device.type == "cuda" and n % 10 == 0:
            torch.cuda.synchronize(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * n / (time.perf_counter() - started)


def _rounds(rates: list[float]) -> str:
    return ", ".join(f"{r:,.0f}" for r in rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="timed seconds per model in all"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        help="run both models through torch.compile in this mode (default: eager)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the matmul share misses the target"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = training.resolve_device(args.device)
    if device.type == "cpu":
        training.flush_denormals()  # as the trainer does
        training.keep_freed_memory()
    config = training.TrainConfig(batch_size=args.batch_size, device=str(device))
    data = batches(8, args.batch_size, device)
    trainers = {kind: Trainer(kind, device, config, args.compile) for kind in ("m2m", "mmoe")}
    for trainer in trainers.values():
        trainer.warm_up(data)
    rates: dict[str, list[float]] = {kind: [] for kind in trainers}
    matmul: list[float] = []
    for _ in range(args.rounds):
        for kind, trainer in trainers.items():
            rates[kind].append(trainer.run(data, args.seconds / args.rounds))
        matmul.append(matmul_rate(device, seconds=min(2.0, args.seconds / args.rounds / 2)))
    m2m, mmoe = (statistics.median(rates[k]) for k in ("m2m", "mmoe"))
    flops = train_flops_per_sample("m2m", data[0], device)
    mmoe_flops = train_flops_per_sample("mmoe", data[0], device)
    peak = statistics.median(matmul)
    ratio = m2m / mmoe
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size},"
        f" {'torch.compile ' + args.compile if args.compile else 'eager'}"
    )
    print(f"M2M  training: {m2m:10,.0f} samples/s (rounds: {_rounds(rates['m2m'])})")
    print(f"MMoE training: {mmoe:10,.0f} samples/s (rounds: {_rounds(rates['mmoe'])})")
    print(f"M2M / MMoE: {ratio:.2f}x")
    print(f"M2M FLOPs per training sample (forward + backward): {flops / 1e6:,.1f} MFLOP")
    print(f"float32 matmul rate measured now: {peak / 1e9:,.1f} GFLOP/s")
    share = m2m * flops / peak
    print(
        f"M2M training achieves {m2m * flops / 1e9:,.1f} GFLOP/s = {share:.0%} of the matmul"
        f" rate (target >= {TARGET_SHARE:.0%}) -> {'met' if share >= TARGET_SHARE else 'MISSED'}"
    )
    print(
        f"MMoE FLOPs per training sample: {mmoe_flops / 1e6:,.1f} MFLOP, at"
        f" {mmoe * mmoe_flops / peak:.0%} of the matmul rate; at MMoE's FLOP/s, M2M's"
        f" FLOPs alone would give {mmoe_flops / flops:.2f}x"
    )
    needed = PAPER_RATIO * mmoe * flops / peak
    print(
        f"for {PAPER_RATIO}x MMoE M2M would have to run at {needed:.0%} of the matmul rate"
        f" ({needed / (mmoe * mmoe_flops / peak):.2f}x MMoE's share); at 100% it would reach"
        f" {peak / flops / mmoe:.2f}x"
    )
    if args.check and share < TARGET_SHARE:
        sys.exit(1)


if __name__ == "__main__":
    main()
