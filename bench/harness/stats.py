"""Percentiles and rounding for benchmark reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["percentile", "percentile_of", "rnd"]


def percentile(values: npt.NDArray[np.float64], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank), or None for no samples."""
    if len(values) == 0:
        return None
    return float(np.percentile(values, q, method="inverted_cdf"))


def percentile_of(values: Sequence[float], q: float, digits: int = 2) -> float | None:
    """:func:`percentile` of a plain list, rounded for a report."""
    return rnd(percentile(np.asarray(values, dtype=np.float64), q), digits)


def rnd(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)
