"""Timing primitives for profiling: repeats after warm-up, core pinning, a loopback link probe.

On a machine shared with other work, wall time includes waiting for the CPU, and even a
thread's CPU time grows while other processes thrash the shared caches. Two defences, both on
by default: the thread's CPU time (what the work takes on a dedicated core; single-threaded
torch only) and the fastest of the repeats (the run least disturbed; on a dedicated board the
fastest and the median agree). ``statistic="median"`` gives the median instead.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Literal

import torch

Clock = Literal["cpu", "wall"]
Statistic = Literal["min", "median"]


@dataclass
class Timing:
    cpu_s: float  # thread CPU time (fastest or median of the repeats)
    wall_s: float  # wall time (same statistic)

    def get(self, clock: Clock) -> float:
        return self.cpu_s if clock == "cpu" else self.wall_s


def time_call(
    fn: Callable[[], object], repeats: int = 7, warmup: int = 2, budget_s: float = 5.0, statistic: Statistic = "min"
) -> Timing:
    """Thread-CPU and wall time of ``fn`` over repeats (stopping early once ``budget_s`` is spent)."""
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    start = time.perf_counter()
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
        if time.perf_counter() - start > budget_s and len(cpu) >= 3:
            break
    pick = min if statistic == "min" else statistics.median
    return Timing(pick(cpu), pick(wall))


@dataclass(frozen=True)
class Timer:
    """How every measurement of one profile is timed."""

    clock: Clock = "cpu"
    statistic: Statistic = "min"
    repeats: int = 7
    warmup: int = 2

    def seconds(self, fn: Callable[[], object], repeats: int | None = None) -> float:
        return time_call(fn, repeats or self.repeats, self.warmup, statistic=self.statistic).get(self.clock)


@contextmanager
def pinned(threads: int, core: int | None):
    """Run with ``threads`` torch threads, pinned to one core when given; restore afterwards."""
    old_threads = torch.get_num_threads()
    old_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    torch.set_num_threads(threads)
    if core is not None and old_affinity is not None:
        os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        if core is not None and old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)


def measure_link(payload_bytes: int = 8 * 2**20, pings: int = 200, timeout_s: float = 10.0) -> tuple[float, float]:
    """(bytes/s, round-trip seconds) of TCP over the loopback to an echo server started here.

    Protocol: an 8-byte length, that many bytes, then a 1-byte acknowledgement (length 0 is a ping).
    """
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(timeout_s)
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        conn.settimeout(timeout_s)
        with conn:
            while header := receive(conn, 8):
                receive(conn, int.from_bytes(header, "little"))
                conn.sendall(b"k")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def exchange(payload: bytes) -> float:
            t0 = time.perf_counter()
            client.sendall(len(payload).to_bytes(8, "little") + payload)
            receive(client, 1)
            return time.perf_counter() - t0

        rtt = statistics.median(exchange(b"") for _ in range(pings))
        seconds = statistics.median(exchange(b"x" * payload_bytes) for _ in range(3))
    thread.join(timeout=timeout_s)
    server.close()
    return payload_bytes / max(seconds - rtt, 1e-9), rtt


def receive(conn: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes (b"" if the peer closed first)."""
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            return b""
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
