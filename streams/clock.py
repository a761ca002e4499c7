"""The one clock of spikewire: ``pylsl.local_clock()``, monotonic seconds in the LSL timebase.

Every event time, packet send time and deadline in spikewire is on this clock, so latencies between
processes on one machine are plain differences and LSL rig timestamps need no conversion.

Importing this module points ``LSLAPICFG`` at the packaged machine-scoped LSL configuration unless the
caller already set it: liblsl reads it once, at its first use, and its default discovery would otherwise
multicast on the LAN.
"""

import os
from importlib.resources import files

MACHINE_SCOPED_LSL_CONFIG = str(files(__package__) / "lsl_api.cfg")
os.environ.setdefault("LSLAPICFG", MACHINE_SCOPED_LSL_CONFIG)

from pylsl import local_clock  # noqa: E402  (must follow the LSLAPICFG default)

__all__ = ["local_clock", "MACHINE_SCOPED_LSL_CONFIG"]
