"""The predictive distribution every model gives besides the paper's Poisson mean.

Decisions need more than the mean (eq. 20): targeting needs P(no active day in the next
horizon), task targets and ops need an interval. Every model therefore ends in two heads that
read the same per-task representation as its rate head (the input of eq. 20's output layer):

- **Inactivity: a beta-binomial over the horizon's days** for the active-days task. Active
  days count n = horizon days (7), so the support is 0..n. A binomial treats the days as
  independent given the features and puts (1 - p)^n at zero; an advertiser's days are strongly
  correlated (one who is active is active most days, one who lapses lapses for the week), so
  the counts are U-shaped, with mass at 0 and at n. A zero-inflated binomial fits the spike at
  0 but not the one at n; the beta-binomial fits both with two parameters (alpha, beta), and
  gives P(0) = B(alpha, beta + n) / B(alpha, beta) in closed form.
- **Intervals: quantile heads** (10th, 50th and 90th percentile) for every task, trained by the
  pinball loss. Expenditure is money (continuous, a point mass at zero, a heavy tail), so a
  count family such as the negative binomial would be mis-specified exactly in the tail the
  interval's upper end sits in; the pinball loss aims at each quantile directly whatever the
  shape, and it is scale-equivariant, so the per-task normalisation of the targets does not
  change what it learns. The three quantiles are non-crossing by construction.

**Calibration on the validation split.** After training (`training.fit`), two small maps are
fitted on the validation samples and kept as buffers of the head, so an artifact carries them:
- P(inactive): Platt scaling, logit p' = a logit p + b, fitted by log-loss. The beta-binomial
  is fitted jointly with early stopping chosen for the rate's NMAE, so its probabilities come
  out sharper or flatter than the data by a margin one affine map on the logit corrects;
- the intervals of money tasks: conformalised quantile regression (Romano et al., 2019) in
  log1p units, both ends moved out (or in) by the 80% quantile of the validation samples'
  conformity scores max(log1p q10 - log1p y, log1p y - log1p q90). Money has a point mass at
  zero that the 10th percentile head approaches but cannot reach (a q10 of 0.001 excludes y = 0),
  and a heavy tail; the conformal shift fixes both with a guarantee of 80% marginal coverage on
  exchangeable samples. Count tasks are not shifted: their ends are whole counts
  (`training.interval_bounds`), which already covers at least the nominal 80%.

Both heads read the representation **detached**: their losses train the heads only, so every
weight of the paper's model gets exactly the gradient of eq. 19 and the paper's point
predictions (and the NMAE / SMAPE tables) are what they would be without the heads. The
heads are created last in each model, after every other weight, so the paper's weights also
draw the same initial values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import optimize
from torch import nn
from torch.nn import functional as F

from predictor.networks.embedding import UNIT_RATE_BIAS, GroupedLinear
from predictor.networks.spec import InputSpec

QUANTILES = (0.1, 0.5, 0.9)
INTERVAL_LEVEL = QUANTILES[2] - QUANTILES[0]
ACTIVE_DAYS = "active_days"
# Money tasks; the others count events, so their interval ends are whole counts.
CONTINUOUS_TASKS = ("expenditure", "gmv")
_EPS = 1e-6


@dataclass
class ModelOutputs:
    """What a model predicts for B samples of M tasks (targets' normalised units)."""

    rate: torch.Tensor  # [B, M] the Poisson mean of eq. 20
    quantiles: torch.Tensor  # [B, M, 3] 10th, 50th, 90th percentile, non-decreasing
    # [B, 2] alpha, beta of the beta-binomial of active days; None without that task
    active_shape: torch.Tensor | None


class DistributionHead(nn.Module):
    """Quantile heads for every task, a beta-binomial head for active days (module docstring).

    [B, M, d] (the per-task representation, detached by the caller) -> quantiles [B, M, 3] and
    beta-binomial (alpha, beta) [B, 2].
    """

    def __init__(self, spec: InputSpec, d_repr: int) -> None:
        super().__init__()
        self.quantile = GroupedLinear(spec.n_tasks, d_repr, 3)
        # Start near a unit-rate median with a 10th percentile at half of it and a 90th at
        # median + 1: a plausible spread for targets normalised by their mean.
        with torch.no_grad():
            self.quantile.bias.copy_(
                torch.tensor([0.0, UNIT_RATE_BIAS, UNIT_RATE_BIAS]).expand_as(self.quantile.bias)
            )
        self.active_index = spec.tasks.index(ACTIVE_DAYS) if ACTIVE_DAYS in spec.tasks else None
        self.active = nn.Linear(d_repr, 2) if self.active_index is not None else None
        if self.active is not None:
            nn.init.zeros_(self.active.bias)  # alpha = beta = softplus(0) ~ 0.69: U-shaped
        # Calibration maps (module docstring), identity until `fit_calibration`.
        self.register_buffer("platt", torch.tensor([1.0, 0.0]))  # a, b
        self.register_buffer("shift", torch.zeros(spec.n_tasks))  # [M] log1p units
        self.continuous = [t in CONTINUOUS_TASKS for t in spec.tasks]

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raw = self.quantile(h).float()  # [B, M, 3]
        median = F.softplus(raw[..., 1])  # q50 >= 0
        low = median * torch.sigmoid(raw[..., 0])  # 0 <= q10 <= q50
        high = median + F.softplus(raw[..., 2])  # q90 >= q50
        quantiles = torch.stack([low, median, high], dim=-1)  # [B, M, 3]
        if self.active is None or self.active_index is None:
            return quantiles, None
        shape = F.softplus(self.active(h[:, self.active_index]).float()) + _EPS  # [B, 2]
        return quantiles, shape

    def calibrated(
        self, quantiles: torch.Tensor, p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the calibration maps: quantiles [B, M, 3], P(inactive) [B] -> the same."""
        a, b = self.platt.unbind()
        logit = torch.logit(p.clamp(_EPS, 1 - _EPS))
        p = torch.where(torch.isnan(p), p, torch.sigmoid(a * logit + b))
        low, _, high = torch.log1p(quantiles).unbind(-1)
        low, high = low - self.shift, high + self.shift
        ends = torch.stack(
            [torch.expm1(low).clamp_min(0), quantiles[..., 1], torch.expm1(high)], -1
        )
        return torch.maximum(ends, torch.zeros((), device=ends.device)), p

    @torch.no_grad()
    def fit_calibration(
        self, quantiles: torch.Tensor, p: torch.Tensor, target: torch.Tensor, inactive: torch.Tensor
    ) -> None:
        """Fit both maps on validation outputs (uncalibrated): quantiles [N, M, 3], p [N],
        target [N, M] normalised, inactive [N] bool."""
        self.platt.copy_(torch.tensor([1.0, 0.0]))
        self.shift.zero_()
        if not torch.isnan(p).all():
            self.platt.copy_(_platt_fit(p.double(), inactive.double()).to(self.platt))
        n = len(target)
        level = min(1.0, INTERVAL_LEVEL * (n + 1) / n)  # the conformal finite-sample level
        for j, continuous in enumerate(self.continuous):
            if continuous and n:
                y = torch.log1p(target[:, j].double())
                q = torch.log1p(quantiles[:, j].double())
                scores = torch.maximum(q[:, 0] - y, y - q[:, 2])
                self.shift[j] = torch.quantile(scores, level, interpolation="higher").float()


def _platt_fit(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(a, b) minimising the log-loss of sigmoid(a logit p + b) against y."""
    x = torch.logit(p.clamp(_EPS, 1 - _EPS)).numpy()
    label = y.numpy()

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] * x + w[1]
        # log(1 + e^z) - y z, and its gradient (sigmoid(z) - y) [x, 1]
        value = np.logaddexp(0.0, z) - label * z
        residual = 1.0 / (1.0 + np.exp(-z)) - label
        return float(value.mean()), np.array([(residual * x).mean(), residual.mean()])

    found = optimize.minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return torch.tensor(found.x, dtype=torch.float32)


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of sum over tasks and levels of the pinball loss: a scalar.

    rho_tau(u) = max(tau u, (tau - 1) u) with u = y - q_tau; its minimiser is the tau-quantile.
    quantiles [B, M, 3], target [B, M].
    """
    levels = torch.tensor(QUANTILES, dtype=quantiles.dtype, device=quantiles.device)
    u = target.unsqueeze(-1) - quantiles  # [B, M, 3]
    return torch.maximum(levels * u, (levels - 1) * u).sum(dim=(1, 2)).mean()


def beta_binomial_log_prob(
    k: torch.Tensor, n: int, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """log P(K = k) for K ~ BetaBinomial(n, alpha, beta), elementwise.

    log C(n, k) + log B(k + alpha, n - k + beta) - log B(alpha, beta).
    """
    lbeta = _log_beta
    log_choose = (
        torch.lgamma(torch.tensor(n + 1.0, device=k.device))
        - torch.lgamma(k + 1)
        - torch.lgamma(n - k + 1)
    )
    return log_choose + lbeta(k + alpha, n - k + beta) - lbeta(alpha, beta)


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def p_inactive(shape: torch.Tensor, n: int) -> torch.Tensor:
    """P(K = 0) = B(alpha, beta + n) / B(alpha, beta): [B, 2] -> [B]."""
    alpha, beta = shape.unbind(-1)
    return torch.exp(_log_beta(alpha, beta + n) - _log_beta(alpha, beta))


def active_day_counts(target: torch.Tensor, spec: InputSpec, index: int) -> torch.Tensor:
    """The raw active days 0..n of every sample from its normalised target: [B, M] -> [B]."""
    scale = spec.target_scales[index] if spec.target_scales else 1.0
    return (target[:, index] * scale).round().clamp(0, spec.horizon_days)


def distribution_loss(
    outputs: ModelOutputs, target: torch.Tensor, spec: InputSpec, index: int | None
) -> torch.Tensor:
    """Pinball loss of the quantiles plus the beta-binomial NLL of active days (mean over B)."""
    loss = pinball_loss(outputs.quantiles, target)
    if outputs.active_shape is not None and index is not None:
        k = active_day_counts(target, spec, index)
        alpha, beta = outputs.active_shape.unbind(-1)
        loss = loss - beta_binomial_log_prob(k, spec.horizon_days, alpha, beta).mean()
    return loss


class DistributionalModel(nn.Module):
    """Base of every predictor network: a per-task representation, the paper's rate on it, and
    the distribution heads on its detached copy (module docstring).

    Subclasses define `represent(batch) -> [B, M, d]` and `rate(h) -> [B, M]`, and create
    `self.distribution = DistributionHead(spec, d)` as the last module of `__init__`.
    """

    spec: InputSpec
    distribution: DistributionHead

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], with_distribution: bool = False) -> Any:
        """The positive Poisson rate [B, M] of eq. 20, as in the paper; with_distribution: all
        of `ModelOutputs` (a flag of forward rather than another method, so that a
        DistributedDataParallel wrapper, which hooks forward only, trains the heads too)."""
        h = self.represent(batch)  # [B, M, d]
        if not with_distribution:
            return self.rate(h)
        quantiles, shape = self.distribution(h.detach())
        return ModelOutputs(rate=self.rate(h), quantiles=quantiles, active_shape=shape)

    def outputs(self, batch: dict[str, torch.Tensor]) -> ModelOutputs:
        return self(batch, with_distribution=True)

    def loss_terms(self, outputs: ModelOutputs, target: torch.Tensor) -> torch.Tensor:
        """The heads' loss (added to eq. 19; it reaches the heads only)."""
        return distribution_loss(outputs, target, self.spec, self.distribution.active_index)
