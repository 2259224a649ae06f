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

**Calibration on the validation split, conditioned on the scenario.** After training
(`training.fit`), two small maps are fitted on the validation samples and kept as buffers of
the head, so an artifact carries them. Both are linear in phi = [1, the scenario's kind and
attributes] (the static part of the scenario vector every sample carries), so each scenario
gets its own correction, and a scenario launched later gets one from its description. The
scenario's statistics at the as-of date (age, activity) are left out: they move between the
validation and the test weeks, fastest for a new scenario, and a map linear in them
extrapolates in time (it cost star_shop and the new live_stream 5 to 7 points of coverage
in a later week):
- P(inactive): Platt scaling, logit p' = (A phi) logit p + B phi, fitted by log-loss with a
  small L2 pull on every term but the two constants. The beta-binomial is fitted jointly with
  early stopping chosen for the rate's NMAE, so its probabilities come out sharper or flatter
  than the data, and by a different margin in a large scenario than in a small one;
- the intervals: conditional conformal prediction (Gibbs, Cherian and Candes, 2023) on the
  conformity scores of conformalised quantile regression (Romano et al., 2019) in log1p units
  of the data: the shift t(phi) = C phi is the linear quantile regression of the scores on phi
  at the 80% level, so the validation coverage is 80% in every scenario (the scenario's
  indicator lies in the span of phi), not only pooled. Money has a point mass at zero that the
  10th percentile head approaches but cannot reach, and a heavy tail; the shift fixes both. A
  count's interval ends are whole counts (`training.interval_bounds` rounds them), so its
  score is that of the rounded interval: y is inside exactly when
  log1p q10 - t < log1p(y + 1/2) and log1p(y - 1/2) <= log1p q90 + t.
Each map's slope, intercept and shift are clamped to the range they take on the validation
samples, so a scenario unlike any seen gets no correction more extreme than a known one's.

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
        # Calibration maps (module docstring), identity until `fit_calibration`. Rows of
        # `platt`: the slope's and the intercept's coefficients on phi = [1, static scenario
        # columns] [F].
        self.n_static = (
            spec.n_scenario if spec.n_scenario_static is None else spec.n_scenario_static
        )
        n_phi = 1 + self.n_static
        identity = torch.zeros(2, n_phi)
        identity[0, 0] = 1.0
        self.register_buffer("platt", identity)  # [2, F]
        self.register_buffer("platt_range", torch.tensor([[1.0, 1.0], [0.0, 0.0]]))  # [2, 2]
        self.register_buffer("shift", torch.zeros(spec.n_tasks, n_phi))  # [M, F] log1p units
        self.register_buffer("shift_range", torch.zeros(spec.n_tasks, 2))  # [M, 2]
        scales = spec.target_scales or (1.0,) * spec.n_tasks
        self.register_buffer("scales", torch.tensor(scales), persistent=False)  # [M]
        counts = torch.tensor([t not in CONTINUOUS_TASKS for t in spec.tasks])
        self.register_buffer("counts", counts, persistent=False)  # [M] bool

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
        self, quantiles: torch.Tensor, p: torch.Tensor, scenario: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the calibration maps: quantiles [B, M, 3], P(inactive) [B], scenario
        [B, NS] -> quantiles and P(inactive), the same shapes."""
        phi = _phi(scenario[:, : self.n_static].to(quantiles.dtype))  # [B, F]
        a, b = (_clamped(phi @ self.platt[k], self.platt_range[k]) for k in range(2))  # [B]
        logit = torch.logit(p.clamp(_EPS, 1 - _EPS))
        p = torch.where(torch.isnan(p), p, torch.sigmoid(a * logit + b))
        shift = _clamped(phi @ self.shift.T, self.shift_range)  # [B, M]
        low, median, high = (quantiles * self.scales[:, None]).unbind(-1)  # data units
        low = torch.expm1(torch.log1p(low) - shift).clamp_min(0)
        high = torch.expm1(torch.log1p(high) + shift).clamp_min(0)
        ends = torch.stack([low, median, high], -1) / self.scales[:, None]
        return ends, p

    @torch.no_grad()
    def fit_calibration(
        self,
        quantiles: torch.Tensor,
        p: torch.Tensor,
        target: torch.Tensor,
        inactive: torch.Tensor,
        scenario: torch.Tensor,
    ) -> None:
        """Fit both maps on validation outputs (uncalibrated): quantiles [N, M, 3], p [N],
        target [N, M] normalised, inactive [N] bool, scenario [N, NS]."""
        phi = _phi(scenario[:, : self.n_static].double()).cpu().numpy()  # [N, F]
        self.platt.zero_()
        self.platt[0, 0] = 1.0
        self.platt_range.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        self.shift.zero_()
        self.shift_range.zero_()
        if len(phi) == 0:
            return
        if not torch.isnan(p).all():
            coef = _platt_fit(p.double().cpu().numpy(), inactive.double().cpu().numpy(), phi)
            self.platt.copy_(torch.from_numpy(coef))
            self.platt_range.copy_(torch.from_numpy(_fitted_range(phi, coef)))
        scale = self.scales.double().cpu()
        y = target.double().cpu() * scale  # [N, M] data units
        q = quantiles.double().cpu() * scale[:, None]  # [N, M, 3]
        n = len(phi)
        level = min(1.0, INTERVAL_LEVEL * (n + 1) / n)  # the conformal finite-sample level
        for j, count in enumerate(self.counts.tolist()):
            scores = _conformity(q[:, j, 0], q[:, j, 2], y[:, j], count).numpy()
            coef = _quantile_regression(phi, scores, level)
            self.shift[j] = torch.from_numpy(coef)
            self.shift_range[j] = torch.from_numpy(_fitted_range(phi, coef[None])[0])


def _phi(scenario: torch.Tensor) -> torch.Tensor:
    """[B, NS] -> [B, 1 + NS]: the calibration maps' features, a constant first."""
    return torch.cat([torch.ones_like(scenario[:, :1]), scenario], 1)


def _clamped(x: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """x [..., K] or [...] clamped elementwise to bounds [K, 2] or [2] (low, high)."""
    return torch.minimum(torch.maximum(x, bounds[..., 0]), bounds[..., 1])


def _fitted_range(phi: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """[K, F] coefficients -> [K, 2] the least and greatest of phi @ coef over the samples."""
    values = phi @ coef.T  # [N, K]
    return np.stack([values.min(0), values.max(0)], 1)


def _conformity(
    low: torch.Tensor, high: torch.Tensor, y: torch.Tensor, count: bool
) -> torch.Tensor:
    """The least log1p shift t at which [low, high] widened by t covers y (module docstring):
    [N] each, data units -> [N]. A count's ends are rounded to whole counts afterwards."""
    if not count:
        log_y = torch.log1p(y)
        return torch.maximum(torch.log1p(low) - log_y, log_y - torch.log1p(high))
    below = torch.log1p(low) - torch.log1p(y + 0.5)
    above = torch.log1p((y - 0.5).clamp_min(0)) - torch.log1p(high)
    return torch.where(y >= 0.5, torch.maximum(below, above), below)


# Weight of the L2 pull on the scenario terms of the Platt map (the features are standardised).
PLATT_L2 = 1e-3


def _platt_fit(p: np.ndarray, y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """[2, F]: the slope's and intercept's coefficients on phi minimising the log-loss of
    sigmoid((A phi) logit p + B phi) against y, plus PLATT_L2 on all but the constants."""
    x = np.log(np.clip(p, _EPS, 1 - _EPS)) - np.log1p(-np.clip(p, _EPS, 1 - _EPS))
    design = np.concatenate([x[:, None] * phi, phi], 1)  # [N, 2F]
    n_phi = phi.shape[1]
    pulled = np.ones(2 * n_phi)
    pulled[[0, n_phi]] = 0.0

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ w
        # log(1 + e^z) - y z, and its gradient (sigmoid(z) - y) design
        value = np.logaddexp(0.0, z) - y * z
        residual = 0.5 * (1.0 + np.tanh(0.5 * z)) - y
        gradient = design.T @ residual / len(y) + 2 * PLATT_L2 * pulled * w
        return float(value.mean() + PLATT_L2 * (pulled * w * w).sum()), gradient

    start = np.zeros(2 * n_phi)
    start[0] = 1.0
    found = optimize.minimize(loss, start, jac=True, method="L-BFGS-B")
    return found.x.reshape(2, n_phi)


def _quantile_regression(phi: np.ndarray, scores: np.ndarray, level: float) -> np.ndarray:
    """[F] coefficients c minimising the pinball loss at `level` of scores [N] - phi c.

    Solved as the dual linear programme, max scores . d subject to phi' d = 0 and
    level - 1 <= d <= level: N box-bounded variables and F equalities, which HiGHS solves in
    well under a second for tens of thousands of samples (the primal takes 2N + F variables and
    about 50 times longer); c is the equalities' multipliers. Scores of +inf or -inf (a sample
    no shift covers, or one any covers) are replaced by the largest and least finite ones."""
    finite = np.isfinite(scores)
    if not finite.any():
        return np.zeros(phi.shape[1])
    scores = np.clip(scores, scores[finite].min(), scores[finite].max())
    found = optimize.linprog(
        -scores,
        A_eq=phi.T,
        b_eq=np.zeros(phi.shape[1]),
        bounds=(level - 1.0, level),
        method="highs",
    )
    if found.status != 0:  # cannot happen for a feasible box; fall back to the pooled quantile
        coef = np.zeros(phi.shape[1])
        coef[0] = np.quantile(scores, level, method="higher")
        return coef
    return -found.eqlin.marginals


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
