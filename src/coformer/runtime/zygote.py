"""A process that imports torch once and forks device processes on request.

Starting a Python process that imports torch takes seconds (far more while other work shares
the cores), and a measurement starts one per device for every method and link. The zygote pays
that once: ``python -m coformer.runtime.zygote`` reads one JSON line per device process (spec
file, rank, namespace, environment, log file), forks, and answers the child's pid. The child
enters its network namespace (``setns``), applies its environment, dies with the zygote
(``PR_SET_PDEATHSIG``), and runs ``worker.main``, which pins it and sets one torch thread before
any torch work (the zygote runs none but one meta-device init, so no thread pool exists before the fork).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback

import torch
import torch.distributed  # noqa: F401

from coformer.runtime import flow, parts, worker  # noqa: F401

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def child(request: dict) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1), os.dup2(log, 2)
        if request["namespace"]:
            with open(f"/var/run/netns/{request['namespace']}") as ns:
                if LIBC.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {request['namespace']} failed")
        os.environ.update(request["env"])
        worker.main(request["spec"], request["rank"])
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


def main() -> None:
    with torch.device("meta"):  # the first meta-device init imports torch's decompositions (seconds): do it once, here
        torch.nn.Embedding(2, 2)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
