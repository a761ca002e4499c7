"""The elements of a hybrid network, the runtime loop that drives them, and their numba kernels."""
