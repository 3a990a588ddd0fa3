"""Serving benchmarks on localhost (printed, not timed tests): the MiniLM decomposition served by
``bentoml serve`` processes (one node per device + the aggregator).

(a) latency of ``embed`` at 8 x 128 tokens through the aggregator vs the in-process executor (one
    thread, the devices one after another) and vs the same data flow in one pinned process per
    device over gloo (``coformer.runtime``: the parallel work without HTTP, the fair base of an overhead);
(b) load: 16 then 64 concurrent clients for ``--seconds`` each: errors, p50 / p99, throughput;
(c) a node killed at 1/3 and restarted at 2/3 of ``--failure-seconds`` (+ ``--grace``) under 16 clients, in
    ``degraded`` mode (failed requests, share of degraded answers, their cosine to the teacher) and
    in ``fail_fast`` mode (only 503s during the outage, none slower than the timeout, recovery).

    .venv/bin/python benchmarks/serving.py [--artifacts outputs/calibrate] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
import torch.nn.functional as F

from coformer.calibrate.student import load_student
from coformer.executor import Teacher
from coformer.loading import load_model
from coformer.runtime import RequestSet, RuntimePlan, run_plan
from coformer.serving.config import Deployment
from coformer.serving.local import LocalDeployment


def artifacts_or_decompose(folder: Path | None, scratch: Path) -> Path:
    if folder is not None and (folder / "policy.json").is_file():
        return folder
    out = scratch / "decomposed"
    print(f"no calibrated folder given: decomposing the MiniLM for 2 devices into {out}", flush=True)
    subprocess.run([str(Path(sys.executable).parent / "coformer"), "decompose", "--devices", "2", "--sync", "0", "--out", str(out)], check=True, capture_output=True)
    return out


def request_rows(batch: int, tokens: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 29000, (batch, tokens), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return ids.tolist()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latency(local: LocalDeployment, artifacts: Path, repeats: int) -> None:
    rows = request_rows(8, 128)
    _, student = load_student(artifacts)
    student.eval()
    inputs = {"input_ids": torch.tensor(rows), "attention_mask": torch.ones(8, 128, dtype=torch.long)}
    with torch.inference_mode():
        student(inputs)
        local_times = []
        for _ in range(repeats):
            t = time.perf_counter()
            want = student(inputs).output
            local_times.append(time.perf_counter() - t)
    served_times = []
    with httpx.Client(timeout=60) as client:
        client.post(f"{local.url}/embed", json={"input_ids": rows})
        for _ in range(repeats):
            t = time.perf_counter()
            r = client.post(f"{local.url}/embed", json={"input_ids": rows})
            served_times.append(time.perf_counter() - t)
    error = (torch.tensor(r.json()["embeddings"]) - want).abs().max().item()
    plan = RuntimePlan(folder=str(artifacts), devices=len(student.submodels), sets=[RequestSet(name="b8")], warmup=2, repeats=repeats)
    c = float(statistics.median(run_plan(plan, {"b8": inputs}).sets["b8"].latency_s))
    a, b = statistics.median(local_times), statistics.median(served_times)
    print(f"(a) embed 8 x 128, median of {repeats}: in-process executor {a * 1e3:.0f} ms (one thread, devices one after another), "
          f"gloo processes {c * 1e3:.0f} ms (one pinned process per device), through the aggregator {b * 1e3:.0f} ms "
          f"(a bentoml node per device): overhead {(b - c) / c:+.0%} over the processes, {(b - a) / a:+.0%} over the executor; "
          f"max |difference| {error:.1e}", flush=True)


async def clients(url: str, n: int, seconds: float, rows, on_answer=None) -> list[tuple[float, float, int, dict | None]]:
    """``n`` clients posting ``embed`` back to back: (start offset, seconds, status, json) per request."""
    results = []
    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:

        async def one():
            while (now := time.perf_counter()) - began < seconds:
                try:
                    r = await client.post(f"{url}/embed", json={"input_ids": rows})
                    status, body = r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else None)
                except httpx.HTTPError as e:
                    status, body = 0, {"error": f"client: {type(e).__name__} {e}"}
                results.append((now - began, time.perf_counter() - now, status, body))

        await asyncio.gather(*(one() for _ in range(n)))
    return results


def load(local: LocalDeployment, seconds: float, rows) -> None:
    for n in (16, 64):
        results = asyncio.run(clients(local.url, n, seconds, rows))
        ok = [d for _, d, s, _ in results if s == 200]
        print(f"(b) {n} clients x {seconds:.0f} s: {len(results)} requests, {len(results) - len(ok)} errors, "
              f"p50 {percentile(ok, 0.5) * 1e3:.0f} ms, p99 {percentile(ok, 0.99) * 1e3:.0f} ms, {len(ok) / seconds:.1f} req/s", flush=True)


def failure(artifacts: Path, scratch: Path, mode: str, seconds: float, grace: float, rows, teacher_embedding: torch.Tensor, timeout_s: float) -> None:
    """Kill a node at seconds/3, restart it at 2 seconds/3; clients run ``grace`` longer (a node loads for a while)."""
    deployment = Deployment(failure_mode=mode, timeout_s=timeout_s)
    with LocalDeployment(artifacts, scratch / mode, deployment) as local:
        victim = [n for n in local.services if n != "aggregator"][-1]

        async def scenario():
            async def chaos() -> float:
                """Kill, restart, and when the restarted node reports ready (seconds from the start)."""
                began = time.perf_counter()
                await asyncio.sleep(seconds / 3)
                local.stop(victim)
                await asyncio.sleep(seconds / 3)
                local.start(victim)
                await asyncio.to_thread(local.wait_ready, victim)
                return time.perf_counter() - began

            task = asyncio.ensure_future(chaos())
            results = await clients(local.url, 16, seconds + grace, rows)
            return results, await task

        results, ready = asyncio.run(scenario())
    outage = (seconds / 3, 2 * seconds / 3)
    failed = [r for r in results if r[2] != 200]
    errors = sorted({f"{r[2]}: {(r[3] or {}).get('error', '')[:120]}" for r in failed})
    if mode == "degraded":
        degraded = [r for r in results if r[2] == 200 and r[3]["degraded"]]
        cosines = [F.cosine_similarity(torch.tensor(r[3]["embeddings"]), teacher_embedding, dim=-1).mean().item() for r in degraded]
        full = [F.cosine_similarity(torch.tensor(r[3]["embeddings"]), teacher_embedding, dim=-1).mean().item() for r in results if r[2] == 200 and not r[3]["degraded"]]
        print(f"(c) degraded, {victim} down {outage[0]:.0f}-{outage[1]:.0f} s: {len(results)} requests, {len(failed)} failed, "
              f"{len(degraded) / max(1, len(results)):.0%} degraded (cosine to the teacher {statistics.mean(cosines) if cosines else float('nan'):.3f}; "
              f"full answers {statistics.mean(full) if full else float('nan'):.3f}){'; failures: ' + ' | '.join(errors) if errors else ''}", flush=True)
        return
    before = [r for r in results if r[0] + r[1] < outage[0]]
    during = [r for r in results if outage[0] + timeout_s < r[0] < outage[1]]
    back = min((r[0] for r in results if r[0] > outage[1] and r[2] == 200), default=None)  # the node loads for a while
    after = [r for r in results if back is not None and r[0] >= back]
    slow = [r for r in during if r[2] != 200 and r[1] > timeout_s]
    last_failure = max((r[0] for r in after if r[2] != 200), default=back)  # a starting node may flap for a moment
    steady = [r for r in after if r[0] > (last_failure or 0)]
    recovery = (
        "NOT recovered"
        if back is None or not steady
        else f"the restarted node ready {ready - outage[1]:.1f} s after its start, the first full answer {back - ready:+.1f} s and "
        f"only full answers {last_failure - ready:+.1f} s from then"
    )
    print(f"(c) fail_fast, {victim} down {outage[0]:.0f}-{outage[1]:.0f} s: before {sum(r[2] == 200 for r in before)}/{len(before)} ok; "
          f"during {sum(r[2] == 503 for r in during)} x 503, {sum(r[2] not in (200, 503) for r in during)} other errors, slowest "
          f"{max((r[1] for r in during if r[2] != 200), default=0):.2f} s ({len(slow)} over timeout_s={timeout_s}; queued before the kill: slowest "
          f"{max((r[1] for r in failed if r[0] <= outage[0] + timeout_s), default=0):.2f} s); after it {sum(r[2] == 200 for r in after)}/{len(after)} ok, "
          f"{recovery}", flush=True)
    late = sorted({f"{r[2]} at {r[0]:.0f} s: {(r[3] or {}).get('error', '')[:160]}" for r in after if r[2] != 200})
    if late:
        print("    failures after the node came back: " + " | ".join(late[:5]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("outputs/calibrate"), help="calibrated folder (decomposes the MiniLM if absent)")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each load level")
    parser.add_argument("--failure-seconds", type=float, default=60.0, help="duration of each failure scenario")
    parser.add_argument("--grace", type=float, default=60.0, help="clients keep going this long after a failure scenario (the node reloads)")
    parser.add_argument("--repeats", type=int, default=20, help="timed requests for (a)")
    parser.add_argument("--load-batch", type=int, default=1, help="sequences per request in (b) and (c)")
    parser.add_argument("--load-tokens", type=int, default=128, help="tokens per sequence in (b) and (c)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-node timeout_s in (c)")
    parser.add_argument("--modes", nargs="+", default=["degraded", "fail_fast"], choices=["degraded", "fail_fast"], help="failure modes run in (c)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["latency", "load", "failure"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ.setdefault("BENTOML_HOME", str(scratch / "bentoml"))
        artifacts = artifacts_or_decompose(args.artifacts, scratch)
        rows = request_rows(args.load_batch, args.load_tokens, seed=1)
        if "latency" not in args.skip or "load" not in args.skip:
            with LocalDeployment(artifacts, scratch / "steady") as local:
                if "latency" not in args.skip:
                    latency(local, artifacts, args.repeats)
                if "load" not in args.skip:
                    load(local, args.seconds, rows)
        if "failure" not in args.skip:
            minilm = load_model()
            with torch.inference_mode():
                inputs = {"input_ids": torch.tensor(rows), "attention_mask": torch.ones(len(rows), len(rows[0]), dtype=torch.long)}
                teacher = Teacher(minilm.canonical.body, minilm.canonical.head)(inputs).output
            for mode in args.modes:
                failure(artifacts, scratch, mode, args.failure_seconds, args.grace, rows, teacher, args.timeout)


if __name__ == "__main__":
    main()
