"""Settings of the link protocol every link speaks: heartbeats, liveness and clock synchronisation."""

from __future__ import annotations

from dataclasses import dataclass

from spikewire.core.settings import Settings, SettingsError, in_range, setting


@dataclass(frozen=True)
class TransportSettings(Settings):
    """Liveness and clocks of every link."""

    heartbeat_every: float = setting(0.2, "An idle output port sends a heartbeat this often [s].",
                                     check=in_range(0.01, 5.0), unit="s")
    peer_timeout: float = setting(0.6, "A link with nothing (not even a heartbeat) for this long is down [s].",
                                  check=in_range(0.02, 30.0), unit="s")
    clock_sync_every: float = setting(0.25, "Clock-sync ping period of each inter-site link [s].",
                                      check=in_range(0.01, 60.0), unit="s")
    clock_window: int = setting(16, "The offset is taken from the lowest-delay exchange of this many.",
                                check=in_range(1, 1024), unit="count")

    def validate(self, key: str) -> None:
        if self.peer_timeout <= 2 * self.heartbeat_every:
            raise SettingsError(f"{key}.peer_timeout", f"must exceed two heartbeat periods "
                                f"(2 x {self.heartbeat_every:g} s), got {self.peer_timeout:g}")
