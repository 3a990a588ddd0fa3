"""``coformer deploy``: the aggregator and one edge node per device on localhost (``--local``), or
the aggregator alone here driving nodes elsewhere (``--deployment site.yaml``)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer

from coformer.cli import app, console
from coformer.errors import CoFormerError
from coformer.loading import DEFAULT_MODEL


@app.command("deploy")
def deploy_command(
    local: bool = typer.Option(False, "--local", help="start every node and the aggregator on this machine"),
    artifacts: Path = typer.Option(Path("outputs/calibrate"), help="calibrated (or decomposed) folder with policy.json, devices/, aggregator/"),
    deployment: Path = typer.Option(None, help="deployment file (node URLs, token, timeouts, failure mode, wire dtype)"),
    model: str = typer.Option(DEFAULT_MODEL, help="the model the artifacts were made from (its tokenizer / image processor)"),
    port: int = typer.Option(3000, help="the aggregator's port"),
    api_token: str = typer.Option(None, envvar="COFORMER_API_TOKEN", help="token the public API requires (default: none)"),
    failure_mode: str = typer.Option(None, help="fail_fast | degraded (overrides the file)"),
    wire_dtype: str = typer.Option(None, help="float32 | float16 | bfloat16 (overrides the file)"),
    workdir: Path = typer.Option(Path("outputs/deploy"), help="logs and the generated deployment file"),
) -> None:
    """Start the services, wait until all are ready, print endpoints and a sample curl; Ctrl-C stops them."""
    from coformer.serving.config import Deployment
    from coformer.serving.local import LocalDeployment

    if not local and deployment is None:
        raise CoFormerError("give --local (everything here) or --deployment FILE (the aggregator here, nodes at the file's URLs)")
    site = Deployment.load(deployment) if deployment else Deployment()
    overrides = {k: v for k, v in {"failure_mode": failure_mode, "wire_dtype": wire_dtype}.items() if v is not None}
    site = Deployment.model_validate(site.model_dump() | overrides)
    fleet = LocalDeployment(artifacts, workdir, site, port=port, api_token=api_token, processor=model, remote=not local)
    names = list(fleet.services)
    with console.status(f"starting {', '.join(names)} (logs in {workdir})"):
        fleet.start()
        try:
            fleet.wait_ready()
        except BaseException:
            fleet.stop()
            raise
    for name, service in fleet.services.items():
        console.print(f"[green]ready[/green] {name:12s} {service.url}")
    for name, url in fleet.deployment.nodes.items():
        if name not in fleet.services:
            console.print(f"remote  {name:12s} {url}")
    auth = f" -H 'Authorization: Bearer {api_token}'" if api_token else ""
    console.print(f"\ncurl -s {fleet.url}/embed -H 'Content-Type: application/json'{auth} -d '{{\"texts\": [\"Open file and return a file object.\"]}}'")
    console.print(f"deployment file: {fleet.deployment_file}; Ctrl-C stops everything")
    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)  # also when started in the background (SIGINT ignored there)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(1.0)
            for name, service in fleet.services.items():
                if service.process is not None and service.process.poll() is not None:
                    raise CoFormerError(f"service {name} exited; its log {service.log} ends:\n{fleet.tail(name)}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        fleet.stop()
