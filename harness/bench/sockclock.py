"""Kernel receive timestamps (SO_TIMESTAMPNS) on the monotonic clock.

A Python process that is busy, or descheduled by other work on the machine, reads a socket
milliseconds after the bytes arrived; the kernel stamps each segment as it arrives, so reading
that stamp makes a measured time independent of how soon this process got to look. The stamp
is on CLOCK_REALTIME; it is moved onto CLOCK_MONOTONIC (time.perf_counter_ns) with the two
clocks' offset read at the same moment, and never trusted past "now" (a stepped wall clock).
For TCP, a read that drains several segments carries the stamp of the last one, so reads are
small (StampedSocket).

Linux only; elsewhere, and for TLS sockets, callers fall back to the time of the read.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from time import perf_counter_ns

# Not exported by Python's socket module; 35 is SO_TIMESTAMPNS (_OLD) on x86, arm and most
# Linux architectures, and SCM_TIMESTAMPNS has the same value. The payload is a native timespec.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
MAX_SKEW_NS = 10_000_000_000  # a stamp this far behind "now" means the wall clock was stepped


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received data; False where that is not available."""
    if not sys.platform.startswith("linux") or not _ANCILLARY:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


_clock_offset = [0, -(10**18)]  # CLOCK_REALTIME - CLOCK_MONOTONIC in ns, and when it was read
OFFSET_REFRESH_NS = 50_000_000  # the offset only moves as NTP slews the wall clock (ppm)
_OFFSET_READS = 5


def clock_offset() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC: the wall clock read between two monotonic reads, from the
    tightest of a few tries, so a process descheduled between two reads (milliseconds on a busy
    machine) does not shift every stamp by that much."""
    best_width, best = None, 0
    for _ in range(_OFFSET_READS):
        before = perf_counter_ns()
        wall = time.time_ns()
        after = perf_counter_ns()
        if best_width is None or after - before < best_width:
            best_width, best = after - before, wall - (before + after) // 2
    return best


def recv(sock: socket.socket, size: int) -> tuple[bytes, int, int]:
    """(data, arrival ns, read ns): arrival is the kernel's stamp when there is one, else the read time."""
    data, ancillary, _, _ = sock.recvmsg(size, _ANCILLARY)
    now = perf_counter_ns()
    if ancillary:
        level, kind, payload = ancillary[0]
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            if now - _clock_offset[1] > OFFSET_REFRESH_NS:
                _clock_offset[0], _clock_offset[1] = clock_offset(), now
            sec, nsec = _TIMESPEC.unpack_from(payload)
            arrived = sec * 1_000_000_000 + nsec - _clock_offset[0]
            if now - MAX_SKEW_NS < arrived <= now:
                return data, arrived, now
    return data, now, now


class StampedSocket:
    """A non-blocking TCP socket on the event loop: reads carry arrival stamps, writes are
    sent at once (buffered only when the kernel's send buffer is full). Subclasses implement
    `on_data(arrived_ns, read_ns, data)` and `on_lost(exc)`."""

    # Reads are repeated until the socket is drained, each as long as `read_size()` says: when this
    # process falls behind, one big read would drain many segments and carry the stamp of the
    # newest (TCP reports the last segment a read touched), moving every earlier event in it
    # later. A subclass that knows where the peer's writes end (HTTP chunk framing) reads up to
    # exactly there, so each event keeps its own segment's stamp.
    READ_SIZE = 512
    MAX_READS = 512  # per readiness callback, so one busy stream cannot starve the others

    def read_size(self) -> int:
        return self.READ_SIZE

    def __init__(self, loop, sock: socket.socket) -> None:  # loop: asyncio.AbstractEventLoop
        self.loop, self.sock, self.fd = loop, sock, sock.fileno()
        self.closed = False
        self._out = bytearray()
        loop.add_reader(self.fd, self._readable)

    @staticmethod
    def prepare(sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enable(sock)

    def on_data(self, arrived: int, read: int, data: bytes) -> None:
        raise NotImplementedError

    def on_lost(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        if self.closed:
            self.on_lost(ConnectionResetError("connection already closed"))
            return
        if self._out:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        if sent < len(data):
            self._out += data[sent:]
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        del self._out[:sent]
        if not self._out:
            self.loop.remove_writer(self.fd)

    def _readable(self) -> None:
        for _ in range(self.MAX_READS):
            try:
                size = self.read_size()
                data, arrived, read = recv(self.sock, size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc)
                return
            if not data:
                self._fail(None)
                return
            self.on_data(arrived, read, data)
            if self.closed or len(data) < size:
                return

    def close(self, reset: bool = False) -> None:
        """Close at once; reset=True sends a TCP RST (as a crashed peer would) instead of a FIN."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        if reset:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()

    def _fail(self, exc: BaseException | None) -> None:
        self.close()
        self.on_lost(exc)
