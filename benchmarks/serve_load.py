"""Online serving under load, in one run: throughput and p50 / p95 / p99 latency at concurrency 1, 8, 32, 64.

Systems, each a fresh server process on 127.0.0.1 serving the same model (ERNIE 3.0 Micro shape,
random weights: latency does not depend on them; exported to ONNX, fused fp32):
  dynamic    `zhcls serve` with cross-request dynamic batching (--max_batch_size 32, --max_delay_ms 2)
  batch1     the same server with --max_batch_size 1: one forward per request
  triton     `zhcls serve --engine triton`: Triton Inference Server through PyTriton, Triton's dynamic
             batcher with the same settings (needs an interpreter with nvidia-pytriton and numpy < 2:
             --triton_python; skipped, with the reason, when it cannot start)
Clients: one keep-alive HTTP/1.1 connection per concurrent user, each sending one real KUAKE-QIC dev
text per request, back to back, until --requests requests (or --seconds) per run. The client is a
minimal asyncio one, so that the servers, not the client, are what is measured; the same client
drives all three. Each server gets --threads (default 1) intra-op threads. All servers run at once
and are measured in turn, --rounds times per level; medians are reported. Besides wall-clock
throughput and latency, each run records the server's CPU time per request (its whole process tree),
which other people's load on a shared machine disturbs far less.

    python benchmarks/serve_load.py --out results/serve      # JSON rows and a throughput / p99 figure
    python benchmarks/serve_load.py --triton_python /path/to/venv-with-pytriton/bin/python
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))
CONCURRENCY = (1, 8, 32, 64)
TARGET_BATCHING, TARGET_TRITON = 4.0, 0.8  # dynamic >= 4x batch1 at 32; dynamic >= 0.8x triton


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read status and body (Content-Length)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants (Triton: tritonserver, its Python
    stub and PyTriton's proxy): on a shared machine this cost per request is steadier than wall time."""
    ticks, parents = os.sysconf("SC_CLK_TCK"), {}
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry))
            stats[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo += parents.get(p, [])
    return total


async def load_level(port: int, path: str, bodies: list[bytes], concurrency: int, requests: int,
                     seconds: float, server_pid: int) -> dict:
    """``concurrency`` users send back to back until ``requests`` are answered or ``seconds`` pass."""
    connections = [await Connection.open(port) for _ in range(concurrency)]
    latencies, errors, sent = [], 0, 0
    deadline = time.perf_counter() + seconds

    async def user(conn: Connection):
        nonlocal errors, sent
        while sent < requests and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            status, _ = await conn.post(path, body)
            latencies.append(time.perf_counter() - t0)
            errors += status != 200

    start, cpu = time.perf_counter(), tree_cpu_seconds(server_pid)
    await asyncio.gather(*(user(c) for c in connections))
    wall, cpu = time.perf_counter() - start, tree_cpu_seconds(server_pid) - cpu
    for c in connections:
        c.close()
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "server_cpu_ms_per_request": round(1000 * cpu / len(latencies), 3)}


def start_server(python: str, params: Path, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([python, "-m", "zhcls", "-q", "serve", "--params_path", str(params), "--port", str(port),
                             "--no_access_log", *extra], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(process: subprocess.Popen, port: int, path: str, timeout: float = 180) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in time")


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class System:
    """One server under test: its process, port, URL path and request bodies."""

    def __init__(self, name: str, python: str, params: Path, extra: list[str], texts: list[str], threads: int,
                 work: Path):
        self.name, self.port, self.log = name, free_port(), work / f"{name}.log"
        triton = "--engine" in extra
        # Triton's /v2/health/ready says yes before PyTriton has bound the model: ask for the model itself
        self.ready = f"/v2/models/{params.name}/ready" if triton else "/health/ready"
        if triton:
            self.path = f"/v2/models/{params.name}/infer"
            self.bodies = [json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [t]}]},
                                      ensure_ascii=False).encode() for t in texts]
        else:
            self.path = "/v1/classify"
            self.bodies = [json.dumps({"texts": [t]}, ensure_ascii=False).encode() for t in texts]
        self.process = start_server(python, params, self.port, ["--threads", str(threads), *extra], self.log)
        self.error, self.runs = None, {c: [] for c in CONCURRENCY}

    def wait(self) -> None:
        try:
            wait_ready(self.process, self.port, self.ready)
            self.load(8, 64, 30)  # warm-up: connections, allocator, shapes
        except RuntimeError as e:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            self.error = f"{e}: {' | '.join(tail)}"
            print(f"{self.name}: not measured ({self.error})", flush=True)

    def load(self, concurrency: int, requests: int, seconds: float) -> dict:
        return asyncio.run(load_level(self.port, self.path, self.bodies, concurrency, requests, seconds,
                                      self.process.pid))

    def row(self) -> dict:
        if self.error:
            return {"system": self.name, "skipped": self.error}
        levels = [{key: runs[0][key] if key == "concurrency" else float(np.median([r[key] for r in runs]))
                   for key in runs[0]} for runs in self.runs.values()]
        return {"system": self.name, "levels": levels, "rounds": self.runs, "exit_code": stop(self.process)}


def compute_ceiling(params: Path, texts: list[str], threads: int, n: int = 320) -> dict:
    """The most merging can save here, without HTTP: predict()'s CPU time per text, one text per call
    (what batch1 does) against merged calls of 32 texts in forwards of 8 (what dynamic does)."""
    from zhcls.inference.loading import load

    predictor = load(params, backend="onnx", device="cpu", batch_size=8, threads=threads)
    texts = texts[:n]
    predictor.predict(texts[:32])

    def cpu_ms(step: int) -> float:
        start = time.process_time()
        for i in range(0, len(texts), step):
            predictor.predict(texts[i:i + step])
        return 1000 * (time.process_time() - start) / len(texts)

    one, merged = cpu_ms(1), cpu_ms(32)
    return {"texts": len(texts), "cpu_ms_per_text_batch1": round(one, 3), "cpu_ms_per_text_merged32": round(merged, 3),
            "ratio": round(one / merged, 2)}


def main(argv=None) -> None:
    from zhcls.data import read_labels
    from zhcls.deploy.export import export
    from zhcls.evaluation.report_files import write_json
    from zhcls.models.checkpoint import save_checkpoint
    from zhcls.models.pretrained import load_pretrained

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per system, level and round")
    parser.add_argument("--seconds", type=float, default=10, help="time limit per system, level and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per level; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each server")
    parser.add_argument("--texts", type=int, default=1000, help="KUAKE-QIC dev texts to cycle through")
    parser.add_argument("--triton_python", default=sys.executable,
                        help="interpreter with nvidia-pytriton and numpy < 2 for the Triton server")
    parser.add_argument("--systems", default="dynamic,batch1,triton")
    parser.add_argument("--out", default=None, help="folder for serve_load.json and serve_load.png")
    args = parser.parse_args(argv)
    kuake, vocab = SHARED / "data" / "kuake_qic", SHARED / "vocab" / "ernie-3.0-zh" / "vocab.txt"
    lines = (kuake / "dev.txt").read_text(encoding="utf-8").splitlines()[:args.texts]
    texts = [line.rsplit("\t", 1)[0] for line in lines]
    systems = {"dynamic": (sys.executable, ["--max_batch_size", "32", "--max_delay_ms", "2"]),
               "batch1": (sys.executable, ["--max_batch_size", "1"]),
               "triton": (args.triton_python, ["--engine", "triton", "--max_batch_size", "32", "--max_delay_ms", "2"])}
    with tempfile.TemporaryDirectory(prefix="zhcls-serve-load-") as tmp:
        work = Path(tmp)
        model, tokenizer = load_pretrained("ernie-3.0-micro-zh", read_labels(kuake / "label.txt"), init_random=True,
                                           vocab_file=str(vocab))
        checkpoint = save_checkpoint(model, tokenizer, work / "checkpoint",
                                     {"task": "text", "problem_type": "multi_class", "max_seq_length": 128})
        params = work / "micro"
        export(checkpoint, params, threads=args.threads, progress=False)
        print(f"ERNIE 3.0 Micro shape (random weights), ONNX fused fp32, {args.threads} thread(s) per server, "
              f"{len(texts)} KUAKE-QIC dev texts, up to {args.requests} requests / {args.seconds:.0f} s per level", flush=True)
        ceiling = compute_ceiling(params, texts, args.threads)
        print(f"predict() alone, CPU per text: {ceiling['cpu_ms_per_text_batch1']} ms one by one, "
              f"{ceiling['cpu_ms_per_text_merged32']} ms merged by 32: at most {ceiling['ratio']}x from batching", flush=True)
        # All servers up at once, measured in turn, level by level and round by round: on a shared machine
        # the others' load then falls on every system alike.
        running = [System(name, systems[name][0], params, systems[name][1], texts, args.threads, work)
                   for name in args.systems.split(",")]
        try:
            for system in running:
                system.wait()
            for c in CONCURRENCY:
                for r in range(args.rounds):
                    for system in (s for s in running if not s.error):
                        run = system.load(c, args.requests, args.seconds)
                        system.runs[c].append(run)
                        print(f"{system.name:8} c={c:<3} round {r + 1}: {run['throughput_rps']:7.1f} req/s  "
                              f"p50 {run['p50_ms']:7.2f}  p95 {run['p95_ms']:7.2f}  p99 {run['p99_ms']:7.2f} ms  "
                              f"server CPU {run['server_cpu_ms_per_request']:5.2f} ms/request  errors {run['errors']}",
                              flush=True)
            rows = [system.row() for system in running]
        finally:
            for system in running:
                stop(system.process)
    summary = {**summarize(rows), "compute_only": ceiling}
    print(json.dumps(summary, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "serve_load.json", {"rows": rows, "summary": summary, "argv": sys.argv[1:]})
        plot(rows, out / "serve_load.png")
        print(f"wrote {out / 'serve_load.json'}, {out / 'serve_load.png'}")


def summarize(rows: list[dict]) -> dict:
    """Ratios measured in this run, per concurrency level, against the targets."""
    by = {r["system"]: {lv["concurrency"]: lv for lv in r["levels"]} for r in rows if "levels" in r}
    summary = {}
    for c in CONCURRENCY:
        entry = {}
        for peer in ("batch1", "triton"):
            if "dynamic" in by and peer in by:
                a, b = by["dynamic"][c], by[peer][c]
                entry[f"dynamic_vs_{peer}"] = round(a["throughput_rps"] / b["throughput_rps"], 2)
                # the same ratio in CPU cost per request (peer's / ours): steadier on a busy machine
                entry[f"dynamic_vs_{peer}_cpu"] = round(b["server_cpu_ms_per_request"] / a["server_cpu_ms_per_request"], 2)
        summary[f"c{c}"] = entry
    c32 = summary["c32"]
    summary["targets"] = {"dynamic >= 4x batch1 at c32": c32.get("dynamic_vs_batch1", 0) >= TARGET_BATCHING,
                          "dynamic within 20% of triton at c32 (or better)":
                          c32.get("dynamic_vs_triton", 0) >= TARGET_TRITON if "dynamic_vs_triton" in c32 else None}
    return summary


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("throughput_rps", "throughput (requests/s)"), ("p99_ms", "p99 latency (ms)"),
              ("server_cpu_ms_per_request", "server CPU per request (ms)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4))
    for r in rows:
        if "levels" not in r:
            continue
        c = [lv["concurrency"] for lv in r["levels"]]
        for ax, (key, _) in zip(axes, panels):
            ax.plot(c, [lv[key] for lv in r["levels"]], marker="o", label=r["system"])
    for ax, (_, title) in zip(axes, panels):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("zhcls serve, ERNIE 3.0 Micro shape, KUAKE-QIC dev texts, one text per request")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
