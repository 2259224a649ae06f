"""The report rows carry the not-estimable reasons and Benjamini-Hochberg beside Holm."""

from __future__ import annotations

import numpy as np
import pytest

from abtest import analysis, stats


def _metrics(rng: np.random.Generator, n: int) -> analysis.AdvertiserMetrics:
    group = np.repeat([analysis.CONTROL, analysis.TREATMENT], n)
    spend = rng.gamma(1.0, 20.0, 2 * n) * (rng.uniform(size=2 * n) < 0.5)
    zeros = np.zeros(2 * n)
    return analysis.AdvertiserMetrics(
        group=group, targeted=np.ones(2 * n, dtype=bool), spend=spend,
        clicks=np.floor(spend / 5), active_days=(spend > 0).astype(float), pre_spend=spend * 0.8,
        pre_clicks=zeros, pre_active_days=zeros, reward=zeros, first_active_day=zeros - 1,
    )  # fmt: skip


@pytest.fixture
def rows() -> list[dict]:
    return analysis.report_rows(_metrics(np.random.default_rng(6), 300), alpha=0.05,
                                winsor_quantile=None)  # fmt: skip


def test_it_marks_a_metric_without_variation_not_estimable(rows):
    reward = next(r for r in rows if r["metric"] == "reward_cost" and r["adjustment"] == "none")
    assert "no variation" in reward["not_estimable"]
    assert reward["p_value"] is None and reward["p_value_bh"] is None
    assert reward["significant"] is False


def test_it_adds_benjamini_hochberg_beside_holm_per_family(rows):
    family = [r for r in rows if r["population"] == "itt" and r["adjustment"] == "none"
              and r["holm_family"] == "primary"]  # fmt: skip
    assert len(family) == 2
    p = [np.nan if r["p_value"] is None else r["p_value"] for r in family]
    expected = stats.benjamini_hochberg(p)
    for row, p_bh in zip(family, expected, strict=True):
        assert row["p_value_bh"] == (None if np.isnan(p_bh) else pytest.approx(p_bh))
        assert row["p_value_bh"] is None or row["p_value_bh"] <= row["p_value_holm"]
