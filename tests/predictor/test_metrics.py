"""SMAPE and NMAE (paper 5.1.4) on cases worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from predictor.metrics import metric_table, nmae, smape, smape_terms


def test_it_computes_smape_by_hand():
    # terms: |1-2| / 1.5 = 2/3, |4-4| / 4 = 0, |3-1| / 2 = 1
    assert smape(np.array([2.0, 4.0, 1.0]), np.array([1.0, 4.0, 3.0])) == pytest.approx(5 / 9)


def test_it_counts_a_correct_zero_prediction_as_no_error():
    assert smape_terms(np.array([0.0, 0.0]), np.array([0.0, 5.0])).tolist() == [0.0, 2.0]


def test_it_gives_the_largest_smape_term_when_one_side_is_zero():
    assert smape(np.array([3.0]), np.array([0.0])) == pytest.approx(2.0)


def test_it_computes_nmae_by_hand():
    # (|1-2| + |4-4| + |3-1|) / (2 + 4 + 1) = 3 / 7
    assert nmae(np.array([2.0, 4.0, 1.0]), np.array([1.0, 4.0, 3.0])) == pytest.approx(3 / 7)


def test_it_gives_zero_nmae_when_targets_and_predictions_are_all_zero():
    assert nmae(np.zeros(3), np.zeros(3)) == 0.0


def test_it_gives_nan_nmae_when_targets_are_all_zero_but_predictions_are_not():
    assert math.isnan(nmae(np.zeros(2), np.array([0.0, 1.0])))


def table_case() -> dict:
    y_true = np.array([[2.0, 0.0], [4.0, 0.0], [1.0, 3.0]])
    y_pred = np.array([[1.0, 0.0], [4.0, 1.0], [3.0, 3.0]])
    return metric_table(
        y_true, y_pred, np.array(["search", "search", "display"]), ["clicks", "days"]
    )


def test_it_reports_every_scenario_and_task_cell():
    cells = table_case()["by_scenario"]
    # search/clicks: terms 2/3 and 0 -> 1/3; errors 1 + 0 over 2 + 4
    assert cells["search"]["clicks"] == pytest.approx({"smape": 1 / 3, "nmae": 1 / 6, "n": 2})
    # display/clicks: one row, |3-1| / 2 = 1; NMAE 2 / 1
    assert cells["display"]["clicks"] == pytest.approx({"smape": 1.0, "nmae": 2.0, "n": 1})
    # display/days: exact
    assert cells["display"]["days"] == pytest.approx({"smape": 0.0, "nmae": 0.0, "n": 1})


def test_it_reports_an_undefined_nmae_as_none_and_keeps_the_smape():
    # search/days: targets 0, 0 and predictions 0, 1: terms 0 (0/0) and 2
    cell = table_case()["by_scenario"]["search"]["days"]
    assert cell == {"smape": pytest.approx(1.0), "nmae": None, "n": 2}


def test_it_pools_every_scenario_for_the_per_task_figures():
    by_task = table_case()["by_task"]
    # clicks over all rows: terms 2/3, 0, 1 -> 5/9; errors 1 + 0 + 2 over 2 + 4 + 1 -> 3/7
    assert by_task["clicks"] == pytest.approx({"smape": 5 / 9, "nmae": 3 / 7, "n": 3})
    # days: terms 0, 2, 0 -> 2/3; errors 0 + 1 + 0 over 0 + 0 + 3 -> 1/3
    assert by_task["days"] == pytest.approx({"smape": 2 / 3, "nmae": 1 / 3, "n": 3})


def test_it_averages_the_cells_for_the_overall_figures_skipping_undefined_ones():
    overall = table_case()["overall"]
    assert overall["cells"] == 4
    assert overall["smape"] == pytest.approx((1 / 3 + 1.0 + 1.0 + 0.0) / 4)
    assert overall["nmae"] == pytest.approx((1 / 6 + 2.0 + 0.0) / 3)  # search/days undefined


def test_it_returns_strict_json():
    json.dumps(table_case(), allow_nan=False)


def test_it_rejects_predictions_of_another_shape():
    with pytest.raises(ValueError, match=r"y_true \[2\] and y_pred \[3\]"):
        smape(np.ones(2), np.ones(3))


def test_it_rejects_negative_values():
    with pytest.raises(ValueError, match="y_pred holds negative values"):
        nmae(np.ones(2), np.array([1.0, -0.5]))


def test_it_rejects_a_scenario_label_count_that_does_not_match_the_rows():
    with pytest.raises(ValueError, match=r"scenarios has shape \[2\], expected \[3\]"):
        metric_table(np.ones((3, 1)), np.ones((3, 1)), ["a", "b"], ["clicks"])


def test_it_rejects_a_task_count_that_does_not_match_the_columns():
    with pytest.raises(ValueError, match=r"expected \[N, 3\]"):
        metric_table(np.ones((3, 2)), np.ones((3, 2)), ["a", "a", "b"], ["x", "y", "z"])
