"""The safety interlock: stimulation and device programming are held while a node's input is stale or lossy."""

from __future__ import annotations

from dataclasses import dataclass

from spikewire.core.settings import Settings, in_range, non_negative, positive, setting


@dataclass(frozen=True)
class SafetySettings(Settings):
    """The interlock: stimulation and memristor programming are held while a node's input is stale or
    lossy, and released automatically once it has been healthy for ``release_after``."""

    interlock: bool = setting(True, "Hold stimulation and device programming on bad input.")
    stale_after: float = setting(0.5, "An input link silent this long (no data, no heartbeat) holds [s].",
                                 check=positive)
    max_loss: float = setting(0.05, "An input link losing more than this fraction of packets over "
                              "loss_window holds.", check=in_range(0.0, 1.0))
    loss_window: float = setting(2.0, "Window of the loss fraction [s].", check=positive)
    release_after: float = setting(0.5, "Input must be healthy this long before a hold is released [s].",
                                   check=non_negative)
