"""Write tests/abtest/data/gbstats_vectors.json: gbstats' answers on seeded random cases.

gbstats pins numpy < 2 and pandas < 2, which our numpy cannot share a virtual environment
with, so its answers are computed once, in a separate environment, and committed:

    python3.11 -m venv /tmp/gbvenv && /tmp/gbvenv/bin/pip install gbstats==0.8.0 numpy scipy
    /tmp/gbvenv/bin/python scripts/gbstats_vectors.py

Each case stores the sufficient statistics it was computed from and gbstats' results:
frequentist (fixed horizon), sequential (always-valid) and Bayesian (Gaussian effect-size
engine with its default improper prior), relative and absolute, plus SRM p-values.

The CUPED relative lift is the one place where the 0.8 release and gbstats' main branch
differ: the release keeps the plain delta-method variance (with the adjusted control variance),
main takes the delta method through the adjustment itself. The release's CUPED relative
results are not stored; `cuped_relative_main` holds main's variance, evaluated here on the
release's own statistics objects (its theta, variances and covariances), and the interval and
p-value it gives on the release's Welch degrees of freedom.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig
from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from gbstats.utils import check_srm
from scipy.stats import t

OUT = Path(__file__).resolve().parent.parent / "tests" / "abtest" / "data" / "gbstats_vectors.json"
CASES_PER_KIND = 12


def _frequentist(stat_a, stat_b, *, alpha: float, difference: str) -> dict:
    result = TwoSidedTTest(
        stat_a, stat_b, FrequentistConfig(alpha=alpha, difference_type=difference)
    ).compute_result()
    return {"expected": result.expected, "ci": list(result.ci), "p_value": result.p_value,
            "error": result.error_message}  # fmt: skip


def _sequential(stat_a, stat_b, *, alpha: float, tuning: float, difference: str) -> dict:
    config = SequentialConfig(
        alpha=alpha, difference_type=difference, sequential_tuning_parameter=tuning
    )
    result = SequentialTwoSidedTTest(stat_a, stat_b, config).compute_result()
    return {"expected": result.expected, "ci": list(result.ci), "p_value": result.p_value,
            "error": result.error_message}  # fmt: skip


def _bayesian(stat_a, stat_b, *, alpha: float, difference: str) -> dict:
    config = EffectBayesianConfig(alpha=alpha, difference_type=difference)
    result = EffectBayesianABTest(stat_a, stat_b, config).compute_result()
    return {"expected": result.expected, "ci": list(result.ci),
            "chance_to_win": result.chance_to_win, "risk": list(result.risk),
            "error": result.error_message}  # fmt: skip


def _all(make, *, alpha: float, tuning: float) -> dict:
    """Every engine on fresh statistics objects (gbstats sets theta on them in place)."""
    out = {}
    for difference in ("relative", "absolute"):
        out[f"frequentist_{difference}"] = _frequentist(*make(), alpha=alpha, difference=difference)
        out[f"sequential_{difference}"] = _sequential(
            *make(), alpha=alpha, tuning=tuning, difference=difference
        )
        out[f"bayesian_{difference}"] = _bayesian(*make(), alpha=alpha, difference=difference)
    return out


def _mean_sums(values: np.ndarray) -> dict:
    return {"n": int(values.size), "sum": float(values.sum()),
            "sum_sq": float((values * values).sum())}  # fmt: skip


def _settings(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.choice([0.05, 0.1, 0.01])), float(rng.choice([5000.0, 500.0, 20000.0]))


def proportion_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for _ in range(CASES_PER_KIND):
        n_a, n_b = (int(v) for v in rng.integers(200, 60_000, 2))
        rate = rng.uniform(0.03, 0.6)
        x_a = int(rng.binomial(n_a, rate))
        x_b = int(rng.binomial(n_b, rate * rng.uniform(0.9, 1.15)))
        alpha, tuning = _settings(rng)

        def make(n_a=n_a, n_b=n_b, x_a=x_a, x_b=x_b):
            return ProportionStatistic(n=n_a, sum=x_a), ProportionStatistic(n=n_b, sum=x_b)

        cases.append({"a": {"n": n_a, "sum": x_a}, "b": {"n": n_b, "sum": x_b}, "alpha": alpha,
                      "tuning": tuning, **_all(make, alpha=alpha, tuning=tuning)})  # fmt: skip
    return cases


def mean_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for _ in range(CASES_PER_KIND):
        n_a, n_b = (int(v) for v in rng.integers(50, 20_000, 2))
        shape, scale = rng.uniform(0.3, 3.0), rng.uniform(1.0, 50.0)
        a = _mean_sums(rng.gamma(shape, scale, n_a))
        b = _mean_sums(rng.gamma(shape, scale * rng.uniform(0.9, 1.15), n_b))
        alpha, tuning = _settings(rng)

        def make(a=a, b=b):
            return tuple(
                SampleMeanStatistic(n=s["n"], sum=s["sum"], sum_squares=s["sum_sq"]) for s in (a, b)
            )

        cases.append({"a": a, "b": b, "alpha": alpha, "tuning": tuning,
                      **_all(make, alpha=alpha, tuning=tuning)})  # fmt: skip
    return cases


def _cuped_sums(y: np.ndarray, x: np.ndarray) -> dict:
    return {"n": int(y.size), "sum_y": float(y.sum()), "sum_y2": float((y * y).sum()),
            "sum_x": float(x.sum()), "sum_x2": float((x * x).sum()),
            "sum_xy": float((x * y).sum())}  # fmt: skip


def _ra(s: dict, proportion: bool) -> RegressionAdjustedStatistic:
    if proportion:
        post = ProportionStatistic(n=s["n"], sum=s["sum_y"])
        pre = ProportionStatistic(n=s["n"], sum=s["sum_x"])
    else:
        post = SampleMeanStatistic(n=s["n"], sum=s["sum_y"], sum_squares=s["sum_y2"])
        pre = SampleMeanStatistic(n=s["n"], sum=s["sum_x"], sum_squares=s["sum_x2"])
    return RegressionAdjustedStatistic(
        n=s["n"], post_statistic=post, pre_statistic=pre, post_pre_sum_of_products=s["sum_xy"],
        theta=0,
    )  # fmt: skip


def _cuped_relative_main(a: dict, b: dict, *, proportion: bool, alpha: float) -> dict:
    """Main's relative CUPED variance on the release's statistics (theta set by the release)."""
    test = TwoSidedTTest(_ra(a, proportion), _ra(b, proportion), FrequentistConfig(alpha=alpha))
    sa, sb = test.stat_a, test.stat_b
    theta = sa.theta
    ya, yb = sa.post_statistic.mean, sb.post_statistic.mean
    var_b = sb.post_statistic.variance + theta**2 * sb.pre_statistic.variance
    var_b -= 2 * theta * sb.covariance
    var_a = (
        sa.post_statistic.variance * yb**2 / ya**2
        - 2 * theta * sa.covariance * yb / ya
        + theta**2 * sa.pre_statistic.variance
    )
    variance = var_b / (sb.n * ya**2) + var_a / (sa.n * ya**2)
    estimate = (sb.mean - sa.mean) / ya
    se = float(np.sqrt(variance))
    width = float(t.ppf(1 - alpha / 2, test.dof)) * se
    return {"expected": estimate, "ci": [estimate - width, estimate + width],
            "p_value": float(2 * t.sf(abs(estimate) / se, test.dof)), "theta": theta}  # fmt: skip


def cuped_cases(rng: np.random.Generator, *, proportion: bool) -> list[dict]:
    cases = []
    for _ in range(CASES_PER_KIND):
        n_a, n_b = (int(v) for v in rng.integers(200, 20_000, 2))
        if proportion:
            rate = rng.uniform(0.05, 0.5)
            x = (rng.uniform(size=n_a + n_b) < rate).astype(float)
            keep = rng.uniform(size=n_a + n_b) < rng.uniform(0.5, 0.9)
            y = np.where(keep, x, (rng.uniform(size=n_a + n_b) < rate).astype(float))
            y[n_a:] = np.maximum(y[n_a:], rng.uniform(size=n_b) < rng.uniform(0.0, 0.05))
        else:
            x = rng.gamma(rng.uniform(0.5, 3.0), rng.uniform(1.0, 20.0), n_a + n_b)
            y = rng.uniform(0.3, 1.2) * x + rng.gamma(1.0, rng.uniform(1.0, 10.0), n_a + n_b)
            y[n_a:] *= rng.uniform(0.95, 1.1)
        a, b = _cuped_sums(y[:n_a], x[:n_a]), _cuped_sums(y[n_a:], x[n_a:])
        alpha, tuning = _settings(rng)
        config = FrequentistConfig(alpha=alpha, difference_type="absolute")
        absolute = TwoSidedTTest(_ra(a, proportion), _ra(b, proportion), config).compute_result()
        seq_config = SequentialConfig(
            alpha=alpha, difference_type="absolute", sequential_tuning_parameter=tuning
        )
        sequential = SequentialTwoSidedTTest(
            _ra(a, proportion), _ra(b, proportion), seq_config
        ).compute_result()
        cases.append({
            "a": a, "b": b, "alpha": alpha, "tuning": tuning,
            "frequentist_absolute": {"expected": absolute.expected, "ci": list(absolute.ci),
                                     "p_value": absolute.p_value},
            "sequential_absolute": {"expected": sequential.expected, "ci": list(sequential.ci),
                                    "p_value": sequential.p_value},
            "cuped_relative_main": _cuped_relative_main(a, b, proportion=proportion, alpha=alpha),
        })  # fmt: skip
    return cases


def _ratio_sums(m: np.ndarray, d: np.ndarray) -> dict:
    return {"n": int(m.size), "sum_m": float(m.sum()), "sum_m2": float((m * m).sum()),
            "sum_d": float(d.sum()), "sum_d2": float((d * d).sum()),
            "sum_md": float((m * d).sum())}  # fmt: skip


def _ratio(s: dict) -> RatioStatistic:
    return RatioStatistic(
        n=s["n"],
        m_statistic=SampleMeanStatistic(n=s["n"], sum=s["sum_m"], sum_squares=s["sum_m2"]),
        d_statistic=SampleMeanStatistic(n=s["n"], sum=s["sum_d"], sum_squares=s["sum_d2"]),
        m_d_sum_of_products=s["sum_md"],
    )


def ratio_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for _ in range(CASES_PER_KIND):
        n_a, n_b = (int(v) for v in rng.integers(100, 20_000, 2))
        rate = rng.uniform(0.1, 0.7)
        d = (rng.uniform(size=n_a + n_b) < rate).astype(float) * rng.integers(1, 4, n_a + n_b)
        m = d * rng.gamma(rng.uniform(0.5, 3.0), rng.uniform(1.0, 30.0), n_a + n_b)
        m[n_a:] *= rng.uniform(0.9, 1.15)
        a, b = _ratio_sums(m[:n_a], d[:n_a]), _ratio_sums(m[n_a:], d[n_a:])
        alpha, tuning = _settings(rng)

        def make(a=a, b=b):
            return _ratio(a), _ratio(b)

        cases.append({"a": a, "b": b, "alpha": alpha, "tuning": tuning,
                      **_all(make, alpha=alpha, tuning=tuning)})  # fmt: skip
    return cases


def srm_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for _ in range(CASES_PER_KIND):
        k = int(rng.integers(2, 6))
        weights = rng.uniform(0.05, 1.0, k)
        weights = (weights / weights.sum()).tolist()
        users = rng.multinomial(int(rng.integers(1000, 200_000)), weights).tolist()
        users[0] = int(users[0] * rng.uniform(0.97, 1.03))
        cases.append({"users": users, "weights": weights, "p_value": check_srm(users, weights)})
    return cases


def main() -> None:
    rng = np.random.default_rng(20240611)
    vectors = {
        "gbstats_version": importlib.metadata.version("gbstats"),
        "proportion": proportion_cases(rng),
        "mean": mean_cases(rng),
        "cuped_mean": cuped_cases(rng, proportion=False),
        "cuped_proportion": cuped_cases(rng, proportion=True),
        "ratio": ratio_cases(rng),
        "srm": srm_cases(rng),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(vectors, indent=1, default=float) + "\n")
    count = sum(len(v) for v in vectors.values() if isinstance(v, list))
    print(f"wrote {count} cases to {OUT.name}")


if __name__ == "__main__":
    main()
