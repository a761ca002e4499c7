"""A TCP proxy that puts internet faults (delay, jitter, loss, reordering) between a ZeroMQ publisher and its
subscribers, and counts exactly what it did: ``spikewire fault-proxy``, or :class:`FaultProxy` in a test.

proxy.py     FaultProxy: the listener, its thread, the public API (faults, stats, cuts)
relay.py     one relayed connection: two pipes that read ZMTP, apply the schedule and count
zmtp.py      ZMTP 3.x framing, one direction at a time
schedule.py  the faults and the order in which messages leave
stats.py     the counters and their JSON form
cli.py       the command line
"""

from .cli import main
from .proxy import FaultProxy, is_loopback
from .schedule import DOWN, SWAP_HOLD_MAX, UP, Faults

__all__ = ["DOWN", "SWAP_HOLD_MAX", "UP", "FaultProxy", "Faults", "is_loopback", "main"]
