"""The CUDA paths: bf16 training and scoring, a GPU-trained version scored on the CPU, NCCL DDP.

CI has no GPU, so these are skipped there; they run on a machine with one (the NCCL test needs
two, since NCCL will not put two ranks on one device).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command

from predictor import services, training
from predictor.models import ModelVersion

sys.path.insert(0, str(Path(__file__).parent))
from test_registry import TINY, world  # noqa: F401  (the fixture is used by name)
from test_training import CONFIG, TRAIN, VALID, _build, train_under_torchrun

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
ON_CUDA = replace(CONFIG, device="cuda")


def test_it_trains_m2m_on_cuda_in_bf16_autocast():
    result = training.fit(_build, TRAIN, VALID, replace(ON_CUDA, epochs=4))
    assert result.device.startswith("cuda")
    params = list(result.model.parameters())
    assert all(p.is_cuda and p.dtype == torch.float32 for p in params)  # autocast keeps fp32
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_it_scores_on_cuda_as_on_the_cpu_within_bf16_precision():
    model = training.fit(_build, TRAIN, VALID, CONFIG).model
    on_cpu = training.predict_rates(model, VALID, device="cpu")
    on_gpu = training.predict_rates(model.to("cuda"), VALID, device="cuda")
    assert on_gpu.dtype == np.float32 and on_gpu.shape == on_cpu.shape
    assert np.isfinite(on_gpu).all()
    # bf16 keeps 8 bits of mantissa: a few per cent per value, far less on the mean.
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0.1, atol=0.05 * on_cpu.mean())
    assert abs(on_gpu.mean() / on_cpu.mean() - 1) < 0.02


def test_a_version_trained_on_cuda_scores_on_the_cpu(world):  # noqa: F811
    version = services.model_train(kind="m2m", options=replace(TINY, device="cuda"))
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.READY
    assert version.metrics["device"].startswith("cuda")
    services.model_version_activate(version=version)
    call_command("predict", "--kind", "m2m", "--device", "cpu")
    rows = version.predictions.values_list("clicks", "expenditure", "active_days")
    assert rows and np.isfinite(np.array(list(rows), dtype=float)).all()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs a GPU per rank")
def test_it_keeps_ranks_in_step_under_torchrun_with_nccl(tmp_path: Path):
    rank0, rank1 = train_under_torchrun(tmp_path, "cuda")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
