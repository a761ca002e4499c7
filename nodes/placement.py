"""Where and how a node's process runs: CPU affinity and real-time priority (``cpu``, ``priority``).

``check`` runs in the supervisor's pre-flight, before any process starts, against this machine (the CPUs
it may use, whether it may schedule real-time), so an impossible placement is one line naming the key, not
a node dying during setup. ``apply`` runs in the node process once its kernels are warm, just before it
reports ready: compilation runs at normal priority on any CPU.
"""

from __future__ import annotations

import os
import resource

from spikewire.core.settings import SettingsError


def check(key: str, settings, available: set[int] | None = None) -> None:
    """Raise SettingsError if this machine cannot give the node what ``settings`` asks for."""
    cpu, priority = tuple(settings.cpu), settings.priority
    if cpu:
        have = os.sched_getaffinity(0) if available is None else available
        missing = sorted(set(cpu) - have)
        if missing:
            raise SettingsError(f"{key}.cpu", f"CPU {', '.join(map(str, missing))} is not available here "
                                f"(this process may use {_ranges(have)})")
    if priority:
        top = os.sched_get_priority_max(os.SCHED_FIFO)
        if priority > top:
            raise SettingsError(f"{key}.priority", f"this OS allows real-time priorities up to {top}, got {priority}")
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
        if os.geteuid() != 0 and soft != resource.RLIM_INFINITY and soft < priority:
            raise SettingsError(f"{key}.priority", f"real-time scheduling at {priority} is not allowed for this "
                                f"user (rtprio limit {soft}): run as root, grant CAP_SYS_NICE, or raise rtprio in "
                                "/etc/security/limits.conf; or set priority = 0")


def apply(key: str, settings) -> str:
    """Pin every thread of this process to ``cpu`` and make it SCHED_FIFO at ``priority``; returns what was
    done (for the node's log), or raises SettingsError naming the key if the OS refused."""
    done = []
    if settings.cpu:
        cpus = set(settings.cpu)
        try:
            for tid in os.listdir("/proc/self/task"):  # ZeroMQ's I/O thread too: it carries every packet
                os.sched_setaffinity(int(tid), cpus)
        except OSError as e:
            raise SettingsError(f"{key}.cpu", f"cannot pin to CPU {_ranges(cpus)}: {e.strerror}") from None
        done.append(f"CPU {_ranges(cpus)}")
    if settings.priority:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(settings.priority))
        except PermissionError:
            raise SettingsError(f"{key}.priority", "the OS refused real-time scheduling (needs root or "
                                "CAP_SYS_NICE; in a container, also the capability): set priority = 0") from None
        done.append(f"SCHED_FIFO {settings.priority}")
    if settings.spin:
        done.append("spinning")
    return ", ".join(done)


def _ranges(cpus) -> str:
    cpus = sorted(cpus)
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out) or "none"
