"""Where and how a node's process runs: CPU affinity and real-time priority (``cpu``, ``priority``).

``check`` runs in the supervisor's pre-flight, before any process starts, against this machine (the CPUs
it may use; whether the OS lets it schedule real-time, asked by trying it on a throwaway thread), so an impossible placement is one line naming the key, not
a node dying during setup. ``apply`` runs in the node process once its kernels are warm, just before it
reports ready: compilation runs at normal priority on any CPU.
"""

from __future__ import annotations

import os
import resource
import threading

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
        if not _may_run_realtime(priority):
            soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
            raise SettingsError(f"{key}.priority", f"the OS refuses real-time scheduling at {priority} here (rtprio "
                                f"limit {soft}; it needs root with CAP_SYS_NICE, or an rtprio limit in "
                                "/etc/security/limits.conf): set priority = 0, or grant it")


def _may_run_realtime(priority: int) -> bool:
    """Ask the OS itself: a short-lived thread makes itself SCHED_FIFO at ``priority`` and ends (Linux applies
    the policy per thread, so nothing else changes). The capability, not the user id, decides: root in a
    container without CAP_SYS_NICE is refused."""
    answer: list[bool] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            answer.append(True)
        except PermissionError:
            answer.append(False)

    thread = threading.Thread(target=attempt, name="rt-check")
    thread.start()
    thread.join(5.0)
    return bool(answer and answer[0])


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
