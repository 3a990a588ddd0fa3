"""Start one process per rank, wait for them, and never leave one behind.

Every device process runs in its own process group (``start_new_session``) and is told by the
kernel to die with its parent (``PR_SET_PDEATHSIG``), so neither an exception, Ctrl-C, a SIGTERM
of the parent (turned into an exception while a run is in progress) nor a SIGKILL of the parent
leaves one running. A failed process stops the run with its last lines of output.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from coformer.runtime.network import Network, loopback
from coformer.runtime.parts import check_folder
from coformer.runtime.plan import RuntimeFailure, RuntimePlan
from coformer.runtime.results import RunResult, collect

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def sigterm_raises():
    """While a run is in progress, SIGTERM of this process raises SystemExit so ``finally`` runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assign_cores(plan: RuntimePlan) -> list[int]:
    """Device k on core k (wrapping around); a gateway shares the first device's core."""
    cores = sorted(os.sched_getaffinity(0))
    devices = plan.world - int(plan.gateway)
    per_device = [cores[k % len(cores)] for k in range(devices)]
    return ([per_device[0]] if plan.gateway else []) + per_device


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every process group still alive, SIGKILL to what outlives a short grace."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        alive = [p for p in processes if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)


def tail(path: Path, lines: int = 8) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:])


def run_plan(
    plan: RuntimePlan,
    requests: dict[str, dict[str, torch.Tensor]],
    network: Network | None = None,
    timeout_s: float = 600.0,
    workdir: str | Path | None = None,
) -> RunResult:
    """Run ``plan`` with one process per rank; ``requests``: request set name -> its inputs."""
    check_folder(plan)
    network = network or loopback(plan.world)
    missing = [s.name for s in plan.sets if s.name not in requests]
    if missing:
        raise RuntimeFailure(f"no inputs for request sets {missing}; pass them in requests")
    with tempfile.TemporaryDirectory(prefix="coformer-run-", dir=workdir) as tmp:
        folder = Path(tmp)
        save_file({f"{name}/{k}": v.clone() for name, batch in requests.items() for k, v in batch.items()}, folder / "requests.safetensors")
        spec = {
            "plan": plan.model_dump(),
            "cores": assign_cores(plan),
            "init_method": f"tcp://{network.master_addr}:{free_port()}",
            "requests": str(folder / "requests.safetensors"),
            "folder": str(folder),
            "timeout_s": timeout_s,
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        processes: list[subprocess.Popen] = []
        started = time.perf_counter()
        with sigterm_raises():
            try:
                for rank in range(plan.world):
                    env = os.environ | {"GLOO_SOCKET_IFNAME": network.interfaces[rank], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                    log = open(folder / f"rank{rank}.log", "w")
                    command = [*network.prefix(rank), sys.executable, "-m", "coformer.runtime.worker", str(folder / "spec.json"), str(rank)]
                    processes.append(
                        subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
                    )
                    log.close()
                wait(processes, folder, timeout_s)
            finally:
                stop(processes)
        outputs = load_file(folder / "outputs.safetensors")
        reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(plan.world)]
        return collect(plan, reports, outputs, network.label, time.perf_counter() - started)


def wait(processes: list[subprocess.Popen], folder: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        codes = [p.poll() for p in processes]
        bad = next(((r, c) for r, c in enumerate(codes) if c not in (None, 0)), None)
        if bad:
            raise RuntimeFailure(f"device process rank {bad[0]} exited with {bad[1]}: {tail(folder / f'rank{bad[0]}.log')}")
        if all(c == 0 for c in codes):
            return
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"the run took longer than timeout_s={timeout_s:g} s; raise it or time fewer requests")
        time.sleep(0.05)
