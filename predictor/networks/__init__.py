"""Pure-PyTorch networks of the predictor: M2M (paper section 4), its baselines and the loss.

No Django here: the trainer and the registry call in with a batch (see `InputSpec` and the
batch contract below) and store `model_checkpoint_dict(model)` as the artifact.

Batch contract (dict of tensors, B samples; shapes fixed by `InputSpec`):
    behaviour    int64   [B, T, NB]  bin ids per day of logins, campaign/bid/budget changes
    performance  int64   [B, T, NP]  bin ids per day of impressions, clicks, expenditure, gmv
    scenario     float32 [B, NS]     scenario attributes (S)
    profile_cat  int64   [B, NC]     categorical advertiser profile (part of A)
    profile_num  float32 [B, NN]     numeric advertiser profile (part of A)
    target       float32 [B, M]      normalised next-tau-day sums (training and evaluation only)
`model(batch)` returns the positive Poisson rate [B, M] in the units of "target".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from predictor.networks.baselines import CGC, MRAN, CrossStitch, MMoE, SharedBottom, SingleTask
from predictor.networks.losses import (
    joint_loss,
    l2_parameters,
    l2_penalties,
    meta_parameter_names,
    poisson_loss,
    poisson_loss_per_task,
)
from predictor.networks.m2m import M2M
from predictor.networks.spec import CONFIGS, InputSpec

MODEL_KINDS = ("m2m", "single_task", "shared_bottom", "cross_stitch", "mmoe", "mran", "cgc")

_MODELS: dict[str, type[nn.Module]] = {
    "m2m": M2M,
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "cross_stitch": CrossStitch,
    "mmoe": MMoE,
    "mran": MRAN,
    "cgc": CGC,
}


def build_model(kind: str, spec: InputSpec | dict[str, Any], **hparams: Any) -> nn.Module:
    """A fresh model of `kind` for inputs shaped by `spec`; hparams override its config defaults.

    `build_model(kind, spec, **dataclasses.asdict(model.config))` rebuilds the same architecture.
    """
    if kind not in _MODELS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}.")
    if isinstance(spec, dict):
        spec = InputSpec.from_dict(spec)
    config = CONFIGS[kind].from_hparams(hparams)
    return _MODELS[kind](spec, config)


def model_checkpoint_dict(model: nn.Module) -> dict[str, Any]:
    """Everything needed to rebuild `model`: kind, spec, config (plain data) and weights."""
    return {
        "kind": model.kind,
        "spec": model.spec.to_dict(),
        "config": dataclasses.asdict(model.config),
        "state_dict": model.state_dict(),
    }


def model_from_checkpoint_dict(data: dict[str, Any]) -> nn.Module:
    """Inverse of `model_checkpoint_dict`; the model comes back in eval mode."""
    missing = {"kind", "spec", "config", "state_dict"} - set(data)
    if missing:
        raise ValueError(
            f"checkpoint lacks {sorted(missing)}; write it with model_checkpoint_dict(model)."
        )
    model = build_model(data["kind"], data["spec"], **data["config"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or reshaped weights
        problems = "; ".join(line.strip() for line in str(exc).splitlines()[1:])
        if len(problems) > 300:
            problems = problems[:300] + " ..."
        raise ValueError(
            f"the checkpoint's weights do not fit this release's {data['kind']} network"
            f" ({problems}); it was written by another release: retrain the model."
        ) from exc
    return model.eval()


__all__ = [
    "MODEL_KINDS",
    "InputSpec",
    "build_model",
    "joint_loss",
    "l2_parameters",
    "l2_penalties",
    "meta_parameter_names",
    "model_checkpoint_dict",
    "model_from_checkpoint_dict",
    "poisson_loss",
    "poisson_loss_per_task",
]
