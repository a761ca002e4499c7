"""Numba kernels: arrays in, arrays out; no I/O, no globals, no allocation per call.

Each is ``@njit(cache=True)`` and is compiled and warmed up by its node before the node reports ready
(see ``warm_up`` in each module), so the JIT never runs inside a live loop. ``kernel.py_func`` is the
plain-Python version the tests compare against.
"""
