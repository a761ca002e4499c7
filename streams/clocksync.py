"""NTP-style estimation of a link's clock offset and round-trip time.

The receiving end of a link pings its publisher over the link itself (``Kind.CLOCK`` packets: the
subscriber's socket is an XSUB, which may send upstream). With four times — t1 ping sent (our clock),
t2 ping received and t3 pong sent (their clock), t4 pong received (ours) — one exchange gives

    offset θ = ((t2 - t1) + (t3 - t4)) / 2     their clock minus ours
    delay  δ = (t4 - t1) - (t3 - t2)           round trip on the wire, their holding time taken out

θ is exact when the two directions take equally long; an asymmetry a shifts it by a / 2, and no
two-way method can see that (NTP has the same limit). Queueing only ever adds delay, so, as NTP's clock
filter does, the estimate is the offset of the exchange with the smallest δ among the last ``window``
ones: the least-queued exchange is the least wrong. A sender's clock in our timebase is then
``t_theirs - θ``, which is how the runtime corrects link latency and jitter-buffer release times.
"""

from __future__ import annotations

from collections import deque

from spikewire.core.histogram import LogHistogram

MAX_OFFSET = 1e9  # s (~30 years): beyond this an exchange is corrupt, whatever the two clocks are
MAX_DELAY = 60.0  # s: no round trip of a live link takes this long


class ClockEstimator:
    def __init__(self, window: int = 16):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.samples: deque[tuple[float, float]] = deque(maxlen=window)  # (delay, offset)
        self.offset = 0.0
        self.rtt = float("nan")
        self.rtt_hist = LogHistogram()
        self.exchanges = 0
        self.rejected = 0  # pongs that made no sense (negative delay beyond rounding): counted, not used

    @property
    def synced(self) -> bool:
        return bool(self.samples)

    def add(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        """Add one exchange; returns False (and counts it) if its times are inconsistent."""
        delay = (t4 - t1) - (t3 - t2)
        offset = ((t2 - t1) + (t3 - t4)) / 2.0
        # Clocks of two machines may differ by their uptimes (days), but not by centuries, and no exchange
        # on a live link takes a minute: anything else is a corrupt or hostile pong.
        if not (t4 >= t1 and t3 >= t2 and -1e-6 < delay < MAX_DELAY and abs(offset) < MAX_OFFSET):
            self.rejected += 1
            return False
        delay = max(delay, 0.0)
        self.exchanges += 1
        self.rtt_hist.record(delay)
        self.samples.append((delay, offset))
        self.rtt, self.offset = min(self.samples)
        return True

    def reset(self) -> None:
        """Forget the samples (the peer restarted: its clock may be another machine's now)."""
        self.samples.clear()
        self.offset = 0.0
        self.rtt = float("nan")

    def summary(self) -> dict:
        return {"offset_s": self.offset if self.synced else None, "rtt_s": self.rtt if self.synced else None,
                "exchanges": self.exchanges, "rejected": self.rejected, "rtt_hist_s": self.rtt_hist.summary()}
