"""subnets.intervals: the cluster bootstrap and the paired difference against direct computations."""

import numpy as np
import pytest

from subnets.errors import SubnetsError
from subnets.intervals import HINT, SHOWN, cluster_bootstrap, paired_difference, verdict


def exact_bootstrap_quantiles(values, quantiles):
    """The exact bootstrap distribution of the mean of n draws from `values` (integers), by convolution."""
    values = np.asarray(values, dtype=int)
    low = values.min()
    step = np.bincount(values - low) / len(values)
    pmf = np.array([1.0])
    for _ in range(len(values)):
        pmf = np.convolve(pmf, step)
    cdf = np.cumsum(pmf)
    means = (np.arange(len(pmf)) + low * len(values)) / len(values)
    return [float(means[np.searchsorted(cdf, q)]) for q in quantiles]


def test_paired_interval_on_hand_made_outcomes_equals_a_direct_computation():
    """One seed: row minus baseline per example, then the bootstrap of their mean; the Monte Carlo percentiles lie
    between the exact bootstrap quantiles just inside and outside 2.5% / 97.5%."""
    row = {1: dict(enumerate([1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1]))}
    base = {1: dict(enumerate([0, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]))}
    differences = [row[1][i] - base[1][i] for i in range(20)]
    stat = paired_difference(row, base, samples=40000, seed=1)
    assert stat["mean"] == pytest.approx(np.mean(differences)) == pytest.approx(0.25)
    assert stat["examples"] == 20 and stat["seeds"] == 1
    lo_in, lo_out, hi_in, hi_out = exact_bootstrap_quantiles(differences, [0.02, 0.03, 0.97, 0.98])
    assert lo_in <= stat["low"] <= lo_out and hi_in <= stat["high"] <= hi_out
    assert verdict(stat) == HINT  # the exact 2% quantile is 0: the interval touches zero


def test_seed_spread_alone_gives_the_direct_interval():
    """Two seeds with no example variance (all 0 / all 1): the drawn-seed mean is 0, 1/2 or 1 with probabilities
    1/4, 1/2, 1/4, so the 95% interval is exactly [0, 1]; a hint."""
    stat = cluster_bootstrap([[0.0] * 10, [1.0] * 10], samples=4000)
    assert (stat["mean"], stat["low"], stat["high"]) == (0.5, 0.0, 1.0)
    assert verdict(stat) == HINT


def test_pairs_only_shared_seeds_and_examples_and_refuses_nothing_to_pair():
    row = {1: {0: 1.0, 1: 1.0, 5: 0.0}, 2: {0: 1.0}}
    base = {1: {0: 0.0, 1: 0.0}, 3: {0: 1.0}}
    stat = paired_difference(row, base, samples=200)
    assert (stat["mean"], stat["low"], stat["high"], stat["examples"]) == (1.0, 1.0, 1.0, 2)
    assert paired_difference({1: {0: 1.0}}, {2: {0: 1.0}}) is None
    with pytest.raises(SubnetsError):
        cluster_bootstrap([])


def test_a_bound_that_is_zero_up_to_float_noise_is_zero_and_not_shown():
    # three seeds of per-example differences whose percentile upper bound is exactly 0: summed in floats it came
    # out as -4.6e-18, which read as an interval excluding zero
    per_seed = [[0, 0, 0, -1, 0, 1, -1, -1, 0, 0, 1, 1, -1, -1, -1], [0, -1, 0, 0, 0, 1, 0, -1, -1, 0, 0, -1, 0, -1, 0],
                [0, -1, 0, 0, -1, -1, 0, 0, 0, 0, 0, 0, 1, 0, 0]]
    stat = cluster_bootstrap(per_seed)
    assert stat["high"] == 0.0 and str(stat["high"]) == "0.0" and verdict(stat) == HINT
    assert cluster_bootstrap([[0.1], [0.2], [-0.3]])["mean"] == 0.0
