"""Log-bucketed histograms for latencies and durations: constant memory, cheap to record, mergeable.

Buckets are 40 per decade from 1 us to 100 s (about 6 % wide), so quantiles are good to a few percent
at any scale while ``record`` costs one log10 and one array increment. Exact ``max`` and ``count`` are
kept alongside. The same counts feed the run summary and (later) Prometheus histograms.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

LO = 1e-6
DECADES = 8
PER_DECADE = 40
N_BUCKETS = DECADES * PER_DECADE + 2  # + underflow and overflow
_LOG_LO = math.log10(LO)
OVERFLOW = 1e9
"""Values from here (and inf, NaN) only count, in the overflow bucket."""


PROM_BOUNDS = (10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3)
"""Upper bounds [s] of the exported Prometheus buckets (10 us to 100 ms, 1-2-5), counted exactly."""


def bucket_upper(i: int) -> float:
    """Upper edge [s] of bucket i (bucket 0 holds everything below LO)."""
    return 10 ** (_LOG_LO + i / PER_DECADE)


class LogHistogram:
    __slots__ = ("counts", "prom", "count", "total", "max")

    def __init__(self) -> None:
        self.counts = [0] * N_BUCKETS  # a list: a numpy element increment costs microseconds cold, per packet
        self.prom = [0] * (len(PROM_BOUNDS) + 1)  # per exported bucket (not cumulative); last is +Inf
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, x: float) -> None:
        if not x < OVERFLOW:  # inf, NaN or absurd (a hostile timestamp): the overflow bucket, kept out of the sums
            self.counts[N_BUCKETS - 1] += 1
            self.prom[-1] += 1
            self.count += 1
            return
        if x <= LO:
            i = 0
        else:
            i = int((math.log10(x) - _LOG_LO) * PER_DECADE) + 1
            if i >= N_BUCKETS:
                i = N_BUCKETS - 1
        self.counts[i] += 1
        self.prom[bisect.bisect_left(PROM_BOUNDS, x)] += 1
        self.count += 1
        self.total += x
        if x > self.max:
            self.max = x

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1), as the geometric middle of its bucket, capped at the exact max."""
        if self.count == 0:
            return math.nan
        rank = q * self.count
        i = int(np.searchsorted(np.cumsum(self.counts), max(rank, 1e-12), side="left"))
        if i == 0:
            return min(LO, self.max)
        mid = math.sqrt(bucket_upper(i - 1) * bucket_upper(i))
        return min(mid, self.max)

    def prom_buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs in Prometheus' form, ending with +Inf."""
        out, acc = [], 0
        for bound, n in zip((*PROM_BOUNDS, math.inf), self.prom):
            acc += n
            out.append(("+Inf" if bound == math.inf else repr(bound), acc))
        return out

    def summary(self) -> dict:
        """p50 / p99 / p99.9 / max / mean in seconds, and the count."""
        if self.count == 0:
            return {"count": 0}
        return {"count": self.count, "p50": self.quantile(0.5), "p99": self.quantile(0.99),
                "p999": self.quantile(0.999), "max": self.max, "mean": self.total / self.count}
