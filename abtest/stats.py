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
- minimum detectable effect ~= (z_{1-alpha/2} + z_power) * sigma_delta, with CUPED
  sigma^2 x (1 - R^2) for the pre-period R^2;
- Holm's step-down (family-wise) and Benjamini-Hochberg's step-up (false discovery rate)
  corrections across the metrics of one comparison;
- ratio metrics (sum of numerators over sum of denominators) by the delta method;
- sequential testing by gbstats' always-valid confidence sequences, and gbstats' Gaussian
  effect-size Bayesian engine (chance to win, risk, credible interval).

"Not estimable" (a reason string, never a result that looks certain) where gbstats refuses:
fewer than 2 per arm, an arm without variation (for example 0 conversions: the delta-method
variance collapses to 0), or an undefined mean (a ratio over a zero denominator). The relative
lift alone is not estimable where the control mean is <= 0: a lift relative to a negative
baseline has the opposite sign to the change (gbstats divides by the signed mean); only the
absolute lift is shown there.

Everything works on sufficient statistics (n, sum, sum of squares, cross products), so the
database can aggregate and only a handful of numbers reach Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats as sps

DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
SRM_THRESHOLD = 0.001
DEFAULT_SEQUENTIAL_TUNING = 5000.0  # gbstats' sequential_tuning_parameter default
# Relative slack for floating-point cancellation in a variance computed from sums; anything
# more negative than this could not come from real data.
_VARIANCE_RTOL = 1e-9


class StatsError(ValueError):
    """Sufficient statistics that no real data could produce; the message names the metric."""


def _variance_or_raise(variance: float, scale: float, *, what: str) -> float:
    """`variance` clamped at 0 when only rounding made it negative; StatsError beyond that."""
    if variance >= 0 or not math.isfinite(variance):
        return variance
    if variance >= -_VARIANCE_RTOL * max(abs(scale), 1e-300):
        return 0.0
    raise StatsError(
        f"{what} is negative ({variance:.6g}): the sums of squares and cross products are "
        "inconsistent (no real data gives them); recompute the aggregates"
    )


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


def mean_summary(*, n: int, total: float, total_sq: float, metric: str | None = None) -> Summary:
    """A mean metric from (n, sum, sum of squares): sample variance with n-1.

    Rounding noise below 0 is clamped; a clearly negative variance raises StatsError.
    """
    if n <= 0:
        return Summary(n=0, mean=math.nan, variance=math.nan)
    mean = total / n
    if n == 1:
        return Summary(n=1, mean=mean, variance=math.nan)
    variance = _variance_or_raise(
        (total_sq - total * total / n) / (n - 1),
        total_sq / (n - 1),
        what=f"{metric or 'metric'}: the variance from n={n}, sum={total!r}, "
        f"sum of squares={total_sq!r}",
    )
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


def _undefined(value: float = math.nan) -> Estimate:
    """A point estimate without any inference (its interval and p-value undefined)."""
    return Estimate(value, math.nan, math.nan, math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Comparison:
    """Treatment (b) against control (a) for one metric.

    `not_estimable` says why no lift can be estimated at all (absolute then carries only the
    point difference, relative is None); `relative_not_estimable` says why only the relative
    lift is missing (the control mean is <= 0).
    """

    control: Summary
    treatment: Summary
    absolute: Estimate
    relative: Estimate | None
    not_estimable: str | None = None
    relative_not_estimable: str | None = None

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
    """Student-t interval and two-sided p-value; undefined (never certain) without spread."""
    if not (math.isfinite(value) and math.isfinite(variance) and variance > 0):
        return _undefined(value)
    se = math.sqrt(variance)
    if not math.isfinite(df) and not math.isinf(df):
        return _undefined(value)
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


def not_estimable_reason(a: Summary, b: Summary) -> str | None:
    """Why b cannot be compared with a (gbstats refuses the same cases), or None.

    - fewer than 2 advertisers in an arm: no variance estimate;
    - an undefined mean or variance (no data, a ratio over a zero denominator);
    - no variation in an arm (variance 0, e.g. 0 of n converted): the delta-method variance
      collapses and any interval would look certain.
    """
    if a.n < 2 or b.n < 2:
        return f"too few advertisers to test: control n={a.n}, treatment n={b.n} (need 2 per arm)"
    for name, arm in (("control", a), ("treatment", b)):
        if not (math.isfinite(arm.mean) and math.isfinite(arm.variance)):
            return (
                f"the {name} arm's mean or variance is undefined "
                "(no data, or a ratio over a zero denominator)"
            )
    for name, arm in (("control", a), ("treatment", b)):
        if arm.variance <= 0:
            return (
                f"no variation in the {name} arm (every advertiser has the value "
                f"{arm.mean:.6g}): its variance is 0, so any interval would look certain"
            )
    return None


def relative_not_estimable_reason(control_mean: float) -> str | None:
    """Why a relative lift over this control mean is not shown (it is <= 0), or None."""
    if control_mean > 0:
        return None
    return (
        f"control mean {control_mean:.6g} is not positive: a lift relative to it would not "
        "keep the sign of the change; see the absolute lift"
    )


def relative_variance(a: Summary, b: Summary) -> float:
    """Delta-method variance of (mean_b - mean_a) / mean_a:

    var_b / (n_b mean_a^2) + var_a mean_b^2 / (n_a mean_a^4).
    """
    return b.variance / (b.n * a.mean**2) + a.variance * b.mean**2 / (a.n * a.mean**4)


def compare(a: Summary, b: Summary, *, alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Absolute and relative lift of b over a with Welch t intervals and p-values.

    absolute = mean_b - mean_a, variance var_a/n_a + var_b/n_b;
    relative = (mean_b - mean_a) / mean_a with `relative_variance`; both on Welch's df.
    """
    reason = not_estimable_reason(a, b)
    if reason:
        return Comparison(
            a, b, absolute=_undefined(b.mean - a.mean), relative=None, not_estimable=reason
        )
    df = welch_df(var_a=a.variance, n_a=a.n, var_b=b.variance, n_b=b.n)
    absolute = _estimate(b.mean - a.mean, a.variance / a.n + b.variance / b.n, df, alpha)
    relative_reason = relative_not_estimable_reason(a.mean)
    relative = None
    if relative_reason is None:
        relative = _estimate((b.mean - a.mean) / a.mean, relative_variance(a, b), df, alpha)
    return Comparison(
        a, b, absolute=absolute, relative=relative, relative_not_estimable=relative_reason
    )


# --- CUPED ---------------------------------------------------------------------------------


def cuped_theta(a: Moments, b: Moments, *, proportion: bool) -> float:
    """theta = cov(y, x) / var(x) over both arms pooled; 0 when x does not vary."""
    pooled = a + b
    var_x = pooled.var_x(proportion=proportion)
    if not var_x or not math.isfinite(var_x):
        return 0.0
    return pooled.cov_xy(proportion=proportion) / var_x


def cuped_summary(
    m: Moments,
    *,
    theta: float,
    pooled_mean_x: float,
    proportion: bool,
    metric: str | None = None,
    arm: str = "an",
) -> Summary:
    """The arm's CUPED-adjusted mean and the variance of y - theta x.

    mean = mean_y - theta (mean_x - pooled mean_x);
    variance = var_y + theta^2 var_x - 2 theta cov(y, x), which real data never makes negative:
    a clearly negative one raises StatsError naming the metric.
    """
    raw = m.summary(proportion=proportion)
    if m.n < 2:
        return raw
    mean = raw.mean - theta * (m.sum_x / m.n - pooled_mean_x)
    var_x, cov = m.var_x(proportion=proportion), m.cov_xy(proportion=proportion)
    variance = _variance_or_raise(
        raw.variance + theta * theta * var_x - 2.0 * theta * cov,
        raw.variance + theta * theta * var_x,
        what=f"{metric or 'metric'}: the CUPED-adjusted variance of the {arm} arm",
    )
    return Summary(n=m.n, mean=mean, variance=variance)


def cuped_relative_variance(a: Moments, b: Moments, *, theta: float, proportion: bool) -> float:
    """Delta-method variance of the CUPED relative lift (gbstats main):

    lift = (adj_b - adj_a) / ybar_a, divided by the unadjusted control mean ybar_a;
    var = var(y_b - theta x_b) / (n_b ybar_a^2)
        + (var(y_a) ybar_b^2 / ybar_a^2 - 2 theta cov_a(y, x) ybar_b / ybar_a
           + theta^2 var(x_a)) / (n_a ybar_a^2),
    with ybar_b the unadjusted treatment mean (the pre-period means are equal by
    randomisation, so the gradient is taken there).
    """
    ya, yb = a.sum_y / a.n, b.sum_y / b.n
    var_ya = a.summary(proportion=proportion).variance
    var_b_adjusted = (
        b.summary(proportion=proportion).variance
        + theta**2 * b.var_x(proportion=proportion)
        - 2.0 * theta * b.cov_xy(proportion=proportion)
    )
    control = (
        var_ya * yb**2 / ya**2
        - 2.0 * theta * a.cov_xy(proportion=proportion) * yb / ya
        + theta**2 * a.var_x(proportion=proportion)
    )
    return var_b_adjusted / (b.n * ya**2) + control / (a.n * ya**2)


def compare_cuped(
    a: Moments,
    b: Moments,
    *,
    proportion: bool,
    alpha: float = DEFAULT_ALPHA,
    metric: str | None = None,
) -> tuple[Comparison, float]:
    """CUPED-adjusted comparison of b over a, and the pooled theta it used.

    The absolute lift is adj_b - adj_a with the adjusted variances; the relative lift follows
    gbstats main (not its 0.8 release): over the unadjusted control mean, with
    `cuped_relative_variance`. Shown only where the unadjusted control mean is > 0.
    """
    theta = cuped_theta(a, b, proportion=proportion)
    pooled = a + b
    pooled_mean_x = pooled.sum_x / pooled.n if pooled.n else 0.0
    adjusted_a, adjusted_b = (
        cuped_summary(
            m,
            theta=theta,
            pooled_mean_x=pooled_mean_x,
            proportion=proportion,
            metric=metric,
            arm=arm,
        )
        for m, arm in ((a, "control"), (b, "treatment"))
    )
    base = compare(adjusted_a, adjusted_b, alpha=alpha)
    if base.not_estimable:
        return base, theta
    control_mean = a.sum_y / a.n
    reason = relative_not_estimable_reason(control_mean)
    if reason:
        return replace(base, relative=None, relative_not_estimable=reason), theta
    relative = _estimate(
        (adjusted_b.mean - adjusted_a.mean) / control_mean,
        cuped_relative_variance(a, b, theta=theta, proportion=proportion),
        base.absolute.df,
        alpha,
    )
    return replace(base, relative=relative, relative_not_estimable=None), theta


# --- sample ratio mismatch -----------------------------------------------------------------


def srm_p_value(observed: Sequence[int], weights: Sequence[float]) -> float:
    """Pearson chi-square p-value of the observed group sizes against the configured weights.

    chi2 = sum over groups with weight > 0 of (observed - expected)^2 / expected, on
    (number of such groups - 1) degrees of freedom.

    A group with zero weight but any members is an outright mismatch: p = 0. The hash cannot
    put anyone in a zero-weight group, so a member there proves the assignment is broken
    however few there are. gbstats instead leaves such a group out of the sum (its test then
    never sees the members) while still counting it in the degrees of freedom; we count only
    the groups that can receive members, so an unused zero-weight holdout changes nothing.
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


def _sigma_relative(
    *, mean: float, variance: float, n_control: int, n_treatment: int, r_squared: float = 0.0
) -> float:
    """Standard error of the relative lift under the null (both arms share mean and variance).

    sigma = sqrt(variance (1 - R^2) (1/n_a + 1/n_b)) / |mean|: CUPED with a pre-period that
    explains R^2 of the metric's variance leaves (1 - R^2) of it.
    """
    if not 0.0 <= r_squared < 1.0:
        raise ValueError(f"pre-period R^2 {r_squared} must be in [0, 1)")
    if n_control <= 0 or n_treatment <= 0 or mean == 0:
        return math.inf
    adjusted = variance * (1.0 - r_squared)
    return math.sqrt(adjusted / (n_control * mean**2) + adjusted / (n_treatment * mean**2))


def cuped_r_squared(m: Moments, *, proportion: bool) -> float:
    """Share of the metric's variance a pre-period covariate explains: cov(y, x)^2 / (var x var y).

    From a past period's moments (y the metric, x the period before it), this is what CUPED
    would remove: the adjusted variance is var_y (1 - R^2). 0 when either does not vary.
    """
    var_y = m.summary(proportion=proportion).variance
    var_x = m.var_x(proportion=proportion)
    if not (var_x > 0 and var_y > 0):
        return 0.0
    return float(min(m.cov_xy(proportion=proportion) ** 2 / (var_x * var_y), 1.0))


def mde_relative(
    *,
    mean: float,
    variance: float,
    n_control: int,
    n_treatment: int,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    r_squared: float = 0.0,
) -> float:
    """Smallest relative lift detected with `power` at two-sided `alpha`.

    MDE = (z_{1-alpha/2} + z_power) sigma, sigma from `_sigma_relative` (CUPED: r_squared > 0).
    """
    sigma = _sigma_relative(
        mean=mean,
        variance=variance,
        n_control=n_control,
        n_treatment=n_treatment,
        r_squared=r_squared,
    )
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * sigma)


def mde_proportion(
    *,
    baseline: float,
    n_control: int,
    n_treatment: int,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    r_squared: float = 0.0,
) -> float:
    """Relative MDE of a rate metric with the given baseline rate (variance p(1-p))."""
    return mde_relative(
        mean=baseline,
        variance=baseline * (1 - baseline),
        n_control=n_control,
        n_treatment=n_treatment,
        alpha=alpha,
        power=power,
        r_squared=r_squared,
    )


def power_relative(
    *,
    effect: float,
    mean: float,
    variance: float,
    n_control: int,
    n_treatment: int,
    alpha: float = DEFAULT_ALPHA,
    r_squared: float = 0.0,
) -> float:
    """Probability that a true relative lift `effect` comes out significant.

    power = Phi(|effect|/sigma - z_{1-alpha/2}) + Phi(-|effect|/sigma - z_{1-alpha/2}).
    """
    sigma = _sigma_relative(
        mean=mean,
        variance=variance,
        n_control=n_control,
        n_treatment=n_treatment,
        r_squared=r_squared,
    )
    if not math.isfinite(sigma):
        return 0.0
    if sigma == 0:  # no variance at all: any true effect is certain to show
        return 1.0 if effect else alpha
    z = sps.norm.ppf(1 - alpha / 2)
    shift = abs(effect) / sigma
    return float(sps.norm.cdf(shift - z) + sps.norm.cdf(-shift - z))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), in the given order.

    With the m defined p-values sorted p_(1) <= ... <= p_(m):
    q_(i) = min over j >= i of min(1, m p_(j) / j). NaN stays NaN and is not counted in m.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = m * p[order] / np.arange(1, m + 1)
    adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return adjusted


# --- ratio metrics -------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioMoments:
    """Sufficient statistics of a ratio metric sum(m) / sum(d) for one arm (n advertisers)."""

    n: int
    sum_m: float
    sum_m2: float
    sum_d: float
    sum_d2: float
    sum_md: float

    @classmethod
    def from_arrays(cls, m: np.ndarray, d: np.ndarray) -> RatioMoments:
        m, d = np.asarray(m, dtype=float), np.asarray(d, dtype=float)
        return cls(
            n=int(m.size),
            sum_m=float(m.sum()),
            sum_m2=float(np.einsum("i,i->", m, m)),
            sum_d=float(d.sum()),
            sum_d2=float(np.einsum("i,i->", d, d)),
            sum_md=float(np.einsum("i,i->", m, d)),
        )


def ratio_summary(r: RatioMoments, *, metric: str | None = None) -> Summary:
    """A ratio metric as one arm's Summary, by the delta method (gbstats' RatioStatistic).

    mean = mbar / dbar (= sum m / sum d); variance of one advertiser's contribution
    var_m / dbar^2 - 2 cov(m, d) mbar / dbar^3 + mbar^2 var_d / dbar^4,
    all (co)variances with n-1, so `compare` on two of them gives the ratio's lifts.
    Undefined (NaN) with fewer than 2 advertisers or a zero denominator.
    """
    if r.n < 2 or r.sum_d == 0:
        mean = r.sum_m / r.sum_d if r.sum_d else math.nan
        return Summary(n=r.n, mean=mean, variance=math.nan)
    name = metric or "ratio metric"
    mbar, dbar = r.sum_m / r.n, r.sum_d / r.n
    var_m = mean_summary(n=r.n, total=r.sum_m, total_sq=r.sum_m2, metric=f"{name} numerator")
    var_d = mean_summary(n=r.n, total=r.sum_d, total_sq=r.sum_d2, metric=f"{name} denominator")
    cov = (r.sum_md - r.sum_m * r.sum_d / r.n) / (r.n - 1)
    terms = (
        var_m.variance / dbar**2,
        -2.0 * cov * mbar / dbar**3,
        mbar**2 * var_d.variance / dbar**4,
    )
    variance = _variance_or_raise(
        sum(terms), terms[0] + terms[2], what=f"{name}: the delta-method variance"
    )
    return Summary(n=r.n, mean=mbar / dbar, variance=variance)


def compare_ratio(
    a: RatioMoments, b: RatioMoments, *, alpha: float = DEFAULT_ALPHA, metric: str | None = None
) -> Comparison:
    """Absolute and relative lift of a ratio metric, b over a (gbstats' ratio t-test)."""
    return compare(ratio_summary(a, metric=metric), ratio_summary(b, metric=metric), alpha=alpha)


def incremental_ratio(
    a: RatioMoments, b: RatioMoments, *, alpha: float = DEFAULT_ALPHA
) -> tuple[Estimate, str | None]:
    """(mbar_b - mbar_a) / (dbar_b - dbar_a), e.g. extra reward per extra active advertiser.

    Delta method on the two independent arm differences: with Dm, Dd the differences of the
    per-advertiser means, var(Dm) = var_m,a/n_a + var_m,b/n_b, var(Dd) likewise and
    cov(Dm, Dd) = cov_a(m, d)/n_a + cov_b(m, d)/n_b,
    var = var(Dm)/Dd^2 - 2 cov(Dm, Dd) Dm/Dd^3 + Dm^2 var(Dd)/Dd^4; normal interval.
    Not estimable (reason returned) unless Dd is significantly above 0 at `alpha`: near a
    zero denominator the ratio and its interval are meaningless.
    """
    if a.n < 2 or b.n < 2:
        return _undefined(), "too few advertisers to test (need 2 per arm)"

    def parts(r: RatioMoments) -> tuple[float, float, float, float, float]:
        var_m = (r.sum_m2 - r.sum_m**2 / r.n) / (r.n - 1)
        var_d = (r.sum_d2 - r.sum_d**2 / r.n) / (r.n - 1)
        cov = (r.sum_md - r.sum_m * r.sum_d / r.n) / (r.n - 1)
        return r.sum_m / r.n, r.sum_d / r.n, var_m / r.n, var_d / r.n, cov / r.n

    ma, da, vma, vda, ca = parts(a)
    mb, db, vmb, vdb, cb = parts(b)
    dm, dd = mb - ma, db - da
    var_dm, var_dd, cov = vma + vmb, vda + vdb, ca + cb
    z = float(sps.norm.ppf(1.0 - alpha / 2.0))
    if not dd > z * math.sqrt(max(var_dd, 0.0)):
        return _undefined(dm / dd if dd else math.nan), (
            f"the denominator's difference {dd:.6g} is not significantly above 0"
        )
    variance = var_dm / dd**2 - 2.0 * cov * dm / dd**3 + dm**2 * var_dd / dd**4
    return _estimate(dm / dd, variance, math.inf, alpha), None


# --- sequential testing --------------------------------------------------------------------


def sequential_rho(*, alpha: float, tuning: float = DEFAULT_SEQUENTIAL_TUNING) -> float:
    """gbstats' mixing parameter (Waudby-Smith et al. 2023, eq. 161):

    rho = sqrt((-2 ln alpha + ln(-2 ln alpha + 1)) / N_tune).
    """
    if not 0 < alpha < 1 or tuning <= 0:
        raise ValueError(f"sequential test needs 0 < alpha < 1 and tuning > 0 ({alpha}, {tuning})")
    log_alpha = math.log(alpha)
    return math.sqrt((-2.0 * log_alpha + math.log(-2.0 * log_alpha + 1.0)) / tuning)


def sequential_estimate(
    estimate: Estimate,
    *,
    n_total: int,
    alpha: float = DEFAULT_ALPHA,
    tuning: float = DEFAULT_SEQUENTIAL_TUNING,
) -> Estimate:
    """The always-valid version of a fixed-horizon estimate (gbstats' sequential mode).

    With N = n_a + n_b, s^2 = se^2 N and rho from `sequential_rho`:
    half-width = sqrt(s^2) sqrt(2 (N rho^2 + 1) ln(sqrt(N rho^2 + 1) / alpha) / (N rho)^2)
    (eq. 9); p = min(1, 1/e) with e = exp(rho^2 t^2 / (2 (N rho^2 + 1))) / sqrt(N rho^2 + 1)
    and t^2 = value^2 N / se^2 (eq. 155). Valid however often the experiment is looked at.
    """
    if not (math.isfinite(estimate.se) and estimate.se > 0 and n_total > 0):
        return _undefined(estimate.value)
    rho = sequential_rho(alpha=alpha, tuning=tuning)
    n = float(n_total)
    s2 = estimate.se**2 * n
    spread = n * rho**2 + 1.0
    half = math.sqrt(s2) * math.sqrt(
        2.0 * spread * math.log(math.sqrt(spread) / alpha) / (n * rho) ** 2
    )
    t2 = estimate.value**2 * n / estimate.se**2
    log_e = rho**2 * t2 / (2.0 * spread) - 0.5 * math.log(spread)
    p_value = math.exp(-log_e) if log_e > 0 else 1.0
    return Estimate(
        value=estimate.value,
        se=estimate.se,
        df=math.inf,
        ci_low=estimate.value - half,
        ci_high=estimate.value + half,
        p_value=p_value,
    )


def compare_sequential(
    comparison: Comparison,
    *,
    alpha: float = DEFAULT_ALPHA,
    tuning: float = DEFAULT_SEQUENTIAL_TUNING,
) -> Comparison:
    """The comparison with always-valid intervals and p-values (plain, CUPED or ratio)."""
    n_total = comparison.control.n + comparison.treatment.n
    if comparison.not_estimable:
        return comparison

    def seq(e: Estimate | None) -> Estimate | None:
        if e is None:
            return None
        return sequential_estimate(e, n_total=n_total, alpha=alpha, tuning=tuning)

    return replace(comparison, absolute=seq(comparison.absolute), relative=seq(comparison.relative))


# --- Bayesian: gbstats' Gaussian effect-size engine ----------------------------------------


@dataclass(frozen=True)
class GaussianPrior:
    """Normal prior on the effect; improper (flat, ignored) unless `proper`, as gbstats."""

    mean: float = 0.0
    variance: float = 1.0
    proper: bool = False


@dataclass(frozen=True)
class BayesianResult:
    """Posterior of one lift: mean, sd, credible interval, chance to win and risk.

    risk_control is the expected loss of keeping control, risk_treatment that of shipping the
    treatment (both >= 0, in the units of the lift).
    """

    expected: float
    sd: float
    ci_low: float
    ci_high: float
    chance_to_win: float
    risk_control: float
    risk_treatment: float


def bayesian_estimate(
    estimate: Estimate, *, prior: GaussianPrior = GaussianPrior(), alpha: float = DEFAULT_ALPHA
) -> BayesianResult | None:
    """Normal posterior of the effect from its estimate (gbstats' EffectBayesianABTest).

    With data mean d and variance v = se^2: precision = 1/v + [proper]/v0,
    mean = (d/v + m0/v0) / precision if the prior is proper, else d; sd = sqrt(1/precision).
    chance to win = P(effect > 0); credible interval = normal quantiles alpha/2, 1 - alpha/2;
    risk_control = E[max(effect, 0)] = mu Phi(mu/sd) + sd phi(mu/sd),
    risk_treatment = E[max(-effect, 0)] = sd phi(mu/sd) - mu Phi(-mu/sd).
    None when the estimate has no spread (not estimable).
    """
    if not (math.isfinite(estimate.se) and estimate.se > 0 and math.isfinite(estimate.value)):
        return None
    data_precision = 1.0 / estimate.se**2
    prior_precision = 1.0 / prior.variance if prior.proper else 0.0
    precision = data_precision + prior_precision
    if prior.proper:
        mu = (estimate.value * data_precision + prior.mean * prior_precision) / precision
    else:
        mu = estimate.value
    sd = math.sqrt(1.0 / precision)
    z = mu / sd
    low, high = (float(q) for q in sps.norm.ppf([alpha / 2, 1 - alpha / 2], mu, sd))
    density = float(sps.norm.pdf(z))
    return BayesianResult(
        expected=mu,
        sd=sd,
        ci_low=low,
        ci_high=high,
        chance_to_win=float(sps.norm.sf(-z)),
        risk_control=mu * float(sps.norm.cdf(z)) + sd * density,
        risk_treatment=sd * density - mu * float(sps.norm.cdf(-z)),
    )


@dataclass(frozen=True)
class BayesianComparison:
    """Bayesian view of one comparison: the relative and absolute lifts' posteriors."""

    absolute: BayesianResult | None
    relative: BayesianResult | None
    not_estimable: str | None = None
    relative_not_estimable: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def compare_bayesian(
    comparison: Comparison,
    *,
    prior: GaussianPrior = GaussianPrior(),
    alpha: float = DEFAULT_ALPHA,
    baseline: float | None = None,
) -> BayesianComparison:
    """Posteriors of both lifts; the prior is on the relative lift, as gbstats' default.

    For the absolute lift the prior is rescaled by the (unadjusted) control mean `baseline`
    (default: the comparison's control mean): mean m0 |baseline|, variance v0 baseline^2.
    """
    base = comparison.control.mean if baseline is None else baseline
    absolute_prior = prior
    if prior.proper:
        absolute_prior = GaussianPrior(prior.mean * abs(base), prior.variance * base**2, True)
    relative = None
    if comparison.relative is not None:
        relative = bayesian_estimate(comparison.relative, prior=prior, alpha=alpha)
    return BayesianComparison(
        absolute=bayesian_estimate(comparison.absolute, prior=absolute_prior, alpha=alpha),
        relative=relative,
        not_estimable=comparison.not_estimable,
        relative_not_estimable=comparison.relative_not_estimable,
    )
