"""The plain training loop: determinism, checkpoint resume, early stopping, DDP on CPU."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor import training
from predictor.networks import InputSpec, build_model, l2_penalties, poisson_loss

SPEC = InputSpec(
    seq_len=6,
    behaviour_bins=(5, 5, 5, 5),
    performance_bins=(6,) * 8,
    n_scenario=4,
    profile_cardinalities=(6, 3, 6),
    n_profile_num=1,
)
TINY_M2M = {
    "d_input": 4,
    "n_experts": 2,
    "d_view": 16,
    "d_task_embedding": 4,
    "d_meta": 8,
    "meta_layers": 2,
    "tower_layers": 1,
}
CONFIG = training.TrainConfig(epochs=3, batch_size=32, patience=5, seed=7, device="cpu")


def _tensors(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Learnable synthetic samples: the targets grow with the last day's bins."""
    g = torch.Generator().manual_seed(seed)
    behaviour = torch.randint(0, 5, (n, 6, 4), generator=g, dtype=torch.uint8)
    performance = torch.randint(0, 6, (n, 6, 8), generator=g, dtype=torch.uint8)
    level = performance[:, -1, :5].float() / 3
    return {
        "behaviour": behaviour,
        "performance": performance,
        "scenario": torch.randn(n, 4, generator=g),
        "profile_cat": torch.randint(0, 3, (n, 3), generator=g),
        "profile_num": torch.randn(n, 1, generator=g),
        "target": torch.poisson(level, generator=g),
    }


TRAIN, VALID = _tensors(160, 1), _tensors(48, 2)


def _build() -> torch.nn.Module:
    return build_model("m2m", SPEC, **TINY_M2M)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_it_gives_identical_models_for_the_same_seed_on_cpu():
    first = training.fit(_build, TRAIN, VALID, CONFIG)
    second = training.fit(_build, TRAIN, VALID, CONFIG)
    assert _same_weights(first.model, second.model)
    assert [h["valid_loss"] for h in first.history] == [h["valid_loss"] for h in second.history]


def test_it_gives_different_models_for_different_seeds():
    first = training.fit(_build, TRAIN, VALID, CONFIG)
    other = training.fit(_build, TRAIN, VALID, replace(CONFIG, seed=8))
    assert not _same_weights(first.model, other.model)


def test_it_lowers_the_validation_loss():
    result = training.fit(_build, TRAIN, VALID, replace(CONFIG, epochs=4))
    assert result.history[-1]["valid_loss"] < result.history[0]["valid_loss"]


def test_it_resumes_an_interrupted_run_where_it_stopped(tmp_path: Path):
    checkpoint = tmp_path / "run.pt"
    uninterrupted = training.fit(_build, TRAIN, VALID, CONFIG)
    interrupted = replace(CONFIG, epochs=1, checkpoint_path=str(checkpoint))
    training.fit(_build, TRAIN, VALID, interrupted)  # "killed" after its first epoch
    assert checkpoint.exists()
    resumed = training.fit(_build, TRAIN, VALID, replace(interrupted, epochs=3))
    assert resumed.resumed_from_epoch == 1
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert _same_weights(resumed.model, uninterrupted.model)


def test_it_ignores_a_checkpoint_of_another_setup(tmp_path: Path):
    checkpoint = str(tmp_path / "run.pt")
    training.fit(_build, TRAIN, VALID, replace(CONFIG, epochs=1, checkpoint_path=checkpoint))
    other = training.fit(_build, TRAIN, VALID, replace(CONFIG, lr=1e-3, checkpoint_path=checkpoint))
    assert other.resumed_from_epoch is None
    assert len(other.history) == 3


def test_it_stops_early_when_validation_stops_improving():
    frozen = replace(CONFIG, epochs=10, lr=0.0, patience=2)  # nothing moves: no epoch is better
    result = training.fit(_build, TRAIN, VALID, frozen)
    assert result.stopped_early
    assert len(result.history) == 3
    assert result.best_epoch == 1


def test_it_keeps_the_epoch_with_the_lowest_validation_nmae():
    groups = np.arange(len(VALID["target"])) % 3  # three "scenarios"
    config = replace(CONFIG, epochs=4)
    result = training.fit(_build, TRAIN, VALID, config, valid_groups=groups)
    nmae = [h["valid_nmae"] for h in result.history]
    assert result.best_epoch == int(np.argmin(nmae)) + 1
    kept = training.validation_scores(
        result.model, VALID, device=torch.device("cpu"), batch_size=64, weights=None, groups=groups
    )
    assert kept["nmae"] == pytest.approx(min(nmae), rel=1e-5)


def test_it_keeps_the_epoch_with_the_lowest_validation_loss_when_asked():
    result = training.fit(_build, TRAIN, VALID, replace(CONFIG, epochs=4, select_by="loss"))
    losses = [h["valid_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert result.best_valid_score == min(losses)


def test_it_refuses_an_unknown_selection_score():
    with pytest.raises(ValueError, match="select_by must be one of"):
        training.fit(_build, TRAIN, VALID, replace(CONFIG, select_by="accuracy"))


class _Constant(torch.nn.Module):
    def __init__(self, rates: list[float]) -> None:
        super().__init__()
        self.rates = torch.tensor(rates)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.rates.expand(len(batch["target"]), -1)


def test_it_scores_the_validation_nmae_as_the_mean_over_scenario_and_task_cells():
    # targets [4 samples, 2 tasks]; scenario a: rows 0-1, b: rows 2-3; prediction 1 everywhere
    target = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 2.0], [0.0, 6.0]])
    groups = np.array(["a", "a", "b", "b"])
    scores = training.validation_scores(
        _Constant([1.0, 1.0]),
        {"target": target},
        device=torch.device("cpu"),
        batch_size=3,
        weights=None,
        groups=groups,
    )
    cells = [(0 + 2) / 4, (1 + 1) / 2, (1 + 1) / 2, (1 + 5) / 8]  # sum|y_hat - y| / sum y
    assert scores["nmae"] == pytest.approx(np.mean(cells))


def test_it_weighs_tasks_by_their_null_deviance():
    # mean 1 per task; D0 = mean(y log y): task 0 (2 log 2) / 4, task 1 (4 log 4) / 4
    target = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [1.0, 4.0]])
    d0 = [float(torch.xlogy(target[:, t], target[:, t]).mean()) for t in (0, 1)]
    assert d0 == pytest.approx([0.5 * np.log(2), np.log(4)])
    weights = training.task_weights_for("deviance", target)
    inverse = np.array([1 / d0[0], 1 / d0[1]])
    assert weights == pytest.approx(tuple(inverse / inverse.mean()))
    assert weights[0] == pytest.approx(4 * weights[1])  # four times less to explain


def test_it_gives_a_constant_task_the_mean_weight_whatever_the_scale():
    target = torch.tensor([[1.0, 0.0, 2.0], [1.0, 2.0, 0.0]])  # task 0 never varies
    assert training.task_weights_for("deviance", 5 * target) == pytest.approx(
        training.task_weights_for("deviance", target)
    )  # the scale of a task's targets does not matter
    weights = training.task_weights_for("deviance", target)
    assert weights[0] == pytest.approx(1.0)
    assert np.mean(weights) == pytest.approx(1.0)


def test_it_leaves_tasks_unweighted_when_asked():
    assert training.task_weights_for("equal", TRAIN["target"]) is None
    with pytest.raises(ValueError, match="task weighting must be one of"):
        training.task_weights_for("uncertainty", TRAIN["target"])


def test_it_steps_as_if_the_l2_penalty_were_back_propagated():
    config = replace(CONFIG, l2=0.05, grad_clip=0.5)  # a penalty large enough to matter
    batch = {key: value[:32] for key, value in TRAIN.items()}
    torch.manual_seed(0)
    model = _build()
    reference = copy.deepcopy(model)

    loss = training.train_step(model, model, training.make_optimizer(model, config), batch, config)

    optimizer = training.make_optimizer(reference, config)
    meta, other = l2_penalties(reference)
    out = reference.outputs(batch)
    heads = reference.loss_terms(out, batch["target"])  # the distribution heads' own loss
    expected = poisson_loss(out.rate, batch["target"]) + heads + 0.05 * (meta + other)  # eq. 19
    expected.backward()
    torch.nn.utils.clip_grad_value_(reference.parameters(), config.grad_clip)
    optimizer.step()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, msg=name)  # clipped: the same step
        torch.testing.assert_close(got, want, msg=name)


def first_adam_step(config: training.TrainConfig) -> dict[str, torch.Tensor]:
    """|change| of every parameter after one step from a fresh Adam (no L2, no clipping)."""
    config = replace(config, l2=0.0, grad_clip=1e9)
    batch = {key: value[:32] for key, value in TRAIN.items()}
    torch.manual_seed(0)
    model = _build()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    training.train_step(model, model, training.make_optimizer(model, config), batch, config)
    return {name: (p.detach() - before[name]).abs() for name, p in model.named_parameters()}


def largest_step(steps: dict[str, torch.Tensor], generators: bool) -> float:
    is_generator = lambda name: name.endswith((".w_gen", ".b_gen"))  # noqa: E731
    return max(float(v.max()) for k, v in steps.items() if is_generator(k) == generators)


def test_it_steps_the_meta_generators_at_the_learning_rate_over_d():
    # Adam's first step moves each entry with a gradient by lr; V_w and V_b of every meta
    # layer (d_meta = 8 here) by lr / 8, everything else, v_w and v_b included, by lr.
    steps = first_adam_step(CONFIG)
    assert largest_step(steps, generators=True) == pytest.approx(CONFIG.lr / 8, rel=1e-3)
    assert largest_step(steps, generators=False) == pytest.approx(CONFIG.lr, rel=1e-3)
    assert float(steps["tower_units.0.layers.0.w_base"].max()) == pytest.approx(CONFIG.lr, 1e-3)


def test_it_steps_the_meta_generators_at_the_rate_it_is_given():
    steps = first_adam_step(replace(CONFIG, generator_lr_scale=1.0))  # the paper, literally
    assert largest_step(steps, generators=True) == pytest.approx(CONFIG.lr, rel=1e-3)
    steps = first_adam_step(replace(CONFIG, generator_lr_scale=0.5))
    assert largest_step(steps, generators=True) == pytest.approx(CONFIG.lr / 2, rel=1e-3)


def test_it_refuses_cuda_where_there_is_none():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        training.resolve_device("cuda")


def train_under_torchrun(tmp_path: Path, device: str) -> list[dict[str, torch.Tensor]]:
    """Two torchrun ranks fit one DDP model on `device`; returns each rank's final weights.

    Rank 0 also writes the checkpoint to tmp_path / "ddp.pt".
    """
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, torch
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from importlib import import_module
            from dataclasses import replace
            mod = import_module("test_training")
            from predictor import training
            config = replace(mod.CONFIG, device={device!r}, epochs=2,
                             checkpoint_path={str(tmp_path / "ddp.pt")!r})
            result = training.fit(mod._build, mod.TRAIN, mod.VALID, config)
            weights = {{k: v.cpu() for k, v in result.model.state_dict().items()}}
            torch.save(weights, {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
            training.dist_cleanup()
            """
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.slow
def test_it_keeps_ranks_in_step_under_torchrun(tmp_path: Path):
    """Two CPU processes (Gloo) train one DDP model; both end with the same weights."""
    rank0, rank1 = train_under_torchrun(tmp_path, "cpu")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert (tmp_path / "ddp.pt").exists()  # rank 0 wrote the checkpoint


def test_it_leaves_the_threads_floating_point_state_as_it_found_it():
    # Training and CPU scoring flush subnormals for speed; the process (a web worker, the
    # test suite's float generators) must get IEEE arithmetic back afterwards.
    tiny = np.array([1e-38], dtype=np.float32)
    subnormal_kept = lambda: (tiny / np.float32(1e3))[0] != 0.0  # noqa: E731
    assert subnormal_kept()
    result = training.fit(_build, TRAIN, VALID, replace(CONFIG, epochs=1))
    assert subnormal_kept()
    training.predict_outputs(result.model, VALID, device=torch.device("cpu"), batch_size=16)
    assert subnormal_kept()
    with training.denormals_flushed():
        assert not subnormal_kept()
    assert subnormal_kept()
