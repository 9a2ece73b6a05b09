"""The online server (components/serve.py, KServe's REST app) on each shipped example's champion, on this machine.

For digits (images), penguins (a table) and spam (texts, the BiLSTM), each trained by `dvc repro` in a copy of
this project with its own MLflow store, then served on 127.0.0.1 by `python -m components.serve`:

1. Latency and throughput of single-example v1 requests from 1 and from 16 concurrent clients (threads, one
   keep-alive connection each) for `seconds` each: p50 and p99 latency in ms, requests per second, errors.
2. Batch-64 v1 requests from 1 client: examples per second, as a ratio of the same model's in-process scoring
   (components.scoring.score: the model loaded as data, the same raw batches) - the cost of HTTP and JSON;
   the two alternate in ROUNDS rounds, so that other work on the machine weighs on both alike.

Clients and server share the machine's cores, as they would on a one-node deployment with a sidecar. Times are
wall-clock; the load average before and after is recorded, since other work on the machine skews them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from benchmarks.project import REPO, copy_project, reproduce

BATCH = 64
ROUNDS = 5  # the batch-64 comparison alternates server and in-process this many times
SMALL = {"register": {"bootstrap_resamples": 100}}
QUICK_DIGITS = {"train": {"epochs": 2}, "augment": {"copies": 1}}
EXAMPLES = {  # kind: (params file, data folder, registered model name, extra params)
    "image": (REPO / "params.yaml", "digits", "digits-classifier", {}),
    "table": (REPO / "examples" / "penguins" / "params.yaml", "penguins", "penguins-classifier", {}),
    "text": (REPO / "examples" / "spam" / "params.yaml", "spam", "spam-classifier", {}),
}


def trained_project(root: Path, kind: str, quick: bool) -> dict:
    """A copy of this project on one example's params and data, after `dvc repro`: its environment."""
    params_file, data, _, changes = EXAMPLES[kind]
    env = copy_project(root, params_file, {**SMALL, **changes, **(QUICK_DIGITS if quick else {})})
    shutil.copytree(REPO / "data" / data, root / "data" / data)
    reproduce(root, env)
    return env


def examples(root: Path, kind: str, n: int) -> tuple[list, object]:
    """n examples of the kind's raw input: (as v1 instances, as the in-process scorer takes them)."""
    if kind == "image":
        from PIL import Image

        paths = sorted((root / "data" / "digits").rglob("*.png"))
        pixels = np.stack([np.asarray(Image.open(paths[i % len(paths)]).convert("L"))[..., None] for i in range(n)])
        return pixels.tolist(), pixels.astype(np.float32)
    if kind == "table":
        rows = pd.read_csv(root / "data" / "penguins" / "penguins.csv").drop(columns=["species"])
        rows = pd.concat([rows] * (n // len(rows) + 1)).head(n).reset_index(drop=True)
        return json.loads(rows.to_json(orient="records")), rows
    texts = pd.read_csv(root / "data" / "spam" / "messages.csv")
    joined = (texts["subject"].fillna("") + "\n\n" + texts["body"].fillna("")).tolist()
    chosen = [joined[i % len(joined)] for i in range(n)]
    return chosen, chosen


class Server:
    def __init__(self, root: Path, env: dict, model: str):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = port = sock.getsockname()[1]
        self.log = root / "serve.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "components.serve", "--model", f"models:/{model}@champion", "--port", str(port)],
            cwd=root,
            env={**env, "LOG_LEVEL": "WARNING"},
            stdout=open(self.log, "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/v2/health/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"server not ready:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        import signal

        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def load(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` threads posting bodies in turn for `seconds`: requests/s, p50/p99 ms, errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, i = [], offset
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "requests": len(latencies),
        "errors": errors[0],
        "seconds": round(elapsed, 3),
    }


class InProcess:
    """The same model loaded in this process (as data, as the server loads it), scoring raw batches."""

    def __init__(self, env: dict, model: str):
        from components import serve

        self.tmp = tempfile.TemporaryDirectory()
        # this process's MLflow reads the copy's store for the load, and leaves no URI behind for later benchmarks
        with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}):
            self.model = serve.load(f"models:/{model}@champion", Path(self.tmp.name))

    def examples_scored(self, batches: list, seconds: float) -> tuple[int, float]:
        """Score the batches in turn for `seconds`: (examples scored, seconds taken)."""
        from components.scoring import score

        m, scored, i = self.model, 0, 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            scored += len(score(m.net, m.config, m.meta, m.preprocessor, batches[i % len(batches)]))
            i += 1
        return scored, time.perf_counter() - start


def batch_ratio(server: Server, path: str, bodies: list[bytes], raw: list, env: dict, model: str, seconds: float):
    """Server and in-process examples per second on the same batches, measured in alternating rounds (so that
    other work on the machine weighs on both alike): (server rate, in-process rate, server errors)."""
    local = InProcess(env, model)
    local.examples_scored(raw, 1.0)  # warm up, as the server was by the single requests
    served = scored = errors = 0
    served_s = scored_s = 0.0
    for _ in range(ROUNDS):
        result = load(server.port, path, bodies, 1, seconds / ROUNDS)
        served, served_s, errors = (
            served + result["requests"] * BATCH,
            served_s + result["seconds"],
            errors + result["errors"],
        )
        n, took = local.examples_scored(raw, seconds / ROUNDS)
        scored, scored_s = scored + n, scored_s + took
    local.tmp.cleanup()
    return served / served_s, scored / scored_s, errors


def run(quick: bool = False) -> dict:
    seconds = 3.0 if quick else 30.0
    kinds = ["image"] if quick else list(EXAMPLES)
    results: dict = {"serve_load_average_before": round(os.getloadavg()[0], 2)}
    for kind in kinds:
        _, data, model, _ = EXAMPLES[kind]
        if not (REPO / "data" / data).is_dir():
            raise SystemExit(f"benchmarks: data/{data} is missing; run `make data` first")
        with tempfile.TemporaryDirectory(prefix=f"bench-serve-{kind}-") as tmp:
            root = Path(tmp)
            env = trained_project(root, kind, quick)
            path = f"/v1/models/{model}:predict"
            singles = [json.dumps({"instances": [x]}).encode() for x in examples(root, kind, 64)[0]]
            batches_v1, batches_raw = [], []
            for b in range(8):
                instances, raw = examples(root, kind, BATCH * (b + 1))
                batches_v1.append(json.dumps({"instances": instances[-BATCH:]}).encode())
                batches_raw.append(raw[-BATCH:] if not isinstance(raw, pd.DataFrame) else raw.iloc[-BATCH:])
            server = Server(root, env, model)
            try:
                one = load(server.port, path, singles, 1, seconds)
                sixteen = load(server.port, path, singles, 16, seconds)
                server_rate, in_process, batch_errors = batch_ratio(
                    server, path, batches_v1, batches_raw, env, model, seconds
                )
            finally:
                server.stop()
        results[f"serve_{kind}"] = {
            "model": model,
            "single_1_client": one,
            "single_16_clients": sixteen,
            "batch64_examples_per_s": round(server_rate, 1),
            "in_process_examples_per_s": round(in_process, 1),
            "batch64_errors": batch_errors,
        }
        results[f"serve_{kind}_batch64_ratio"] = round(server_rate / in_process, 3)
    results["serve_load_average_after"] = round(os.getloadavg()[0], 2)
    return results
