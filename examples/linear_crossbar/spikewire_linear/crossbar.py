"""`device.model = "linear"`: each programming pulse moves a device's resistance by a fixed amount per
volt-second, whatever its state, within [r_min, r_max]. Not a fit to any device: a baseline to set the TiOx
model's state-dependent steps against, and the smallest complete Crossbar."""

from __future__ import annotations

from dataclasses import dataclass

from spikewire.core.settings import Settings, positive, setting
from spikewire.nodes.crossbar import CrossbarSpec, ModelCrossbar


@dataclass(frozen=True)
class LinearParams(Settings):
    rate: float = setting(5e6, "Resistance change per volt-second of pulse [Ohm / (V s)]; a positive pulse "
                          "lowers R (potentiates), a negative one raises it.", check=positive, unit="Ohm/(V s)")
    asymmetry: float = setting(1.0, "Depression steps are this many times the potentiation step of the same "
                               "|V| x width (1: symmetric).", check=positive, unit="1")


class LinearCrossbar(ModelCrossbar):
    model = "linear"
    Params = LinearParams

    def __init__(self, spec: CrossbarSpec):
        super().__init__(spec)
        self.rate = spec.params.rate
        self.asymmetry = spec.params.asymmetry

    def pulse(self, wl: int, bl: int, voltage: float, width: float) -> float:
        step = self.rate * voltage * width * (self.asymmetry if voltage < 0 else 1.0)
        r = min(max(self.r.item(wl, bl) - step, self.r_min), self.r_max)
        self.r[wl, bl] = r
        return r
