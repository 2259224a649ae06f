"""The assignment hash: the known answers of ab-known-answers.md and the vectorised form."""

from __future__ import annotations

import numpy as np
import pytest

from abtest import hashing

KNOWN = [("seed", "a", 0.0505), ("foo", "ab", 0.2575), ("foo", "def", 0.2019), ("", "123", 0.4547)]


@pytest.mark.parametrize(("seed", "unit", "expected"), KNOWN)
def test_it_matches_the_known_buckets(seed, unit, expected):
    assert hashing.bucket(seed, unit) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("seed", "unit", "expected"), KNOWN)
def test_it_vectorises_to_the_same_known_buckets(seed, unit, expected):
    assert hashing.buckets(seed, [unit])[0] == round(expected * 10_000)


def test_it_implements_fnv1a_32():
    # Reference values of the FNV-1a 32-bit specification.
    assert hashing.fnv1a32("") == 0x811C9DC5
    assert hashing.fnv1a32("a") == 0xE40C292C
    assert hashing.fnv1a32("foobar") == 0xBF9CF968


def test_it_vectorises_exactly_like_the_scalar_hash():
    ids = [f"adv-{i}" for i in range(3000)] + ["é", "日本語", "x" * 64, "\U0001f600"]
    expected = [hashing.bucket_index("s33d", i) for i in ids]
    assert hashing.buckets("s33d", ids).tolist() == expected


def test_it_returns_nothing_for_no_ids():
    assert hashing.buckets("seed", []).size == 0


def test_it_splits_by_cumulative_weights():
    assert hashing.arm_boundaries([0.5, 0.5]).tolist() == [0, 5000, 10000]
    assert hashing.arm_boundaries([1, 3]).tolist() == [0, 2500, 10000]


def test_it_carves_the_holdout_out_first():
    assert hashing.arm_boundaries([0.5, 0.5], holdout_share=0.1).tolist() == [1000, 5500, 10000]


def test_it_maps_buckets_to_groups_at_the_boundaries():
    bounds = hashing.arm_boundaries([0.5, 0.5], holdout_share=0.1)
    groups = hashing.groups_for_buckets(np.array([0, 999, 1000, 5499, 5500, 9999]), bounds)
    assert groups.tolist() == [0, 0, 1, 1, 2, 2]


def test_it_rejects_weights_that_sum_to_zero():
    with pytest.raises(ValueError, match="weights"):
        hashing.arm_boundaries([0, 0])
