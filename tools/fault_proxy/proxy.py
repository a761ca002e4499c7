"""The fault proxy: a TCP relay that puts internet faults between a ZeroMQ publisher and its subscribers.

The proxy listens on a loopback port; each subscriber (SUB / XSUB) that connects to it gets its own
connection to the publisher (an XPUB that binds), and the proxy relays the ZMTP byte streams between the
two (``relay.py``), injecting, per direction (``schedule.py``):

* ``delay``: a fixed delay for every message and command;
* ``jitter``: an extra ``uniform(0, jitter)`` delay drawn per message. Messages leave in order of their
  scheduled times, so jitter larger than their spacing reorders them the way a datagram network would;
* ``loss`` (down only): the probability that a spikewire *data* packet is dropped;
* ``reorder`` (down only): the probability that a data packet is held back and sent right after the
  next message (swapped with its successor).

``delay`` and ``jitter`` apply to both directions unless ``up_delay`` / ``up_jitter`` say otherwise.
Everything is counted (:meth:`FaultProxy.stats`, ``stats.py``) so that a test can compare a receiver's
counters with what was injected.

Limits:

* Only a NULL-mechanism stream is parsed (``zmtp.py``). For any other mechanism (PLAIN, CURVE, ...) the
  bytes after the greeting are relayed as an opaque stream with the fixed delay only: CURVE carries data
  as encrypted MESSAGE commands with strictly increasing nonces, so jitter, loss or reordering would break
  the decryption and kill the connection instead of simulating a network. The same fallback (and a
  ``raw_fallbacks`` count) applies to a pre-3.0 ZMTP greeting, malformed framing, or a message larger
  than ``MAX_MESSAGE`` bytes.
* After a cut, libzmq re-sends a SUB's subscriptions over the new connection only once the owning
  thread touches the socket (poll / recv): the I/O thread's "hiccup" waits in the socket's mailbox, so
  an idle SUB gets nothing until it is polled. Real receivers poll constantly; tests must too.
* It runs an asyncio loop in one daemon thread: about 10^5 small messages/s clean, half that with
  jitter, loss and reordering on (2 vCPUs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import itertools
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .relay import CLIENT, Link, Side
from .schedule import DOWN, UP, Faults, faults_dict, updated_faults
from .stats import Tally

if TYPE_CHECKING:
    from typing import Self

_HISTORY = 32  # closed connections kept in stats()["links"]


def is_loopback(host: str) -> bool:
    """True if ``host`` (an address or a name) only ever means this machine."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        address = None  # a name: resolve it
    if address is not None:
        return address.is_loopback
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%", 1)[0]).is_loopback for info in infos)


class FaultProxy:
    """Relay ZeroMQ TCP connections from ``listen`` to ``target``, injecting delay, jitter, loss and reordering.

    ``delay`` and ``jitter`` (seconds) apply to both directions unless ``up_delay`` / ``up_jitter`` are
    given; ``loss`` and ``reorder`` (probabilities) act on down-going spikewire data packets only. See
    ``schedule.py`` for the ordering rules and this module's docstring for the limits. Runs in a daemon thread between
    :meth:`start` and :meth:`stop` (or as a context manager); every public method is thread-safe.
    """

    def __init__(self, listen: tuple[str, int] = ("127.0.0.1", 0), target: tuple[str, int] | None = None,
                 delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0, reorder: float = 0.0, seed: int = 0,
                 *, up_delay: float | None = None, up_jitter: float | None = None, allow_remote: bool = False):
        if target is None:
            raise ValueError("target=(host, port) of the publisher is required")
        self.listen = _address(listen, "listen", allow_zero=True)
        self.target = _address(target, "target", allow_zero=False)
        if not allow_remote and not is_loopback(self.listen[0]):
            raise ValueError(f"refusing to listen on {self.listen[0]!r}: not a loopback address (allow_remote=True "
                             "to override)")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self._faults = updated_faults({DOWN: Faults(), UP: Faults()}, delay, jitter, loss, reorder, up_delay,
                                      up_jitter)
        self.port: int | None = None
        """The bound listen port, once started."""
        self.bound_host: str | None = None
        """The address actually listened on, once started."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._ids = itertools.count()
        self._links: dict[int, Link] = {}
        self._history: deque = deque(maxlen=_HISTORY)
        self._closed_tally = Tally()
        self._accepted_count = 0
        self._closed_count = 0
        self._cut_count = 0
        self._upstream_failures = 0
        self._started_at: float | None = None

    # ---- configuration ---------------------------------------------------------------------------

    def set_faults(self, delay: float | None = None, jitter: float | None = None, loss: float | None = None,
                   reorder: float | None = None, *, up_delay: float | None = None,
                   up_jitter: float | None = None) -> dict:
        """Change the faults for everything the proxy reads from now on (None keeps a value). ``delay`` and
        ``jitter`` set both directions, then ``up_delay`` / ``up_jitter`` override the up direction.
        Already scheduled messages keep their times. Returns the new faults as a dict."""
        self._faults = updated_faults(self._faults, delay, jitter, loss, reorder, up_delay, up_jitter)
        return self.faults()

    def faults(self) -> dict:
        """The faults in force: {"down": {delay, jitter, loss, reorder}, "up": {delay, jitter}}."""
        return faults_dict(self._faults)

    # ---- running ---------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint subscribers connect to (after :meth:`start`)."""
        if self.port is None:
            raise RuntimeError("the proxy is not started")
        host = self.bound_host
        return f"tcp://[{host}]:{self.port}" if ":" in host else f"tcp://{host}:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("a FaultProxy can only be started once")
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy->{self.target[1]}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("the fault proxy did not start within 10 s")
        if self._start_error is not None:
            self._thread.join(2.0)
            raise self._start_error
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every connection (queued data is counted as discarded), join the thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        try:
            self._loop.call_soon_threadsafe(self._shutdown)
        except RuntimeError:  # the loop already closed: the thread is finishing on its own
            self._loop = None
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the fault proxy thread did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                host, port = self.listen
                # one listening socket: a name binds its first address only
                address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: Side(self, CLIENT), address, port))
            except OSError as exc:  # socket.gaierror included
                self._start_error = exc
                self._ready.set()
                return
            self.bound_host, self.port = self._server.sockets[0].getsockname()[:2]
            self._started_at = time.monotonic()
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._settle())
        finally:
            loop.close()

    def _shutdown(self) -> None:
        self._server.close()
        for link in list(self._links.values()):
            link.cut_now(counted=False)
        self._loop.stop()

    async def _settle(self) -> None:
        tasks = [link.connect_task for link in self._links.values() if link.connect_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(3):  # let aborted transports deliver connection_lost
            await asyncio.sleep(0)

    def _accepted(self, transport) -> Link:
        link = Link(self, next(self._ids), transport)
        self._links[link.id] = link
        self._accepted_count += 1
        link.connect_task = self._loop.create_task(link.connect())
        return link

    def _closed(self, link: Link) -> None:
        self._links.pop(link.id, None)
        self._closed_count += 1
        if link.cut:
            self._cut_count += 1
        self._closed_tally.add(link.down.stats, link.up.stats, link.sources)
        self._history.append(link.to_dict())

    def _call(self, fn, timeout: float = 5.0):
        """Run ``fn`` in the proxy's thread (or here, if that thread is not running) and return its result."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return fn()

        async def run():
            return fn()

        coro = run()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop has closed meanwhile
            coro.close()
            thread.join(timeout)
            return fn()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return future.result(0.05)
            except concurrent.futures.TimeoutError:
                if not thread.is_alive():
                    return fn()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the fault proxy thread did not answer within {timeout} s") from None

    def drop_connections(self) -> int:
        """Cut every current connection (client and upstream, both reset; queued data discarded), as a
        network outage would. ZeroMQ peers reconnect by themselves. Returns how many were cut."""
        def cut():
            links = [link for link in self._links.values() if not link.cut]
            for link in links:
                link.cut_now()
            return len(links)

        return self._call(cut)

    def stats(self) -> dict:
        """A JSON-serialisable snapshot of everything done so far, summed over all connections:

        * ``listen``, ``target``, ``seed``, ``uptime_s``, ``faults`` ({"down": {delay, jitter, loss,
          reorder}, "up": {delay, jitter}}), ``connections`` (accepted, open, closed, cut,
          upstream_failures);
        * ``down`` and ``up``: bytes_in/out, raw_bytes (greeting and unparsed stream), messages_in/out,
          commands_in/out, commands_by_name, data_packets, control_packets, other_messages,
          subscription_messages (ZMTP 3.0, up), dropped, out_of_order, reordered_by_swap, swap_timeouts,
          discarded_messages/commands/bytes (queued when a connection went), raw_fallbacks,
          pending_messages, and {count, min, mean, max} summaries: ``delay_s`` (scheduled delay of data
          packets), ``message_delay_s`` (scheduled, every message), ``emit_delay_s`` (arrival to emission of
          data packets, as it happened);
        * ``sources``: per source id (a string) of down-going data packets: received, forwarded, dropped,
          discarded, out_of_order, reordered_by_swap, pending (= received - forwarded - dropped - discarded);
        * ``links``: the same per connection (open ones and the last few closed), with ``mechanism``.
        """
        return self._call(self._stats)

    def _stats(self) -> dict:
        tally = Tally()
        tally.merge(self._closed_tally)
        links = list(self._history)
        for link in list(self._links.values()):
            tally.add(link.down.stats, link.up.stats, link.sources)
            links.append(link.to_dict())
        totals = tally.to_dict()
        return {
            "listen": f"{self.bound_host or self.listen[0]}:{self.port if self.port is not None else self.listen[1]}",
            "target": f"{self.target[0]}:{self.target[1]}",
            "seed": self.seed,
            "uptime_s": None if self._started_at is None else time.monotonic() - self._started_at,
            "faults": self.faults(),
            "connections": {"accepted": self._accepted_count, "open": len(self._links), "closed": self._closed_count,
                            "cut": self._cut_count, "upstream_failures": self._upstream_failures},
            DOWN: totals[DOWN],
            UP: totals[UP],
            "sources": totals["sources"],
            "links": links,
        }


def _address(value, what: str, allow_zero: bool) -> tuple[str, int]:
    try:
        host, port = value
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (host, port) pair, got {value!r}") from None
    if not isinstance(host, str) or not host:
        raise ValueError(f"{what} host must be a non-empty string, got {host!r}")
    if not isinstance(port, int) or not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError(f"{what} port must be an int in {0 if allow_zero else 1}..65535, got {port!r}")
    return host, port
