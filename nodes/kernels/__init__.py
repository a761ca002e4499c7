"""Numba kernels: arrays in, arrays out; no I/O, no globals, no allocation per call.

Each is ``@njit(cache=True)`` and is compiled and warmed up by its node before the node reports ready
(see ``warm_up`` in each module), so the JIT never runs inside a live loop. ``kernel.py_func`` is the
plain-Python version the tests compare against.
"""

import importlib.util
import sys
from types import ModuleType


def lazy(name: str) -> ModuleType:
    """Kernel module ``name`` (one of ours, or a plugin's by its dotted name), executed (numba imported
    with it) at its first attribute access.

    Element modules name their kernels this way, so that loading a network (which imports every kind)
    costs no numba: a node process imports it only if its element runs a kernel (~60 MB of RSS and
    ~0.3 s of start-up saved in a replayed node, a rig without detection, a linear crossbar)."""
    fullname = name if "." in name else f"{__name__}.{name}"
    module = sys.modules.get(fullname)
    if module is not None:
        return module
    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None:
        raise ImportError(f"no kernel module {fullname}")
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[fullname] = module
    spec.loader.exec_module(module)
    return module
