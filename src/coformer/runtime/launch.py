"""Start one process per rank, wait for them, and never leave one behind.

Device processes are forked by a zygote (``zygote.py``: torch imported once per evaluation, not
once per process). The zygote runs in a process group of its own and dies with its parent, and
every device process dies with the zygote (``PR_SET_PDEATHSIG``): neither an exception, Ctrl-C,
a SIGTERM of the parent (turned into an exception while a run is in progress) nor a SIGKILL of
the parent leaves one running. A failed process stops the run with its last lines of output.
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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(pids: list[int]) -> None:
    """SIGTERM to every process still alive, SIGKILL to what outlives a short grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3.0
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


class Zygote:
    """The device processes' parent for as long as the ``with`` block lasts."""

    def __enter__(self) -> Zygote:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coformer.runtime.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: one killpg ends it and every device process
            preexec_fn=die_with_parent,
        )
        return self

    def fork(self, spec: Path, rank: int, namespace: str | None, env: dict[str, str], log: Path) -> int:
        request = {"spec": str(spec), "rank": rank, "namespace": namespace, "env": env, "log": str(log)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer.strip():
            raise RuntimeFailure(f"the zygote exited ({self.process.poll()}) before starting rank {rank}; is torch importable?")
        return int(answer)

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assign_cores(plan: RuntimePlan) -> list[int]:
    """Device k on allowed core ``first_core + k`` (wrapping around); a gateway shares the first device's core."""
    cores = sorted(os.sched_getaffinity(0))
    devices = plan.world - int(plan.gateway)
    per_device = [cores[(plan.first_core + k) % len(cores)] for k in range(devices)]
    return ([per_device[0]] if plan.gateway else []) + per_device


def tail(path: Path, lines: int = 8) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:])


def run_plan(
    plan: RuntimePlan,
    requests: dict[str, dict[str, torch.Tensor]],
    network: Network | None = None,
    timeout_s: float = 600.0,
    zygote: Zygote | None = None,
) -> RunResult:
    """Run ``plan`` with one process per rank; ``requests``: request set name -> its inputs.
    ``zygote``: a started ``Zygote`` to fork from (None: one for this run only)."""
    check_folder(plan)
    if zygote is None:
        with Zygote() as own:
            return run_plan(plan, requests, network, timeout_s, own)
    network = network or loopback(plan.world)
    missing = [s.name for s in plan.sets if s.name not in requests]
    if missing:
        raise RuntimeFailure(f"no inputs for request sets {missing}; pass them in requests")
    with tempfile.TemporaryDirectory(prefix="coformer-run-") as tmp:
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
        pids: list[int] = []
        started = time.perf_counter()
        with sigterm_raises():
            try:
                for rank in range(plan.world):
                    env = {"GLOO_SOCKET_IFNAME": network.interfaces[rank], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                    namespace = network.namespaces[rank] if network.namespaces else None
                    pids.append(zygote.fork(folder / "spec.json", rank, namespace, env, folder / f"rank{rank}.log"))
                wait(pids, folder, timeout_s)
            finally:
                stop(pids)
        outputs = load_file(folder / "outputs.safetensors")
        reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(plan.world)]
        return collect(plan, reports, outputs, network.label, time.perf_counter() - started)


def wait(pids: list[int], folder: Path, timeout_s: float) -> None:
    """Until every rank has written its report; a rank gone without one is a failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = [(folder / f"rank{r}.json").is_file() for r in range(len(pids))]
        if all(done):
            return
        lost = next((r for r, (pid, d) in enumerate(zip(pids, done)) if not d and not alive(pid)), None)
        if lost is not None:
            raise RuntimeFailure(f"device process rank {lost} failed: {tail(folder / f'rank{lost}.log')}")
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"the run took longer than timeout_s={timeout_s:g} s; raise it or time fewer requests")
        time.sleep(0.05)
