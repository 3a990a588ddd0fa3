"""The search on an existing Ray cluster (``search.ray_address``): a separate head started with
``ray start``, two trials at once, nothing shared with the driver but Ray itself.

In its own module: the other search tests hold a local Ray for their whole module, and a driver
connects to one Ray at a time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(monkeypatch):
    """``ray start --head --block`` in its own process group, killed with the group afterwards (a
    ``ray stop`` would stop every Ray on the machine, not only this one). The head and this driver
    share a token of their own: a head finds any ``~/.ray/auth_token`` and then insists on one."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    port, temp = free_port(), tempfile.mkdtemp(prefix="cfhead", dir="/tmp")  # short: socket path limits
    ray_cli = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 90
        while subprocess.run([str(ray_cli), "status", f"--address={address}"], capture_output=True).returncode != 0:
            if time.time() > deadline or head.poll() is not None:
                pytest.fail("the Ray head did not come up within 90 s")
            time.sleep(1)
        yield address
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(head.pid, sig)
                head.wait(wait)
                time.sleep(1)  # the group's other processes end after the leader
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(temp, ignore_errors=True)


DRIVER = """
import sys
import torch
from conftest import token_inputs, tiny_bert
from test_search import TEXTS, WORKLOAD, tiny_fleet
from coformer.adapters import canonicalize
from coformer.search import SearchConfig, run_search

torch.set_num_threads(1)
canonical = canonicalize(tiny_bert())
batches = [token_inputs(batch=4, length=9, seed=1), token_inputs(batch=4, length=9, seed=2)]
config = SearchConfig(trials=2, concurrency=2, ray_address=sys.argv[1], **WORKLOAD, **TEXTS)
run_search(canonical, batches, tiny_fleet(canonical, fractions=(2.0, 2.0, 2.0)), config, sys.argv[2])  # every trial fits
"""


def test_search_runs_its_trials_on_an_existing_cluster(ray_head, tmp_path):
    """The driver is a process of its own, as a user's would be (Ray keeps its auth settings per process)."""
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, ray_head, str(tmp_path)], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 2 and not trials["reason"].astype(str).str.startswith("error").any()
    assert len(list((tmp_path / "ray").glob("tpe-000/trial_*/result.json"))) == 2  # both ran there and reported back
