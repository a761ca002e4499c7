"""Compile every kernel into numba's on-disk cache: ``python -m spikewire.nodes.kernels``.

`make` runs this once after installing, so node processes only ever load cached machine code
(2-3 ms per kernel, and no LLVM in their memory) instead of compiling at their first start.
"""

import time

from spikewire.nodes.kernels import adex, detect, izhikevich, memristor

t0 = time.perf_counter()
for module in (adex, izhikevich, memristor, detect):
    module.warm_up()
print(f"numba kernels compiled and cached in {time.perf_counter() - t0:.1f} s")
