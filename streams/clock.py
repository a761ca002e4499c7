"""The one clock of spikewire: ``pylsl.local_clock()``, monotonic seconds in the LSL timebase (read
through ``time.monotonic`` where that is the same clock, as on Linux: see ``_same_timebase``).

Every event time, packet send time and deadline in spikewire is on this clock, so latencies between
processes on one machine are plain differences and LSL rig timestamps need no conversion.

Importing this module points ``LSLAPICFG`` at the packaged machine-scoped LSL configuration unless the
caller already set it: liblsl reads it once, at its first use, and its default discovery would otherwise
multicast on the LAN.

``SPIKEWIRE_CLOCK_SHIFT`` (seconds, default 0) adds a constant to this process's clock. It exists so that
sites on one machine can be given clocks as far apart as two labs' (the inter-site clock estimation is
tested that way); it is never set in normal runs.
"""

import os
from importlib.resources import files

MACHINE_SCOPED_LSL_CONFIG = str(files(__package__) / "lsl_api.cfg")
os.environ.setdefault("LSLAPICFG", MACHINE_SCOPED_LSL_CONFIG)

import time  # noqa: E402

from pylsl import local_clock as _lsl_clock  # noqa: E402  (must follow the LSLAPICFG default)

CLOCK_SHIFT = float(os.environ.get("SPIKEWIRE_CLOCK_SHIFT", "0") or 0.0)


def _same_timebase(tolerance: float = 1e-3) -> bool:
    """Whether ``time.monotonic()`` reads liblsl's clock. liblsl's ``lsl_local_clock`` is
    ``std::chrono::steady_clock``, which is CLOCK_MONOTONIC on Linux, as ``time.monotonic`` is; reading it
    directly costs 0.5 us where the ctypes call into liblsl costs 5 (cold, as every packet finds it), and
    the hot path reads the clock several times per packet. Checked, not assumed: elsewhere, liblsl's clock."""
    for _ in range(3):
        before = time.monotonic()
        lsl = _lsl_clock()
        after = time.monotonic()
        if before - tolerance <= lsl <= after + tolerance:
            return True
    return False


_clock = time.monotonic if _same_timebase() else _lsl_clock

if CLOCK_SHIFT:
    def local_clock() -> float:
        """``pylsl.local_clock()`` plus this process's SPIKEWIRE_CLOCK_SHIFT."""
        return _clock() + CLOCK_SHIFT
else:
    local_clock = _clock

__all__ = ["local_clock", "MACHINE_SCOPED_LSL_CONFIG", "CLOCK_SHIFT"]
