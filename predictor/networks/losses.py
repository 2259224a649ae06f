"""The training objective of eq. 19-20: weighted per-task Poisson losses plus two L2 terms.

    L = sum_t lambda_t * (1/N) sum_i (y_hat_i^t - y_i^t log y_hat_i^t)       (eq. 19, 20)
        + alpha_meta * ||W_meta||^2 + alpha_other * ||W_other||^2            (eq. 19)

W_meta are the parameters of every meta unit (V_w, v_w, V_b and v_b of eq. 11-12: w_gen,
w_base, b_gen and b_base of each MetaLayer) and W_other every other weight (linear and grouped
weights, embeddings, positional embeddings, cross-stitch matrices); the biases of ordinary
layers are not penalised. The paper uses one alpha for both terms; the two are kept apart so a
trainer may give the meta unit its own. `meta_parameter_names` tells which parameters are which.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from predictor.networks.meta import MetaUnit

_BIAS_NAMES = ("bias",)
# Poisson NLL takes log(rate + eps): a rate that underflows to 0 costs a large finite loss
# instead of an infinite one.
RATE_EPS = 1e-8


def poisson_loss_per_task(rate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 20 for every task: mean over the batch of rate - y log rate, shape [M].

    The constant log(y!) of the full Poisson likelihood is left out, as in the paper.
    """
    if rate.shape != target.shape:
        raise ValueError(f"rate {list(rate.shape)} and target {list(target.shape)} differ.")
    per_sample = F.poisson_nll_loss(
        rate, target, log_input=False, full=False, eps=RATE_EPS, reduction="none"
    )  # eq. 20 summand: [B, M]
    return per_sample.mean(dim=0)  # eq. 20: [M]


def poisson_loss(
    rate: torch.Tensor,
    target: torch.Tensor,
    *,
    task_weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """First term of eq. 19: sum_t lambda_t * L^t, with lambda_t = 1 when no weights are given."""
    per_task = poisson_loss_per_task(rate, target)  # [M]
    if task_weights is None:
        return per_task.sum()
    weights = torch.as_tensor(task_weights, dtype=per_task.dtype, device=per_task.device)
    if weights.shape != per_task.shape:
        raise ValueError(
            f"task_weights has {weights.numel()} entries for {per_task.numel()} tasks; "
            "give one lambda per task in the spec's task order."
        )
    return (weights * per_task).sum()  # eq. 19, first term


def meta_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in model.named_parameters()) of the parameters that belong to meta units."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, MetaUnit):
            names.update(f"{prefix}.{name}" for name, _ in module.named_parameters())
    return names


def l2_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The weights eq. 19 penalises, (meta-unit weights, the others); biases excluded."""
    meta_names = meta_parameter_names(model)
    meta: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] not in _BIAS_NAMES:
            (meta if name in meta_names else other).append(param)
    return meta, other


def l2_penalties(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(||W_meta||_F^2, ||W_other||_F^2) of eq. 19, biases excluded; 0-d tensors."""
    zero = next(model.parameters()).new_zeros(())
    # ||p||^2 through the norm kernel: no p*p temporary, about half the time of p.square()
    return tuple(  # type: ignore[return-value]
        torch.stack([torch.linalg.vector_norm(p) for p in group]).square().sum() if group else zero
        for group in l2_parameters(model)
    )


def joint_loss(
    rate: torch.Tensor,
    target: torch.Tensor,
    model: nn.Module,
    *,
    task_weights: Sequence[float] | torch.Tensor | None = None,
    alpha_meta: float = 0.0,
    alpha_other: float = 0.0,
) -> torch.Tensor:
    """The whole of eq. 19 in one call."""
    loss = poisson_loss(rate, target, task_weights=task_weights)
    if alpha_meta or alpha_other:
        meta, other = l2_penalties(model)
        loss = loss + alpha_meta * meta + alpha_other * other  # eq. 19, regulariser
    return loss
