"""Benchmark: end-to-end batch scoring, from DailyStat rows in PostgreSQL to stored predictions.

    BENCH_DATABASE_URL=postgres://USER@HOST:5432/incentive_bench_predict python bench/predict.py
        [--advertisers 10000] [--days 70] [--repeats 3] [--chunk-size 5000] [--threads N]
        [--hparams JSON] [--device auto|cpu|cuda] [--rebuild] [--check]

Needs a PostgreSQL database reserved for the benchmark (its name must contain "bench"; it is
created if missing and migrated; its data is replaced on --rebuild or when empty). Steps:

1. simulate `--advertisers` advertisers over `--days` days (advertisers.simulator) and load
   them through the real ingestion (kept between runs);
2. fit a feature spec on the data and register an M2M version with the paper's default
   architecture (or `--hparams`) and untrained weights: scoring costs the same whatever the
   weights are, and training the full model on a CPU would take far longer than the benchmark;
3. time a whole prediction run at the last day with data, the path `manage.py predict` and the
   workers take (per chunk: one COPY of the rows, vectorised features, batched inference,
   COPY + one upsert), `--repeats` times (every repeat rewrites the same rows), and print the
   median in (advertiser, scenario) pairs per second against the 5,000 pairs/s target;
4. print where the time goes for one chunk holding everyone: rows -> features, inference,
   upsert; and the model's forward FLOPs per pair against this machine's float32 matmul rate,
   the ceiling that inference alone puts on the end-to-end figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_database import database_ensure

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/incentive_bench_predict"
TARGET_PAIRS_PER_S = 5000.0
ROOT = Path(__file__).resolve().parents[1]


def setup_django(url: str, artifact_dir: Path) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["ARTIFACT_DIR"] = str(artifact_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "incentive_platform.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def data_load(*, advertisers: int, days: int, rebuild: bool) -> None:
    """Simulate and ingest a world unless one of the asked size is already there."""
    from django.db import connection

    from advertisers.ingestion import ingest_files
    from advertisers.models import Advertiser, DailyStat
    from advertisers.simulator import simulate

    if not rebuild and Advertiser.objects.count() == advertisers and DailyStat.objects.exists():
        return
    with connection.cursor() as cursor:  # a dedicated benchmark database: start from empty
        cursor.execute(
            "TRUNCATE advertisers_dailystat, advertisers_advertiser, advertisers_scenario,"
            " predictor_modelversion CASCADE"
        )
    started = time.perf_counter()
    world = simulate(advertisers=advertisers, days=days, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        files = world.write(tmp)
        ingest_files(
            scenarios=files["scenarios"],
            advertisers=files["advertisers"],
            stats=files["daily_stats"],
            load_date=world.end_date,
        )
    print(
        f"loaded {DailyStat.objects.count():,} daily stats in {time.perf_counter() - started:.1f}s"
    )


def version_register(hparams: dict) -> object:
    """Fit the feature spec on the data and register an untrained M2M with it."""
    from datetime import timedelta

    import numpy as np

    from predictor import features, services
    from predictor.networks import build_model

    first, last = features.data_window()
    scenarios = features.scenarios_load()
    cube = features.cube_load(start=first, end=last, scenario_pks=scenarios.pks)
    advertisers = features.advertisers_load(cube.advertiser_pks)
    train_as_of = np.array(
        [last - timedelta(days=7 + 7 * k) for k in (2, 1, 0)], dtype="datetime64[D]"
    )
    activity = features.scenario_activity_from_cube(cube, cube.day_index(train_as_of))
    spec = features.spec_fit(
        cube,
        scenarios,
        advertisers,
        train_as_of,
        activity,
        window_days=40,
        horizon_days=7,
        n_bins=32,
    )
    model = build_model("m2m", spec.input_spec(), **hparams)
    return services.model_version_register(
        kind="m2m", model=model, spec=spec, hyperparameters={"hparams": hparams, "untrained": True}
    )


def matmul_rate(device: object, seconds: float = 1.0) -> float:
    """Matmul FLOP/s of this machine now, in the precision inference runs in.

    Float32 on the CPU (same threads as the run); bf16 on a GPU, as under autocast.
    """
    import torch

    cuda = device.type == "cuda"
    size, dtype = (4096, torch.bfloat16) if cuda else (1024, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        n += 1
        if cuda and n % 20 == 0:
            torch.cuda.synchronize(device)
    if cuda:
        torch.cuda.synchronize(device)
    return 2 * size**3 * n / (time.perf_counter() - started)


def forward_flops_per_pair(model: object, spec: object) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    n = 64
    shapes = spec.input_spec().expected_shapes(n)
    device = next(model.parameters()).device
    batch = {
        k: (
            torch.zeros(s, dtype=d, device=device)
            if d == torch.int64
            else torch.randn(s, device=device)
        )
        for k, (s, d) in shapes.items()
        if k != "target"
    }
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops() / n


def breakdown(version: object, loaded: object, as_of: object) -> dict[str, float]:
    """Seconds per phase for everyone in one chunk."""
    import numpy as np

    from predictor import features, services, training

    t0 = time.perf_counter()
    samples = features.samples_at(spec=loaded.spec, as_of=as_of)
    t1 = time.perf_counter()
    rates = training.predict_rates(loaded.model, samples.tensors(loaded.spec), device=loaded.device)
    values = rates.astype(np.float64) * np.asarray(loaded.spec.target_scales)
    t2 = time.perf_counter()
    services.predictions_store(
        model_version=version,
        as_of=as_of,
        advertiser_pks=samples.advertiser_pks,
        scenario_pks=samples.scenario_pks,
        values=values,
    )
    t3 = time.perf_counter()
    return {"pairs": len(samples), "features": t1 - t0, "inference": t2 - t1, "store": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--advertisers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--hparams", type=json.loads, default={}, help="M2M hyperparameters as JSON"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda")
    parser.add_argument("--rebuild", action="store_true", help="simulate and load the data again")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    database_ensure(url)
    setup_django(url, ROOT / "var" / "bench-artifacts")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from predictor import services

    data_load(advertisers=args.advertisers, days=args.days, rebuild=args.rebuild)
    version = version_register(args.hparams)
    as_of = services.latest_data_date()
    started = time.perf_counter()
    loaded = services.model_version_load(version=version, device=args.device)
    print(f"model load (once per worker process): {time.perf_counter() - started:.2f}s")

    rates = []
    for _ in range(args.repeats):
        run = services.prediction_run_create(
            model_version=version, as_of=as_of, chunk_size=args.chunk_size
        )
        started = time.perf_counter()
        run = services.prediction_run_execute(run=run, loaded=loaded)
        seconds = time.perf_counter() - started
        rates.append(run.pairs_scored / seconds)
        print(
            f"run {run.pk}: {run.pairs_scored:,} pairs in {run.chunks_total} chunk(s),"
            f" {seconds:.2f}s"
        )
    median = statistics.median(rates)

    phases = breakdown(version, loaded, as_of)
    flops = forward_flops_per_pair(loaded.model, loaded.spec)
    peak = matmul_rate(loaded.device)
    n = phases["pairs"]
    print()
    print(
        f"device: {loaded.device}, torch threads: {torch.get_num_threads()},"
        f" advertisers: {args.advertisers:,}, as-of {as_of}"
    )
    print(
        f"end to end (median of {args.repeats}): {median:,.0f} pairs/s"
        f" (target {TARGET_PAIRS_PER_S:,.0f})"
    )
    for phase in ("features", "inference", "store"):
        print(f"  {phase:<9} {phases[phase]:6.2f}s  {n / phases[phase]:>10,.0f} pairs/s")
    without_model = n / (phases["features"] + phases["store"])
    print(f"  rows -> features -> upsert without inference: {without_model:,.0f} pairs/s")
    print(
        f"M2M forward: {flops / 1e6:.1f} MFLOP per pair; matmul here:"
        f" {peak / 1e9:.1f} GFLOP/s; inference ceiling {peak / flops:,.0f} pairs/s;"
        f" achieved {n * flops / phases['inference'] / peak:.0%} of the matmul rate"
    )
    met = median >= TARGET_PAIRS_PER_S
    print("target met" if met else "target MISSED")
    if args.check and not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
