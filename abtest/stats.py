"""The experiment statistics engine: pure numpy/scipy, no Django.

Conventions (shared ab-known-answers document; they follow GrowthBook's gbstats so that a number
means what an analyst expects):

- two-sided tests, alpha 0.05 unless the experiment says otherwise;
- a proportion metric has mean p = x/n and variance p(1-p) (no Bessel correction); a mean metric
  uses the sample variance with n-1;
- absolute lift = mean_b - mean_a with variance var_a/n_a + var_b/n_b;
- relative lift = (mean_b - mean_a) / |mean_a| with the delta-method variance
  var_b/(n_b mean_a^2) + var_a mean_b^2/(n_a mean_a^4);
- confidence intervals and p-values from Student's t with Welch-Satterthwaite degrees of freedom;
- CUPED: theta = cov(y, x) / var(x) pooled over both arms, x the pre-period value of the metric;
  adjusted mean = mean_y - theta (mean_x - pooled mean_x);
- sample ratio mismatch: Pearson chi-square over the groups against the configured weights;
- minimum detectable effect ~= (z_{1-alpha/2} + z_power) * sigma_delta;
- Holm's step-down correction across the metrics of one comparison.

Everything works on sufficient statistics (n, sum, sum of squares, cross products), so the
database can aggregate and only a handful of numbers reach Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
SRM_THRESHOLD = 0.001


# --- sufficient statistics -----------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What a test needs from one arm: size, mean and the variance of one observation."""

    n: int
    mean: float
    variance: float


def proportion_summary(*, n: int, successes: float) -> Summary:
    """A 0/1 metric: mean p = x/n, variance p(1-p) (no Bessel correction, by convention)."""
    if n <= 0:
        return Summary(n=0, mean=math.nan, variance=math.nan)
    p = successes / n
    return Summary(n=n, mean=p, variance=p * (1.0 - p))


def mean_summary(*, n: int, total: float, total_sq: float) -> Summary:
    """A mean metric from (n, sum, sum of squares): sample variance with n-1."""
    if n <= 0:
        return Summary(n=0, mean=math.nan, variance=math.nan)
    mean = total / n
    if n == 1:
        return Summary(n=1, mean=mean, variance=math.nan)
    # Clamp tiny negatives from floating-point cancellation.
    variance = max((total_sq - total * total / n) / (n - 1), 0.0)
    return Summary(n=n, mean=mean, variance=variance)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a metric y and its pre-period covariate x for one arm."""

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0

    @classmethod
    def from_arrays(cls, y: np.ndarray, x: np.ndarray | None = None) -> Moments:
        y = np.asarray(y, dtype=float)
        x = np.zeros_like(y) if x is None else np.asarray(x, dtype=float)
        # einsum, not BLAS dot: BLAS threads contend badly on a busy machine.
        return cls(
            n=int(y.size),
            sum_y=float(y.sum()),
            sum_y2=float(np.einsum("i,i->", y, y)),
            sum_x=float(x.sum()),
            sum_x2=float(np.einsum("i,i->", x, x)),
            sum_xy=float(np.einsum("i,i->", x, y)),
        )

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            n=self.n + other.n,
            sum_y=self.sum_y + other.sum_y,
            sum_y2=self.sum_y2 + other.sum_y2,
            sum_x=self.sum_x + other.sum_x,
            sum_x2=self.sum_x2 + other.sum_x2,
            sum_xy=self.sum_xy + other.sum_xy,
        )

    def summary(self, *, proportion: bool) -> Summary:
        if proportion:
            return proportion_summary(n=self.n, successes=self.sum_y)
        return mean_summary(n=self.n, total=self.sum_y, total_sq=self.sum_y2)

    def _ddof(self, proportion: bool) -> int:
        return 0 if proportion else 1

    def var_x(self, *, proportion: bool) -> float:
        d = self.n - self._ddof(proportion)
        if d <= 0:
            return math.nan
        return max((self.sum_x2 - self.sum_x**2 / self.n) / d, 0.0)

    def cov_xy(self, *, proportion: bool) -> float:
        d = self.n - self._ddof(proportion)
        if d <= 0:
            return math.nan
        return (self.sum_xy - self.sum_x * self.sum_y / self.n) / d


# --- lift, confidence interval, p-value ----------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """One lift with its standard error, Welch df, confidence interval and p-value."""

    value: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class Comparison:
    """Treatment (b) against control (a) for one metric."""

    control: Summary
    treatment: Summary
    absolute: Estimate
    relative: Estimate | None  # None when the control mean is zero (lift undefined)

    def as_dict(self) -> dict:
        return asdict(self)


def welch_df(*, var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of two means."""
    qa, qb = var_a / n_a, var_b / n_b
    denominator = (qa * qa / (n_a - 1) if n_a > 1 else 0.0) + (
        qb * qb / (n_b - 1) if n_b > 1 else 0.0
    )
    if denominator == 0:
        return math.inf if qa + qb == 0 else float(n_a + n_b - 2)
    return (qa + qb) ** 2 / denominator


def _estimate(value: float, variance: float, df: float, alpha: float) -> Estimate:
    se = math.sqrt(variance) if variance >= 0 else math.nan
    if se == 0:
        # No spread at all: the difference is either exactly nothing or certain.
        p_value = 1.0 if value == 0 else 0.0
        return Estimate(value=value, se=0.0, df=df, ci_low=value, ci_high=value, p_value=p_value)
    if not math.isfinite(se) or not math.isfinite(df):
        return Estimate(value, se, df, math.nan, math.nan, math.nan)
    t_crit = float(sps.t.ppf(1.0 - alpha / 2.0, df))
    p_value = float(2.0 * sps.t.sf(abs(value) / se, df))
    return Estimate(
        value=value,
        se=se,
        df=df,
        ci_low=value - t_crit * se,
        ci_high=value + t_crit * se,
        p_value=p_value,
    )


def compare(a: Summary, b: Summary, *, alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Absolute and relative lift of b over a with Welch t intervals and p-values."""
    if a.n < 2 or b.n < 2:
        nan = Estimate(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        return Comparison(control=a, treatment=b, absolute=nan, relative=None)
    df = welch_df(var_a=a.variance, n_a=a.n, var_b=b.variance, n_b=b.n)
    absolute = _estimate(b.mean - a.mean, a.variance / a.n + b.variance / b.n, df, alpha)
    relative = None
    if a.mean != 0:
        rel_var = b.variance / (b.n * a.mean**2) + a.variance * b.mean**2 / (a.n * a.mean**4)
        relative = _estimate((b.mean - a.mean) / abs(a.mean), rel_var, df, alpha)
    return Comparison(control=a, treatment=b, absolute=absolute, relative=relative)


# --- CUPED ---------------------------------------------------------------------------------


def cuped_theta(a: Moments, b: Moments, *, proportion: bool) -> float:
    """theta = cov(y, x) / var(x) over both arms pooled; 0 when x does not vary."""
    pooled = a + b
    var_x = pooled.var_x(proportion=proportion)
    if not var_x or not math.isfinite(var_x):
        return 0.0
    return pooled.cov_xy(proportion=proportion) / var_x


def cuped_summary(m: Moments, *, theta: float, pooled_mean_x: float, proportion: bool) -> Summary:
    """The arm's CUPED-adjusted mean and the variance of y - theta x."""
    raw = m.summary(proportion=proportion)
    if m.n < 2:
        return raw
    mean = raw.mean - theta * (m.sum_x / m.n - pooled_mean_x)
    variance = (
        raw.variance
        + theta * theta * m.var_x(proportion=proportion)
        - 2.0 * theta * m.cov_xy(proportion=proportion)
    )
    return Summary(n=m.n, mean=mean, variance=max(variance, 0.0))


def compare_cuped(
    a: Moments, b: Moments, *, proportion: bool, alpha: float = DEFAULT_ALPHA
) -> tuple[Comparison, float]:
    """CUPED-adjusted comparison of b over a, and the pooled theta it used."""
    theta = cuped_theta(a, b, proportion=proportion)
    pooled = a + b
    pooled_mean_x = pooled.sum_x / pooled.n if pooled.n else 0.0
    adjusted_a = cuped_summary(a, theta=theta, pooled_mean_x=pooled_mean_x, proportion=proportion)
    adjusted_b = cuped_summary(b, theta=theta, pooled_mean_x=pooled_mean_x, proportion=proportion)
    return compare(adjusted_a, adjusted_b, alpha=alpha), theta


# --- sample ratio mismatch -----------------------------------------------------------------


def srm_p_value(observed: Sequence[int], weights: Sequence[float]) -> float:
    """Pearson chi-square p-value of the observed group sizes against the configured weights.

    A group with zero weight but any members is an outright mismatch (p = 0).
    """
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float)
    if obs.shape != w.shape or w.sum() <= 0:
        raise ValueError(f"observed {list(observed)} and weights {list(weights)} do not match")
    total = obs.sum()
    if total == 0:
        return 1.0
    expected = total * w / w.sum()
    if np.any((expected == 0) & (obs > 0)):
        return 0.0
    used = expected > 0
    if used.sum() < 2:
        return 1.0
    chi2 = float((((obs - expected) ** 2)[used] / expected[used]).sum())
    return float(sps.chi2.sf(chi2, int(used.sum()) - 1))


# --- winsorisation and multiple testing ----------------------------------------------------


def winsor_limits(values: np.ndarray, *, quantile: float) -> tuple[float, float]:
    """Lower and upper caps at the (1 - q) and q quantiles of the pooled values."""
    if not 0.5 < quantile < 1.0:
        raise ValueError(f"winsorisation quantile {quantile} must be in (0.5, 1), e.g. 0.99")
    if values.size == 0:
        return 0.0, 0.0
    low, high = np.quantile(values, [1.0 - quantile, quantile])
    return float(low), float(high)


def winsorise(values: np.ndarray, *, limits: tuple[float, float]) -> np.ndarray:
    """Values clipped to the caps; heavy spenders stop dominating a mean's variance."""
    return np.clip(values, limits[0], limits[1])


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


# --- planning: minimum detectable effect and power -----------------------------------------


def _sigma_relative(*, mean: float, variance: float, n_control: int, n_treatment: int) -> float:
    """Standard error of the relative lift under the null (both arms share mean and variance)."""
    if n_control <= 0 or n_treatment <= 0 or mean == 0:
        return math.inf
    return math.sqrt(variance / (n_control * mean**2) + variance / (n_treatment * mean**2))


def mde_relative(
    *,
    mean: float,
    variance: float,
    n_control: int,
    n_treatment: int,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> float:
    """Smallest relative lift detected with `power` at two-sided `alpha`."""
    sigma = _sigma_relative(
        mean=mean, variance=variance, n_control=n_control, n_treatment=n_treatment
    )
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * sigma)


def mde_proportion(
    *,
    baseline: float,
    n_control: int,
    n_treatment: int,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> float:
    """Relative MDE of a rate metric with the given baseline rate."""
    return mde_relative(
        mean=baseline,
        variance=baseline * (1 - baseline),
        n_control=n_control,
        n_treatment=n_treatment,
        alpha=alpha,
        power=power,
    )


def power_relative(
    *,
    effect: float,
    mean: float,
    variance: float,
    n_control: int,
    n_treatment: int,
    alpha: float = DEFAULT_ALPHA,
) -> float:
    """Probability that a true relative lift `effect` comes out significant."""
    sigma = _sigma_relative(
        mean=mean, variance=variance, n_control=n_control, n_treatment=n_treatment
    )
    if not math.isfinite(sigma):
        return 0.0
    if sigma == 0:  # no variance at all: any true effect is certain to show
        return 1.0 if effect else alpha
    z = sps.norm.ppf(1 - alpha / 2)
    shift = abs(effect) / sigma
    return float(sps.norm.cdf(shift - z) + sps.norm.cdf(-shift - z))
