"""Intervals for results measured on examples under several seeds: the 95% interval of a mean that covers both
the spread over seeds and the sampling of the examples, and the paired difference of two rows on the same
examples (docs/reproduce.md, "Intervals and paired differences").

Outcomes are per example (1.0 correct / held under attack, 0.0 not, or differences of such: any numbers, but the
cost grows with the number of distinct values), one sequence per seed. The
bootstrap is two-level (a cluster bootstrap): each resample draws the seeds with replacement, then, independently
for every drawn seed, its examples with replacement; the statistic is the mean over the drawn seeds of their
example means, i.e. the reported mean over seeds. Percentile interval, seeded, so a report is rebuilt exactly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .errors import SubnetsError

SAMPLES = 2000
CONFIDENCE = 0.95
SHOWN, HINT = "shown", "a hint"


def cluster_bootstrap(per_seed: Sequence[Sequence[float]], samples: int = SAMPLES, seed: int = 0,
                      confidence: float = CONFIDENCE) -> dict[str, Any]:
    """{mean, low, high, seeds, examples}: the mean over seeds of each seed's example mean, and its percentile
    bootstrap interval over seeds and examples (module docstring). One seed: the ordinary bootstrap of a mean."""
    arrays = [np.asarray(values, dtype=float) for values in per_seed]
    if not arrays or any(len(a) == 0 for a in arrays):
        raise SubnetsError("An interval needs at least one seed with at least one example.")
    rng = np.random.default_rng(seed)
    count = len(arrays)
    # boot[s, b, j]: seed s's example mean in resample b when it fills slot j of the drawn seeds. Resampling n
    # examples with replacement draws each distinct value a multinomial number of times, so the counts are drawn
    # directly (outcomes take few values: 0/1, or -1/0/1 for differences; HANS's 30,000 pairs cost nothing)
    boot = np.empty((count, samples, count))
    for s, a in enumerate(arrays):
        levels, frequency = np.unique(a, return_counts=True)
        boot[s] = rng.multinomial(len(a), frequency / len(a), size=(samples, count)) @ levels / len(a)
    picks = rng.integers(0, count, size=(samples, count)) if count > 1 else np.zeros((samples, 1), dtype=int)
    statistic = boot[picks, np.arange(samples)[:, None], np.arange(count)[None, :]].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    return {"mean": exact(np.mean([a.mean() for a in arrays])), "low": exact(np.percentile(statistic, tail)),
            "high": exact(np.percentile(statistic, 100 - tail)), "seeds": count,
            "examples": int(sum(len(a) for a in arrays))}


def exact(value: float) -> float:
    """`value` rounded to 1e-9. Float sums leave about 1e-17 where the exact result is 0 (0.1 + 0.2 - 0.3), which
    would make a bound of 0 read as excluding zero; the means here are multiples of 1 / (seeds x examples), far
    above 1e-9, so the rounding removes only that noise."""
    return round(float(value), 9) + 0.0  # + 0.0: no -0.0


def paired_difference(row: Mapping[Any, Mapping[Any, float]], baseline: Mapping[Any, Mapping[Any, float]],
                      **bootstrap: Any) -> dict[str, Any] | None:
    """The row minus its baseline on the same examples: `row[seed][example]` and `baseline[seed][example]` are
    per-example outcomes; seeds and examples both lack are left out. The cluster bootstrap of the per-example
    differences; None when no (seed, example) pair is shared."""
    differences = []
    for key, outcomes in row.items():
        reference = baseline.get(key, {})
        shared = [idx for idx in outcomes if idx in reference]
        if shared:
            differences.append([outcomes[idx] - reference[idx] for idx in shared])
    return cluster_bootstrap(differences, **bootstrap) if differences else None


def verdict(stat: Mapping[str, float]) -> str:
    """"shown" where the interval excludes zero, "a hint" otherwise (the words the reports use)."""
    return SHOWN if stat["low"] > 0 or stat["high"] < 0 else HINT
