"""What the fault proxy did, counted so a test can compare it with what a receiver counted.

For a link whose publisher dropped nothing, the sequence numbers a receiver never saw are exactly the
``dropped`` (plus any ``discarded`` when a connection was cut) of their source, and its out-of-order count
(a packet whose sequence is not above the highest already received from that source, as the receiver
counts it) equals ``out_of_order``. ``out_of_order`` is tracked per connection: after a cut or a
reconnect the proxy starts afresh, while a receiver's socket keeps its own highest sequence.

The relay only bumps plain attributes; dicts are built when someone asks (:meth:`FaultProxy.stats`).
"""

from __future__ import annotations

import math

from .schedule import DOWN, UP


class Summary:
    """count / min / mean / max of a stream of values."""

    __slots__ = ("count", "high", "low", "total")

    def __init__(self):
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def merge(self, other: Summary) -> None:
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def to_dict(self) -> dict:
        if not self.count:
            return {"count": 0, "min": None, "mean": None, "max": None}
        return {"count": self.count, "min": self.low, "mean": self.total / self.count, "max": self.high}


class SourceStats:
    """Down-going data packets of one source id."""

    FIELDS = ("received", "forwarded", "dropped", "discarded", "out_of_order", "reordered_by_swap")
    __slots__ = FIELDS

    def __init__(self):
        for name in self.FIELDS:
            setattr(self, name, 0)

    def merge(self, other: SourceStats) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.FIELDS}
        out["pending"] = self.received - self.forwarded - self.dropped - self.discarded
        return out


class DirectionStats:
    """Everything one direction of one connection (or a sum of them) did."""

    COUNTS = ("bytes_in", "bytes_out", "raw_bytes", "messages_in", "messages_out", "commands_in", "commands_out",
              "data_packets", "control_packets", "other_messages", "subscription_messages", "dropped",
              "out_of_order", "reordered_by_swap", "swap_timeouts", "discarded_messages", "discarded_commands",
              "discarded_bytes", "raw_fallbacks")
    SUMMARIES = ("delay_s", "message_delay_s", "emit_delay_s")

    def __init__(self):
        for name in self.COUNTS:
            setattr(self, name, 0)
        self.commands_by_name: dict[str, int] = {}
        self.delay_s = Summary()  # scheduled delay of data packets
        self.message_delay_s = Summary()  # scheduled delay of every message
        self.emit_delay_s = Summary()  # arrival to emission of data packets, as it happened

    def merge(self, other: DirectionStats) -> None:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, n in other.commands_by_name.items():
            self.commands_by_name[name] = self.commands_by_name.get(name, 0) + n
        for name in self.SUMMARIES:
            getattr(self, name).merge(getattr(other, name))

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.COUNTS}
        out["pending_messages"] = self.messages_in - self.dropped - self.messages_out - self.discarded_messages
        out["commands_by_name"] = dict(self.commands_by_name)
        for name in self.SUMMARIES:
            out[name] = getattr(self, name).to_dict()
        return out


class Tally:
    """Both directions and every source, summed over connections."""

    def __init__(self):
        self.directions = {DOWN: DirectionStats(), UP: DirectionStats()}
        self.sources: dict[int, SourceStats] = {}

    def add(self, down: DirectionStats, up: DirectionStats, sources: dict[int, SourceStats]) -> None:
        self.directions[DOWN].merge(down)
        self.directions[UP].merge(up)
        for source_id, st in sources.items():
            self.sources.setdefault(source_id, SourceStats()).merge(st)

    def merge(self, other: Tally) -> None:
        self.add(other.directions[DOWN], other.directions[UP], other.sources)

    def to_dict(self) -> dict:
        """{"down": ..., "up": ..., "sources": {id as a string: ...}}."""
        return {DOWN: self.directions[DOWN].to_dict(), UP: self.directions[UP].to_dict(),
                "sources": sources_dict(self.sources)}


def sources_dict(sources: dict[int, SourceStats]) -> dict:
    return {str(k): v.to_dict() for k, v in sorted(sources.items())}
