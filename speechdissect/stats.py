"""Small statistics shared by the studies: mean and t-interval over independent runs."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and two-sided t-distribution confidence interval of independent runs.

    Returns ``n``, ``mean``, ``std`` (ddof=1), ``sem``, ``ci_low``, ``ci_high``, ``ci_half``. With one
    value the interval is undefined (NaN); non-finite values are dropped.
    """
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "std": nan, "sem": nan, "ci_low": nan, "ci_high": nan, "ci_half": nan}
    mean = float(x.mean())
    if n == 1:
        nan = float("nan")
        return {"n": 1, "mean": mean, "std": nan, "sem": nan, "ci_low": nan, "ci_high": nan, "ci_half": nan}
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * sem)
    return {"n": n, "mean": mean, "std": std, "sem": sem, "ci_low": mean - half, "ci_high": mean + half, "ci_half": half}
