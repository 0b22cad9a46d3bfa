"""`zhcls serve` never loses or stalls a request, and one request cannot make unbounded work: real uvicorn
servers on 127.0.0.1 (always stopped), a tiny random model over KUAKE-QIC's labels. A slow backend is
the real predictor whose forwards wait on a gate the test opens: no sleeps, no timing races."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import free_port
from test_export import tiny_checkpoint
from test_serve import REPO_SRC, running, same, serve_process, wait_ready
from zhcls.deploy.serve import create_app
from zhcls.deploy.serving import ServeConfig, load_predictor
from zhcls.inference.loading import load


@pytest.fixture(scope="module")
def checkpoint(shared, tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("limits") / "kuake_tiny", shared, "bert")


@pytest.fixture(scope="module")
def sliding(checkpoint, tmp_path_factory):
    """The same model with the sliding long-text policy stored (64 tokens: windows of 62, every 31)."""
    path = tmp_path_factory.mktemp("sliding") / "kuake_sliding"
    shutil.copytree(checkpoint, path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config["zhcls"]["long_text"] = {"policy": "sliding", "stride": 0, "pooling": "mean"}
    (path / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def texts(shared):
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()[:400]
    return [line.rsplit("\t", 1)[0] for line in lines]


class Gated:
    """The real predictor, whose forwards wait until ``gate`` is set: a backend as slow as the test wants."""

    def __init__(self, predictor):
        self.predictor, self.gate, self.computed = predictor, threading.Event(), []

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def predict(self, texts, **options):
        self.computed.append(list(texts))
        assert self.gate.wait(60), "the test never opened the gate"
        return self.predictor.predict(texts, **options)


def gated_app(cfg: ServeConfig):
    holder = {}

    def loader(c):
        holder["predictor"] = Gated(load_predictor(c))
        return holder["predictor"]

    return create_app(cfg, loader=loader), holder


def metric(base: str, name: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)}
    return families[name].samples[0].value


def until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}"
        time.sleep(0.01)


def post_raw(port: int, body: bytes, *, declared: int | None = None, send: int | None = None) -> socket.socket:
    """A POST /v1/classify over a raw socket: Content-Length ``declared`` (default: the body's), and only
    the first ``send`` bytes of the body sent (default: all). The socket is returned unread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if declared is None else declared}\r\n\r\n").encode()
    sock.sendall(head + body[:send])
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the one response on ``sock`` (a timeout fails the test: no answer came)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body[:length])


def test_deadline_answers_504_and_drops_the_queued_work(checkpoint, texts):
    """--timeout: a request still computing, and one still queued, both get a 504 JSON body in time; the
    queued one is dropped (never computed), and the server answers the next request normally."""
    cfg = ServeConfig(params_path=str(checkpoint), max_batch_size=1, max_delay_ms=0, timeout=0.5, threads=1)
    app, holder = gated_app(cfg)
    reference = load(checkpoint, device="cpu")
    with running(app) as base:
        wait_ready(base)
        gated = holder["predictor"]
        try:
            async def scenario():
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    computing = asyncio.create_task(client.post("/v1/classify", json={"texts": texts[:1]}))
                    while not gated.computed:  # the first one is in its forward, which waits on the gate
                        await asyncio.sleep(0.01)
                    queued = await client.post("/v1/classify", json={"texts": texts[1:2]})
                    return await computing, queued

            first, second = asyncio.run(scenario())
            for r in (first, second):
                assert r.status_code == 504, r.text
                assert "--timeout 0.5" in r.json()["error"] and r.json()["status"] == 504
        finally:
            gated.gate.set()
        after = httpx.post(f"{base}/v1/classify", json={"texts": texts[2:3]}, timeout=30)
        assert after.status_code == 200
        same(after.json()["results"], reference.predict(texts[2:3]))
        assert gated.computed == [texts[:1], texts[2:3]], "the queued request that timed out was computed"


def test_a_client_that_disconnects_frees_its_slot(checkpoint, texts):
    """--max_queue 1, the forward busy: a queued client hangs up; its slot is freed (the next request is
    accepted, not 429) and its texts are never computed."""
    cfg = ServeConfig(params_path=str(checkpoint), max_batch_size=1, max_delay_ms=0, max_queue=1, threads=1)
    app, holder = gated_app(cfg)
    reference = load(checkpoint, device="cpu")
    with running(app) as base:
        wait_ready(base)
        gated, port = holder["predictor"], int(base.rsplit(":", 1)[1])
        try:
            async def scenario():
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    computing = asyncio.create_task(client.post("/v1/classify", json={"texts": texts[:1]}))
                    while not gated.computed:
                        await asyncio.sleep(0.01)
                    quitter = post_raw(port, json.dumps({"texts": texts[1:2]}).encode())
                    await asyncio.to_thread(until, lambda: metric(base, "zhcls_queue_depth") == 1, "queued")
                    full = await client.post("/v1/classify", json={"texts": texts[3:4]})
                    quitter.close()
                    await asyncio.to_thread(until, lambda: metric(base, "zhcls_queue_depth") == 0, "slot freed")
                    accepted = asyncio.create_task(client.post("/v1/classify", json={"texts": texts[2:3]}))
                    await asyncio.to_thread(until, lambda: metric(base, "zhcls_queue_depth") == 1, "accepted")
                    gated.gate.set()
                    return full, await computing, await accepted

            full, first, third = asyncio.run(scenario())
        finally:
            gated.gate.set()
        assert full.status_code == 429  # the queue really was full while the quitter waited
        assert first.status_code == 200 and third.status_code == 200, third.text
        same(third.json()["results"], reference.predict(texts[2:3]))
        assert gated.computed == [texts[:1], texts[2:3]], "the disconnected client's texts were computed"


def test_token_limit_holds_without_sliding_windows(checkpoint, texts):
    """A truncate checkpoint: texts are cut to 64 tokens, so 2 long texts are 128 tokens: over a limit of 100."""
    cfg = ServeConfig(params_path=str(checkpoint), max_tokens_per_request=100, threads=1)
    with running(create_app(cfg)) as base:
        wait_ready(base)
        long_text = "".join(texts[:10])
        r = httpx.post(f"{base}/v1/classify", json={"texts": [long_text, long_text]}, timeout=60)
        assert r.status_code == 413 and "128 tokens" in r.json()["error"], r.text
        assert httpx.post(f"{base}/v1/classify", json={"texts": [long_text]}, timeout=60).status_code == 200


def test_work_per_request_is_bounded(sliding, texts):
    """A sliding checkpoint: a text needing more windows than --max_windows_per_text, or texts making more
    tokens than --max_tokens_per_request, get 413 with the limit named, and nothing is computed; a 1 MiB
    text is refused the same way; what fits is answered as predict() answers it."""
    cfg = ServeConfig(params_path=str(sliding), max_windows_per_text=8, max_tokens_per_request=1000,
                      max_request_bytes=4 << 20, threads=1)
    reference = load(sliding, device="cpu")
    long_text = "".join(texts)  # thousands of tokens: far more than 8 windows of 62
    three = next(t for t in (long_text[:n] for n in range(60, 400, 5)) if reference.workload([t])[0][0] == 3)
    huge = ("头痛" * (1 << 19))[: (1 << 20) // 3]  # 1 MiB of UTF-8
    assert reference.workload([long_text])[0][0] > 8 and reference.workload(texts[:1])[0] == [1]
    with running(create_app(cfg)) as base:
        wait_ready(base)
        computed = metric(base, "zhcls_compute_seconds")
        for body in ([long_text], [huge], [texts[0], huge]):
            r = httpx.post(f"{base}/v1/classify", json={"texts": body}, timeout=60)
            assert r.status_code == 413 and "--max_windows_per_text 8" in r.json()["error"], r.text
        r = httpx.post(f"{base}/v1/classify", json={"texts": [three] * 6}, timeout=60)  # 6 x 3 x 64 tokens
        assert r.status_code == 413 and "--max_tokens_per_request 1000" in r.json()["error"], r.text
        assert "1152 tokens" in r.json()["error"]
        assert metric(base, "zhcls_compute_seconds") == computed, "a refused request was computed"
        r = httpx.post(f"{base}/v1/classify", json={"texts": [three, texts[0]]}, timeout=60)
        assert r.status_code == 200, r.text
        same(r.json()["results"], reference.predict([three, texts[0]]))


@pytest.mark.parametrize("stride", [0, 1, 7, 31, 62])
def test_workload_counts_what_predict_computes(sliding, texts, stride):
    """The limits are checked on workload(): it must count exactly the inputs predict() makes."""
    from zhcls.data.long_text import LongText

    predictor = load(sliding, device="cpu")
    predictor.long_text = LongText("sliding", stride)
    batch = [texts[0], "".join(texts[:3]), "".join(texts[:9]), "".join(texts)[:777]]
    windows, tokens = predictor.workload(batch)
    enc, owner = predictor.tokenizer.encode_long(batch, predictor.max_seq_length, predictor.long_text)
    assert windows == list(np.bincount(owner, minlength=len(batch)))
    assert tokens == sum(len(ids) for ids in enc.input_ids)
    pairs = [(texts[0], texts[1]), ("".join(texts), texts[2])]
    enc = predictor.tokenizer.encode([a for a, _ in pairs], [b for _, b in pairs], predictor.max_seq_length)
    assert predictor.workload(pairs) == ([1, 1], sum(len(ids) for ids in enc.input_ids))


def test_stride_is_validated_in_one_line(checkpoint, sliding, shared, texts, tmp_path):
    """--stride negative or longer than a window: one line, exit 2, nothing written, in train, evaluate,
    predict and serve (serve checks the stride stored in the checkpoint). 0 means half a window."""
    env = {**os.environ, "PYTHONPATH": REPO_SRC}
    kuake = shared / "data" / "kuake_qic"

    def zhcls(*args):
        return subprocess.run([sys.executable, "-m", "zhcls", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    bad_stored = tmp_path / "bad_stride"
    shutil.copytree(sliding, bad_stored)
    config = json.loads((bad_stored / "config.json").read_text(encoding="utf-8"))
    config["zhcls"]["long_text"]["stride"] = 100  # > 62, the window of a 64-token model
    (bad_stored / "config.json").write_text(json.dumps(config), encoding="utf-8")
    runs = {
        "train -1": zhcls("train", "--dataset_dir", str(kuake), "--save_dir", str(tmp_path / "run0"),
                          "--long_text", "sliding", "--stride", "-1"),
        "train 200": zhcls("train", "--dataset_dir", str(kuake), "--save_dir", str(tmp_path / "run1"),
                           "--long_text", "sliding", "--stride", "200", "--max_seq_length", "64"),
        "evaluate -3": zhcls("evaluate", "--params_path", str(checkpoint), "--dataset_dir", str(kuake),
                             "--long_text", "sliding", "--stride", "-3", "--output_dir", str(tmp_path / "eval")),
        "predict 63": zhcls("predict", "--params_path", str(sliding), "--dataset_dir", str(kuake), "--data_file",
                            "dev.txt", "--stride", "63", "--output_file", str(tmp_path / "out.txt")),
        "serve stored 100": zhcls("serve", "--params_path", str(bad_stored), "--port", str(free_port())),
    }
    for name, r in runs.items():
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr.startswith("zhcls: error: --stride") and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
    assert not any((tmp_path / p).exists() for p in ("run0", "run1", "eval", "out.txt"))
    # A stride of a whole window tiles the text: allowed, it skips nothing.
    (tmp_path / "data.txt").write_text("".join(texts[:40]) + "\n" + texts[0] + "\n", encoding="utf-8")
    r = zhcls("predict", "--params_path", str(sliding), "--dataset_dir", str(tmp_path), "--data_file", "data.txt",
              "--stride", "62", "--output_file", str(tmp_path / "tiled.txt"))
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "tiled.txt").read_text(encoding="utf-8").splitlines()) == 3


def test_refused_before_the_body_is_read(checkpoint, texts):
    """A full queue answers 429, and a too-large Content-Length 413, after only part of the body was sent:
    the server never waits for (or holds) a body it refuses."""
    cfg = ServeConfig(params_path=str(checkpoint), max_batch_size=1, max_delay_ms=0, max_queue=1, threads=1,
                      max_request_bytes=1 << 20)
    app, holder = gated_app(cfg)
    with running(app) as base:
        wait_ready(base)
        gated, port = holder["predictor"], int(base.rsplit(":", 1)[1])
        body = json.dumps({"texts": ["头痛" * 1000] * 60}).encode()  # 360 kB: under the limit
        try:
            over = post_raw(port, body, declared=5 << 20, send=1024)
            assert read_response(over)[0] == 413
            over.close()
            busy = [post_raw(port, json.dumps({"texts": texts[:1]}).encode())]
            until(lambda: gated.computed, "one computing")
            busy.append(post_raw(port, json.dumps({"texts": texts[1:2]}).encode()))
            until(lambda: metric(base, "zhcls_queue_depth") == 1, "one queued")
            partial = post_raw(port, body, send=1024)
            status, answer = read_response(partial)
            assert status == 429 and "--max_queue 1" in answer["error"]
            partial.close()
        finally:
            gated.gate.set()
        assert [read_response(s)[0] for s in busy] == [200, 200]
        for s in busy:
            s.close()


def peak_rss_reset(pid: int) -> None:
    """Start a new peak-RSS measurement for ``pid`` (writing 5 to clear_refs resets VmHWM)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_memory_stays_bounded_under_a_burst_of_large_bodies(checkpoint, texts):
    """A real `zhcls serve` process, --max_request_bytes 8 MiB, the queue held full (a batch waits out a
    long --max_delay_ms). 20 clients at once each start a 5 MiB body (429 by the queue, before it is read)
    and 10 more a 20 MiB one (413 by Content-Length); every client then sends its whole body anyway.
    300 MiB offered: the server's peak RSS grows by less than 32 MiB. --max_connections is enforced
    (503 above it). SIGTERM then answers the held batch at once, and the process exits 0."""
    port = free_port()
    process = serve_process(checkpoint, port, "--max_queue", "2", "--max_batch_size", "8", "--max_delay_ms", "600000",
                            "--max_request_bytes", str(8 << 20), "--max_connections", "40", "--drain_timeout", "60")
    base = f"http://127.0.0.1:{port}"
    sockets = []
    try:
        wait_ready(base)
        # Warm before measuring: 8 texts fill a batch, so it does not wait out the window.
        assert httpx.post(f"{base}/v1/classify", json={"texts": texts[:8]}, timeout=30).status_code == 200
        held = [post_raw(port, json.dumps({"texts": texts[i:i + 1]}).encode()) for i in range(2)]
        until(lambda: metric(base, "zhcls_queue_depth") == 2, "the queue held full")
        peak_rss_reset(process.pid)
        before = peak_rss_mb(process.pid)
        large = json.dumps({"texts": ["头痛发热" * 1000] * 400}).encode()[: 5 << 20]
        sockets = [post_raw(port, large, send=65536) for _ in range(20)]
        sockets += [post_raw(port, large, declared=20 << 20, send=65536) for _ in range(10)]
        answers = [read_response(s) for s in sockets]
        assert [status for status, _ in answers] == [429] * 20 + [413] * 10
        assert "--max_queue 2" in answers[0][1]["error"] and "--max_request_bytes" in answers[-1][1]["error"]

        def push(s, size):  # the rest of the body, as a client that ignores the answer would
            sent = 65536
            try:
                while sent < size:
                    s.sendall(large[:min(1 << 20, size - sent)])
                    sent += 1 << 20
            except OSError:  # the server closed the connection: fine
                pass

        pushers = [threading.Thread(target=push, args=(s, 5 << 20 if i < 20 else 20 << 20))
                   for i, s in enumerate(sockets)]
        for t in pushers:
            t.start()
        for t in pushers:
            t.join(60)
        grown = peak_rss_mb(process.pid) - before
        assert grown < 32, f"peak RSS grew {grown:.0f} MB under a burst of 300 MB of bodies"
        for s in sockets:
            s.close()
        # --max_connections 40: 40 idle connections, and the next request gets uvicorn's 503.
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(40)]
        until(lambda: httpx.get(f"{base}/health/live").status_code == 503, "503 above --max_connections")
        for s in sockets:
            s.close()
        until(lambda: httpx.get(f"{base}/health/live").status_code == 200, "connections released")
        process.send_signal(signal.SIGTERM)
        assert [read_response(s)[0] for s in held] == [200, 200]  # not after the 10-minute window
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        for s in sockets:
            s.close()
        if process.poll() is None:
            process.kill()
            process.wait()
