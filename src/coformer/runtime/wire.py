"""Every transfer of one device process over torch.distributed (gloo), counted and timed.

Activations travel in the wire dtype (fp32, fp16 or bf16) and are cast back to fp32 on arrival;
integer tensors (token ids, masks) travel as they are. ``bytes`` counts what this process puts on
the wire: a point-to-point send its payload and a 64-byte header (dtype and shape), an
all-reduce ``2 (n - 1) / n`` times its payload (a ring all-reduce's traffic per rank).
``seconds`` is the time spent inside transfers, waiting for a peer included.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
import torch.distributed as dist

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CODES = [torch.long, torch.float32, torch.float16, torch.bfloat16, torch.bool]  # dtype on the wire, by header code
HEADER = 8  # longs: dtype code, ndim, shape (up to 6 dims)


class Wire:
    def __init__(self, wire: str = "fp32"):
        self.dtype = DTYPES[wire]
        self.bytes = 0
        self.seconds = 0.0
        self.pending: list = []  # (work, tensor) of asynchronous sends not yet completed

    def reset(self, wire: str) -> None:
        self.dtype, self.bytes, self.seconds = DTYPES[wire], 0, 0.0

    @contextmanager
    def timed(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def outgoing(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.dtype).contiguous() if t.is_floating_point() else t.contiguous()

    def send(self, t: torch.Tensor, dst: int, wait: bool = True) -> None:
        """Send to rank ``dst`` behind a small header (dtype, shape) so the receiver needs no
        shape of its own; ``wait=False`` returns at once (``flush`` completes it)."""
        t = self.outgoing(t)
        header = torch.full((HEADER,), -1, dtype=torch.long)
        header[0], header[1] = CODES.index(t.dtype), t.dim()
        header[2 : 2 + t.dim()] = torch.tensor(t.shape)
        self.bytes += header.numel() * 8 + t.numel() * t.element_size()
        with self.timed():
            for part in (header, t):
                work = dist.isend(part, dst)
                if wait:
                    work.wait()
                else:
                    self.pending.append((work, part))

    def recv(self, src: int) -> torch.Tensor:
        """The next tensor rank ``src`` sent; activations come back as fp32."""
        header = torch.empty(HEADER, dtype=torch.long)
        with self.timed():
            dist.recv(header, src)
            dtype, ndim = CODES[int(header[0])], int(header[1])
            t = torch.empty(header[2 : 2 + ndim].tolist(), dtype=dtype)
            dist.recv(t, src)
        return t.float() if t.is_floating_point() else t

    def all_reduce(self, t: torch.Tensor, group=None) -> torch.Tensor:
        """Sum over the ranks of ``group`` (default: all)."""
        n = dist.get_world_size(group)
        t = self.outgoing(t)
        self.bytes += int(2 * (n - 1) / n * t.numel() * t.element_size())
        with self.timed():
            dist.all_reduce(t, group=group)
        return t.float()

    def flush(self) -> None:
        with self.timed():
            for work, _ in self.pending:
                work.wait()
        self.pending.clear()
