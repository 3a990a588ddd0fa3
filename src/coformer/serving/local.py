"""Services as local processes: ``bentoml serve`` of bento/ per node and for the aggregator.

Used by ``coformer deploy --local``, the serving tests and the benchmarks. Each service runs in its
own process group (stopped with ``killpg``), logs to a file, and is waited for on ``/readyz`` with
a deadline (a service whose ``__init__`` fails stays up but never becomes ready).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from coformer.errors import CoFormerError
from coformer.serving.artifacts import policy_and_configs
from coformer.serving.config import Deployment

BENTO_DIR = Path(__file__).resolve().parents[3] / "bento"  # the repository's bento/ (editable install)
SERVICES = {"node": "node:EdgeNode", "aggregator": "aggregator:CoFormerAggregator"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str  # device name, or "aggregator"
    url: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None


class LocalDeployment:
    """The aggregator and one node per device of the policy on localhost (``with`` stops them)."""

    def __init__(
        self, artifacts: Path, workdir: Path, deployment: Deployment | None = None, port: int | None = None,
        api_token: str | None = None, processor: str | None = None, bento_dir: Path = BENTO_DIR, remote: bool = False,
    ):
        """``remote``: the deployment's node URLs point elsewhere; start the aggregator only."""
        self.artifacts, self.workdir, self.bento_dir = Path(artifacts).resolve(), Path(workdir).resolve(), bento_dir
        self.workdir.mkdir(parents=True, exist_ok=True)
        policy, _ = policy_and_configs(self.artifacts)
        names = [d.name for d in policy.devices]
        cores = os.cpu_count() or 1
        pinned = cores > len(names)  # core 0 for the aggregator, one core per node
        deployment = deployment or Deployment()
        nodes = deployment.nodes if remote else {n: f"http://127.0.0.1:{free_port()}" for n in names}
        self.deployment = deployment.model_copy(update={"nodes": nodes})
        token = self.deployment.token or os.environ.get("COFORMER_NODE_TOKEN") or ("" if remote else os.urandom(16).hex())
        if not token:
            raise CoFormerError("remote nodes need their shared token: `token:` in the deployment file or COFORMER_NODE_TOKEN")
        self.deployment = self.deployment.model_copy(update={"token": token})
        self.deployment_file = self.deployment.save(self.workdir / "deployment.yaml")
        common = {"COFORMER_ARTIFACTS": str(self.artifacts), "COFORMER_DEPLOYMENT": str(self.deployment_file), "COFORMER_NODE_TOKEN": self.deployment.token}
        self.services = {
            n: Service(n, url, common | {"COFORMER_NODE_NAME": n} | ({"COFORMER_CORE": str(k + 1)} if pinned else {}), self.workdir / f"{n}.log")
            for k, (n, url) in enumerate(nodes.items())
            if not remote
        }
        extra = {"COFORMER_API_TOKEN": api_token} if api_token else {}
        extra |= {"COFORMER_PROCESSOR": processor} if processor else {}
        self.services["aggregator"] = Service("aggregator", f"http://127.0.0.1:{port or free_port()}", common | extra, self.workdir / "aggregator.log")

    @property
    def url(self) -> str:
        return self.services["aggregator"].url

    def start(self, *names: str) -> None:
        """Start services (all when none is named); they load in parallel."""
        for name in names or list(self.services):
            s = self.services[name]
            port = s.url.rsplit(":", 1)[1]
            kind = "aggregator" if name == "aggregator" else "node"
            command = [str(Path(sys.executable).parent / "bentoml"), "serve", SERVICES[kind], "--working-dir", str(self.bento_dir), "--host", "127.0.0.1", "--port", port]
            env = os.environ | {"BENTOML_DO_NOT_TRACK": "True", "PYTHONUNBUFFERED": "1"} | s.env
            with open(s.log, "ab") as log:
                s.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, *names: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names or list(self.services):
            s = self.services[name]
            while True:
                if s.process is not None and s.process.poll() is not None:
                    raise CoFormerError(f"service {name} exited with code {s.process.returncode}; its log {s.log} ends:\n{self.tail(name)}")
                try:
                    if httpx.get(f"{s.url}/readyz", timeout=2.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise CoFormerError(f"service {name} not ready within {timeout_s:.0f} s; its log {s.log} ends:\n{self.tail(name)}")
                time.sleep(0.2)

    def stop(self, *names: str) -> None:
        """SIGTERM the process group of each service (all at once), SIGKILL what is left after 3 s."""
        running = [s for s in (self.services[n] for n in names or list(self.services)) if s.process is not None]
        for s in running:
            _signal(s.process, signal.SIGTERM)  # the whole group: bentoml's workers too
        deadline = time.monotonic() + 3.0
        for s in running:
            try:
                s.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(s.process, signal.SIGKILL)
                s.process.wait()
            s.process = None

    def tail(self, name: str, lines: int = 30) -> str:
        log = self.services[name].log
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else "(no log)"

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
