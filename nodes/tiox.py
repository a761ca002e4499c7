"""The TiOx crossbar: the default ``Crossbar`` (nodes/crossbar.py), the compact model of nodes/kernels/memristor.py.

Its parameters are the published fit's (Messaris et al.), the ``a0`` .. ``t_n`` keys of the memristor
node's ``device`` table (``DeviceParams``), per device: ``spread`` scales each device's switching rates
(``a_p``, ``a_n``) and initial resistance, drawn from ``seed`` in that order, so a seed gives the same
crossbar as it always has.
"""

from __future__ import annotations

import numpy as np

from spikewire.core.settings import SettingsError
from spikewire.nodes.crossbar import CrossbarSpec, ModelCrossbar, crossbar
from spikewire.nodes.kernels import lazy

mk = lazy("memristor")


@crossbar
class TiOxCrossbar(ModelCrossbar):
    model = "tiox"

    def __init__(self, spec: CrossbarSpec):
        rng = np.random.default_rng(spec.seed)
        base = spec.params.as_array()
        self.params = np.broadcast_to(base, (spec.rows, spec.cols, len(base))).copy()  # per device
        if spec.spread > 0:
            for idx in (mk.AP, mk.AN):
                self.params[:, :, idx] *= np.clip(1 + spec.spread * rng.standard_normal((spec.rows, spec.cols)),
                                                  0.1, None)
        super().__init__(spec, rng)

    @classmethod
    def parameters(cls, device, key: str):
        """The fit is the ``device`` table's own keys (``a0`` .. ``t_n``, ``r_min``, ``r_max``)."""
        if device.params:
            raise SettingsError(f"{key}.params", "the tiox model takes its fit as device.a0 .. device.t_n, not "
                                f"device.params (got {', '.join(sorted(device.params))})")
        if device.instrument:
            raise SettingsError(f"{key}.instrument", f"the tiox model is simulated: it drives no instrument, got "
                                f"{device.instrument!r}")
        return device

    def pulse(self, wl: int, bl: int, voltage: float, width: float) -> float:
        r = mk.apply_pulse(self.r.item(wl, bl), voltage, width, self.params[wl, bl])
        self.r[wl, bl] = r
        return r

    def pulse_many(self, wl: np.ndarray, bl: np.ndarray, voltage: np.ndarray, width: np.ndarray) -> np.ndarray:
        out = np.empty(len(wl))
        mk.apply_pulses(self.r, wl, bl, voltage, width, self.params, out)
        return out

    def warm_up(self) -> None:
        mk.warm_up()
