"""Load test of `unictr serve`: throughput and latency over real HTTP, next to `unictr predict`, plus a live add/remove.

Starts `unictr serve` as a subprocess on a free 127.0.0.1 port, on a copy of ``--home`` (the home itself is
never written), and in the same run:

1. scores the same rows the way `unictr predict` does at the same ``--precision`` / ``--quantize`` as the
   server (``workflows.serving_model``: LoRA merged, weights in that precision; then ``predict_samples``,
   batch 64; loading is not timed) as the reference (the server idle meanwhile);
2. sends exactly those rows to ``POST /v1/predict`` in requests of ``--rows-per-request`` rows from 1, 8 and
   32 concurrent clients (threads, one keep-alive connection each), and prints throughput, p50/p95/p99
   latency and the mean backbone batch the server formed (from its /metrics); steps 1 and 2 alternate
   ``--repeats`` times and the fastest round of each is reported (a shared CPU's speed drifts);
3. keeps ``--live-clients`` clients sending requests while another process runs `unictr domain add` and
   then `unictr domain remove` on the served home, and counts failed requests and how long after each
   command finished the server answered with the new state.

    python benchmarks/bench_serve.py --home HOME --rows ROWS.jsonl --add-data DATASET_DIR --add-domain board_games

``--precision`` (default: :data:`unictr_core.config.DEFAULT_PRECISION`, the default of `unictr predict`
and `unictr serve`) and ``--quantize`` apply to both sides, so the comparison is at equal precision.

Every process runs ``--threads`` torch threads (default 1). Bounded: each level sends the rows once; the
live phase ends when the remove has been picked up or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unictr_core.config import DEFAULT_PRECISION, PRECISIONS, QUANTIZE  # noqa: E402 - after the path setup

ZERO_SHOT = "general (zero-shot)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        data = json.dumps(body).encode()
        try:
            self.conn.request("POST", path, data, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 0, {"error": f"{type(exc).__name__}: {exc}"}

    def get(self, path: str) -> tuple[int, str]:
        try:
            self.conn.request("GET", path)
            response = self.conn.getresponse()
            return response.status, response.read().decode()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 0, str(exc)


def batch_counts(port: int) -> tuple[float, float]:
    """(sum, count) of the server's backbone batch-size histogram (a new connection: an idle one may be closed)."""
    _, text = Client(port).get("/metrics")
    values = {}
    for line in text.splitlines():
        if line.startswith(("unictr_batch_size_rows_sum", "unictr_batch_size_rows_count")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("unictr_batch_size_rows_sum", 0.0), values.get("unictr_batch_size_rows_count", 0.0)


def run_level(port: int, requests: list[list[dict]], clients: int) -> dict:
    """Send every request once from ``clients`` concurrent clients; latency per request, rows/s overall."""
    work: "queue.Queue[list[dict]]" = queue.Queue()
    for request in requests:
        work.put(request)
    latencies, failures, lock = [], [], threading.Lock()

    def worker():
        client = Client(port)
        while True:
            try:
                rows = work.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            status, answer = client.post("/v1/predict", {"samples": rows})
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if status != 200 or len(answer.get("predictions", [])) != len(rows):
                    failures.append(f"{status}: {answer.get('error')}")

    before = batch_counts(port)
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    after = batch_counts(port)
    rows = sum(len(r) for r in requests)
    lat = np.array(latencies) * 1000
    return {"clients": clients, "rows": rows, "requests": len(requests), "seconds": seconds,
            "rows_per_s": rows / seconds, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
            "failed": len(failures), "failures": failures[:5],
            "mean_batch_rows": (after[0] - before[0]) / max(after[1] - before[1], 1)}


def reference_predict(home: Path, samples, precision: str, quantize: str, batch_size: int = 64) -> dict:
    """What `unictr predict` does after loading, at ``precision`` / ``quantize``: predict_samples over all
    rows, batch 64."""
    from unictr_core.modeling.predict import predict_samples
    from unictr_core.workflows import serving_model

    model, _ = serving_model(home, sorted({s.domain for s in samples}), precision, quantize)
    predict_samples(model, samples[:8], batch_size)  # warm-up, untimed
    started = time.perf_counter()
    predict_samples(model, samples, batch_size)
    seconds = time.perf_counter() - started
    return {"rows": len(samples), "seconds": seconds, "rows_per_s": len(samples) / seconds}


def unictr(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unictr_cli.main", *args], env=env, capture_output=True, text=True)


class LiveState:
    """What the threads of the live phase share: the stop signal, request counts and failures, when each
    event was seen, and which command runs (``phase``: add, then remove)."""

    def __init__(self):
        self.stop = threading.Event()
        self.counts = {"requests": 0, "failed": 0}
        self.failures, self.lock = [], threading.Lock()
        self.events: dict[str, Optional[float]] = {"dsn": None, "zero_shot_again": None, "added": None,
                                                   "removed": None}
        self.phase = "add"


def load_worker(port: int, requests: list[list[dict]], clients: int, offset: int, state: LiveState) -> None:
    """One of ``clients`` clients: requests ``offset``, ``offset + clients``, ... (round and round) until stopped."""
    client = Client(port)
    i = offset
    while not state.stop.is_set():
        rows = requests[i % len(requests)]
        i += clients
        status, answer = client.post("/v1/predict", {"samples": rows})
        with state.lock:
            state.counts["requests"] += 1
            if status != 200 or len(answer.get("predictions", [])) != len(rows):
                state.counts["failed"] += 1
                state.failures.append(f"{status}: {answer.get('error')}")


def prober(port: int, probe_row: dict, state: LiveState) -> None:
    """Scores ``probe_row`` (a row of the added domain) again and again: when the DSN answers it after the add,
    and the general network again after the remove."""
    client = Client(port)
    while not state.stop.is_set():
        status, answer = client.post("/v1/predict", {"samples": [probe_row]})
        now = time.monotonic()
        with state.lock:
            state.counts["requests"] += 1
            if status != 200:
                state.counts["failed"] += 1
                state.failures.append(f"{status}: {answer.get('error')}")
                continue
        by = answer["predictions"][0]["predicted_by"]
        if state.phase == "add" and by == "dsn" and state.events["dsn"] is None:
            state.events["dsn"] = now
        if state.phase == "remove" and by == ZERO_SHOT and state.events["zero_shot_again"] is None:
            state.events["zero_shot_again"] = now
        time.sleep(0.02)


def generations(port: int, state: LiveState) -> None:
    """When the server swapped in the state with the new domain, and the one without it (GET /readyz)."""
    client = Client(port)
    first = json.loads(client.get("/readyz")[1])["generation"]
    while not state.stop.is_set():
        status, text = client.get("/readyz")
        now = time.monotonic()
        if status == 200:
            generation = json.loads(text)["generation"]
            for key, step in (("added", 1), ("removed", 2)):
                if generation >= first + step and state.events[key] is None:
                    state.events[key] = now
        time.sleep(0.02)


def add_then_remove(home: Path, domain: str, add_args: list[str], env: dict, max_seconds: float, state: LiveState,
                    started: float) -> tuple[float, float]:
    """Run `domain add`, wait for the DSN to answer, run `domain remove`, wait for zero-shot again (each wait at
    most until ``max_seconds`` after ``started``); returns when each command finished."""
    add = unictr("domain", "add", domain, "--home", str(home), *add_args, env=env)
    add_done = time.monotonic()
    if add.returncode != 0:
        raise RuntimeError(f"`unictr domain add` failed: {add.stderr.strip()[-500:]}")
    while state.events["dsn"] is None and time.monotonic() - started < max_seconds:
        time.sleep(0.02)
    state.phase = "remove"
    remove = unictr("domain", "remove", domain, "--home", str(home), "--yes", env=env)
    remove_done = time.monotonic()
    if remove.returncode != 0:
        raise RuntimeError(f"`unictr domain remove` failed: {remove.stderr.strip()[-500:]}")
    while state.events["zero_shot_again"] is None and time.monotonic() - started < max_seconds:
        time.sleep(0.02)
    return add_done, remove_done


def live_phase(port: int, home: Path, requests: list[list[dict]], clients: int, domain: str, add_args: list[str],
               env: dict, max_seconds: float) -> dict:
    """Load from ``clients`` clients while `domain add` then `domain remove` run in other processes."""
    state = LiveState()
    probe_row = dict(requests[0][0], domain=domain)
    threads = [threading.Thread(target=load_worker, args=(port, requests, clients, k, state)) for k in range(clients)]
    threads += [threading.Thread(target=prober, args=(port, probe_row, state)),
                threading.Thread(target=generations, args=(port, state))]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        add_done, remove_done = add_then_remove(home, domain, add_args, env, max_seconds, state, started)
    finally:
        state.stop.set()
        for t in threads:
            t.join()
    events = state.events

    def since(event: Optional[float], done: float) -> Optional[float]:
        return None if event is None else event - done

    return {"clients": clients, "seconds": time.monotonic() - started, "requests": state.counts["requests"],
            "failed": state.counts["failed"], "failures": state.failures[:5], "add_seconds": add_done - started,
            "dsn_after_add_s": since(events["dsn"], add_done),
            "zero_shot_after_remove_s": since(events["zero_shot_again"], remove_done),
            "swapped_after_add_s": since(events["added"], add_done),
            "swapped_after_remove_s": since(events["removed"], remove_done)}


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    client = Client(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        if client.get("/readyz")[0] == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready after {timeout} s")


def fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a trained home (copied; never written)")
    parser.add_argument("--rows", type=Path, required=True, help="samples to score (.jsonl/.csv)")
    parser.add_argument("--max-rows", type=int, default=512, help="use the first N rows")
    parser.add_argument("--rows-per-request", type=int, default=4)
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of predict and the serving "
                        "levels; the fastest round of each is reported (the CPU may be shared)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--add-domain", default=None, help="domain to add and remove during the live phase "
                        "(default: no live phase)")
    parser.add_argument("--add-data", type=Path, default=None, help="its rows (a dataset folder or a file)")
    parser.add_argument("--add-args", default="--max-rows 40 --epochs 1", help="more `domain add` options")
    parser.add_argument("--live-clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=300, help="upper bound of the live phase")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help="of the server and of the predict reference (default: the one default)")
    parser.add_argument("--quantize", default="none", choices=QUANTIZE)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser


def start_server(home: Path, port: int, args: argparse.Namespace, env: dict, log: Path) -> subprocess.Popen:
    """`unictr serve` on ``home`` at ``port``, its stderr into ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "unictr_cli.main", "serve", "--home", str(home), "--port", str(port),
         "--threads", str(args.threads), "--max-batch-size", str(args.max_batch_size), "--max-wait-ms",
         str(args.max_wait_ms), "--poll-interval", "0.2", "--log-level", "warning", "--precision",
         args.precision, "--quantize", args.quantize],
        env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def measure(port: int, home: Path, samples, requests: list[list[dict]], args: argparse.Namespace, env: dict,
            parser: argparse.ArgumentParser) -> dict:
    """Against the running server: the alternating rounds of the predict reference and the serving levels, then
    the live phase (with ``--add-domain``)."""
    run_level(port, requests[:4], 1)  # warm-up, untimed
    references, runs = [], []
    for _ in range(args.repeats):  # alternating, so both modes see the same drift of a shared CPU
        references.append(reference_predict(home, samples, args.precision, args.quantize))  # server idles
        runs.append([run_level(port, requests, int(c)) for c in args.clients.split(",")])
    reference = max(references, key=lambda r: r["rows_per_s"])
    levels = [max(same, key=lambda lv: lv["rows_per_s"]) for same in zip(*runs)]
    live = None
    if args.add_domain is not None:
        if args.add_data is None:
            parser.error("--add-domain needs --add-data")
        live = live_phase(port, home, requests, args.live_clients, args.add_domain,
                          ["--data", str(args.add_data), *args.add_args.split()], env, args.max_seconds)
    return {"references": references, "runs": runs, "reference": reference, "levels": levels, "live": live}


def print_throughput(args: argparse.Namespace, samples, measured: dict) -> None:
    """The settings, every round's rows/s, and the table of predict against each serving level."""
    from unictr_core.fit.report import format_table

    references, runs, reference, levels = (measured[key] for key in ("references", "runs", "reference", "levels"))
    print(f"precision {args.precision}, quantize {args.quantize} (server and predict alike); "
          f"{len(samples)} rows, {args.rows_per_request} rows per request, {args.threads} torch thread(s) per process, "
          f"max batch {args.max_batch_size}, max wait {args.max_wait_ms:g} ms; {platform.machine()}, "
          f"{os.cpu_count()} CPUs (shared: clients, server and other jobs run on the same cores)")
    rounds = {"predict": [r["rows_per_s"] for r in references]}
    rounds.update({f"{lv['clients']} client(s)": [run[i]["rows_per_s"] for run in runs] for i, lv in enumerate(levels)})
    print(f"best of {args.repeats} alternating rounds per mode; rows/s of every round: "
          + "; ".join(f"{mode} " + ", ".join(f"{v:.1f}" for v in values) for mode, values in rounds.items()))
    rows = [[f"unictr predict (batch 64, {args.precision})", "-", reference["rows"], "-",
             round(reference["seconds"], 2), round(reference["rows_per_s"], 1), "100%", "-", "-", "-", "-", "-"]]
    for lv in levels:
        rows.append([f"unictr serve, {lv['clients']} client(s)", lv["clients"], lv["rows"], lv["requests"],
                     round(lv["seconds"], 2), round(lv["rows_per_s"], 1),
                     f"{100 * lv['rows_per_s'] / reference['rows_per_s']:.0f}%", round(lv["p50_ms"], 1),
                     round(lv["p95_ms"], 1), round(lv["p99_ms"], 1), round(lv["mean_batch_rows"], 1), lv["failed"]])
    print(format_table(["mode", "clients", "rows", "requests", "seconds", "rows/s", "vs predict", "p50 ms",
                        "p95 ms", "p99 ms", "mean batch", "failed"], rows))


def print_live(args: argparse.Namespace, live: dict) -> None:
    """The live add / remove: requests, failures, and how soon the server answered with each new state."""
    from unictr_core.fit.report import format_table

    print(f"live add/remove of '{args.add_domain}' under load from {live['clients']} clients "
          f"(+1 probe client): {live['requests']} requests in {live['seconds']:.1f} s, "
          f"{live['failed']} failed; `domain add` took {live['add_seconds']:.1f} s")
    print(format_table(
        ["after the command exited", "new state served (/readyz)", "first answer by the new state"],
        [[f"domain add {args.add_domain}", fmt(live["swapped_after_add_s"]), fmt(live["dsn_after_add_s"])],
         [f"domain remove {args.add_domain}", fmt(live["swapped_after_remove_s"]),
          fmt(live["zero_shot_after_remove_s"])]]))
    print("seconds; negative: before the command's process had exited. The first answer includes the wait "
          "behind requests queued earlier (which finish on the old state).")


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from unictr_core.data.data_io import read_samples
    from unictr_core.fit.report import write_json

    samples = read_samples(args.rows)[: args.max_rows]
    payload = [s.to_dict() for s in samples]
    k = args.rows_per_request
    requests = [payload[i:i + k] for i in range(0, len(payload), k)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="unictr-bench-serve-") as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(args.home, home)
        port = free_port()
        server = start_server(home, port, args, env, Path(tmp) / "server.log")
        try:
            wait_ready(port, server)
            measured = measure(port, home, samples, requests, args, env, parser)
        finally:
            server.terminate()
            server.wait(timeout=60)
            log_text = (Path(tmp) / "server.log").read_text()
    print_throughput(args, samples, measured)
    live = measured["live"]
    if live is not None:
        print_live(args, live)
    for lv in [*measured["levels"], *([live] if live else [])]:
        for failure in lv["failures"]:
            print(f"failure: {failure}")
    if "Traceback" in log_text:
        print("server log has a traceback:\n" + log_text[-3000:])
    report = {"rows": len(samples), "rows_per_request": k, "threads": args.threads, "precision": args.precision,
              "quantize": args.quantize, "reference": measured["reference"], "levels": measured["levels"],
              "live": live, "rounds": {"predict": measured["references"], "serve": measured["runs"]}}
    if args.out is not None:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
