"""`zhcls serve`: real uvicorn servers on 127.0.0.1 (a free port each, always stopped), a tiny random
model over KUAKE-QIC's labels and real KUAKE-QIC dev texts. Answers must equal `zhcls.load().predict`
under concurrent load; limits, readiness, metrics, overload and SIGTERM behave as documented."""
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from helpers import free_port
from test_export import tiny_checkpoint
from zhcls.deploy.batcher import DynamicBatcher, QueueFull, Stopping
from zhcls.deploy.serve import create_app
from zhcls.deploy.serving import ServeConfig, load_predictor
from zhcls.deploy.triton import check_platform, server_environment
from zhcls.errors import ZhclsError
from zhcls.inference.loading import load

REPO_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@contextlib.contextmanager
def running(app, timeout: float = 60):
    """uvicorn serving ``app`` in a thread on a free port; yields the base URL once /health/live answers."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("server not ready in time")


@pytest.fixture(scope="module")
def checkpoint(shared, tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "kuake_tiny", shared, "bert")


@pytest.fixture(scope="module")
def texts(shared):
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()[:96]
    return [line.rsplit("\t", 1)[0] for line in lines]


@pytest.fixture(scope="module")
def reference(checkpoint, one_thread):
    return load(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def server(checkpoint, one_thread):
    """One server for the read-only tests: batching on, a long delay so that requests really merge."""
    cfg = ServeConfig(params_path=str(checkpoint), max_batch_size=16, max_delay_ms=20, max_texts_per_request=8,
                      max_request_bytes=4096, threads=1)
    with running(create_app(cfg)) as base:
        wait_ready(base)
        yield base


def same(results, expected):
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        assert set(got) == set(want)  # predict()'s dict passed through: nothing added, nothing dropped
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert [label for label, _ in got.get("topk", [])] == [label for label, _ in want.get("topk", [])]


def test_concurrent_answers_equal_predict(server, reference, texts):
    """64 clients at once, 1-3 texts each, topk 1 or 3: each gets exactly predict()'s answer for its texts,
    and the server did merge requests (batches above one text)."""
    requests = [(texts[i:i + 1 + i % 3], 1 + 2 * (i % 2)) for i in range(64)]

    async def burst():
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/classify", json={"texts": t, "topk": k}) for t, k in requests))

    responses = asyncio.run(burst())
    for (batch, k), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "kuake_tiny" and len(body["version"]) == 12
        same(body["results"], reference.predict(batch, topk=k))
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server}/metrics").text)}
    sizes = {s.labels["le"]: s.value for s in families["zhcls_batch_size"].samples if s.name.endswith("_bucket")}
    assert sizes["+Inf"] > sizes["1.0"], "no forward held more than one text: nothing was batched"
    assert sizes["+Inf"] < 64, "one forward per request: nothing was batched"


def test_pairs_and_simple_serving_format(server, reference, texts):
    """PaddleNLP SimpleServing's client body works unchanged; answers are class ids and confidences."""
    body = {"data": {"text": texts[:5]}, "parameters": {"max_seq_len": 128, "batch_size": 1}}
    r = httpx.post(f"{server}/models/kuake_tiny", json=body)
    assert r.status_code == 200, r.text
    expected = reference.predict(texts[:5])
    assert r.json()["result"]["label"] == [reference.labels.index(e["label"]) for e in expected]
    assert r.json()["result"]["confidence"] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert httpx.post(f"{server}/models/other", json=body).status_code == 404
    mismatch = {"data": {"text": texts[:2], "text_pair": texts[:1]}}
    assert httpx.post(f"{server}/models/kuake_tiny", json=mismatch).status_code == 422
    # Pairs on /v1/classify go through predict's pair path (this model is a single-text one, but predict
    # accepts pairs of any model: the answer must still be predict's).
    pairs = [[texts[0], texts[1]], [texts[2], texts[3]]]
    r = httpx.post(f"{server}/v1/classify", json={"texts": pairs})
    same(r.json()["results"], reference.predict([tuple(p) for p in pairs]))


def test_text_longer_than_max_seq_length_is_handled_as_predict_does(server, reference, texts):
    long_text = "".join(texts)[:400]  # far over the model's 64 tokens
    r = httpx.post(f"{server}/v1/classify", json={"texts": [long_text, texts[0]]})
    assert r.status_code == 200
    same(r.json()["results"], reference.predict([long_text, texts[0]]))


def test_limits_give_clear_json_errors(server):
    def post(**kwargs):
        r = httpx.post(f"{server}/v1/classify", **kwargs)
        assert r.headers["content-type"].startswith("application/json")
        return r.status_code, r.json()

    status, body = post(content=b'{"texts": ["' + "头".encode() * 2000 + b'"]}', headers={"content-type": "application/json"})
    assert status == 413 and "max_request_bytes" in body["error"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b" " * 1000
    assert post(content=chunks())[0] == 413
    status, body = post(json={"texts": ["头痛"] * 9})
    assert status == 413 and "max_texts_per_request" in body["error"]
    status, body = post(content=b'{"texts": ["a"', headers={"content-type": "application/json"})
    assert status == 422 and body["error"]
    status, body = post(json={"texts": ["头痛", " "]})
    assert status == 422 and "texts.1" in body["error"] and "empty" in body["error"]
    for bad in ({"texts": []}, {"texts": "头痛"}, {"texts": [3]}, {"texts": ["a"], "topk": 0}, {"texts": ["a"], "extra": 1},
                {"texts": [["a", "b", "c"]]}, {"texts": ["a", ["b", "c"]]}):
        assert post(json=bad)[0] == 422, bad


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.fixed_dictionaries({"texts": st.lists(st.one_of(st.text(max_size=40), st.lists(st.text(max_size=20), max_size=3)),
                                             max_size=10)},
                          optional={"topk": st.one_of(st.integers(-5, 2000), st.floats(allow_nan=True), st.text(max_size=3)),
                                    "extra": st.none()}),
    st.fixed_dictionaries({"data": st.fixed_dictionaries({"text": st.lists(st.text(max_size=30), max_size=5)},
                                                          optional={"text_pair": st.lists(st.text(max_size=30), max_size=5)}),
                           "parameters": st.dictionaries(st.sampled_from(["prob_limit", "max_seq_len", "batch_size"]),
                                                         st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3)))}),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                 max_leaves=10)),
       route=st.sampled_from(["/v1/classify", "/models/kuake_tiny"]))
def test_fuzzing_the_schema_gives_no_5xx(server, body, route):
    """Bodies shaped like the OpenAPI schema, and any JSON at all: never a 5xx; a 200 answers every text."""
    # json.dumps writes NaN / Infinity too: not JSON, and a fair thing to throw at a server
    r = httpx.post(server + route, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code < 500, (body, r.text)
    if r.status_code == 200:
        answer = r.json()
        n = len(body["texts"]) if route == "/v1/classify" else len(body["data"]["text"])
        assert len(answer["results"] if route == "/v1/classify" else answer["result"]["label"]) == n
    else:
        assert r.json()["error"]


def test_openapi_schema_and_docs(server):
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/classify", "/models/{model}", "/health/ready", "/metrics"} <= set(schema["paths"])
    assert "ClassifyRequest" in schema["components"]["schemas"]
    assert httpx.get(f"{server}/docs").status_code == 200


def test_metrics_parse_as_prometheus_text(server):
    httpx.post(f"{server}/v1/classify", json={"texts": ["头痛"]})
    httpx.post(f"{server}/v1/classify", json={"texts": [""]})
    r = httpx.get(f"{server}/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"zhcls_requests", "zhcls_queue_depth", "zhcls_batch_size", "zhcls_queue_seconds", "zhcls_compute_seconds",
            "zhcls_request_seconds", "zhcls_ready"} <= set(families)
    statuses = {(s.labels["route"], s.labels["status"]) for s in families["zhcls_requests"].samples
                if s.name == "zhcls_requests_total"}
    assert {("/v1/classify", "200"), ("/v1/classify", "422")} <= statuses
    assert [s.value for s in families["zhcls_ready"].samples] == [1.0]


def test_ready_only_after_load_and_warm_up(checkpoint):
    """/health/live answers at once; /health/ready (and classify) say 503 until the model is warmed up."""
    release, warmed = threading.Event(), []

    def slow_loader(cfg):
        assert release.wait(30)
        predictor = load_predictor(cfg)
        warmed.append(True)
        return predictor

    cfg = ServeConfig(params_path=str(checkpoint), threads=1)
    with running(create_app(cfg, loader=slow_loader)) as base:
        assert httpx.get(f"{base}/health/live").status_code == 200
        r = httpx.get(f"{base}/health/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        r = httpx.post(f"{base}/v1/classify", json={"texts": ["头痛"]})
        assert r.status_code == 503 and r.headers["retry-after"]
        release.set()
        wait_ready(base)
        assert warmed and httpx.post(f"{base}/v1/classify", json={"texts": ["头痛"]}).status_code == 200


def test_batcher_merges_bounds_and_separates(texts):
    """Unit level: merged up to max_batch_size, each caller gets its own slice, different predict options
    are never merged, the queue is bounded, a backend error reaches exactly its callers."""
    calls = []

    def predict(batch, topk=1):
        calls.append((len(batch), topk))
        if "boom" in batch:
            raise ZhclsError("backend failed")
        return [{"text": t, "topk": topk} for t in batch]

    async def scenario():
        batcher = DynamicBatcher(predict, max_batch_size=4, max_delay_ms=50, max_queue=6)
        await batcher.start()
        futures = [batcher.submit([t]) for t in texts[:5]] + [batcher.submit(texts[5:6], topk=2)]
        with pytest.raises(QueueFull):
            batcher.submit(["one too many"])
        results = await asyncio.gather(*futures)
        failing = batcher.submit(["boom"])
        with pytest.raises(ZhclsError):
            await failing
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert [r[0]["text"] for r in results] == texts[:6]
    assert results[5][0]["topk"] == 2
    assert calls[:3] == [(4, 1), (1, 1), (1, 2)]  # 4 merged; the 5th and the topk=2 one are called apart


def test_stop_answers_the_request_held_in_the_delay_window(texts):
    """A request the worker has taken and holds while it waits out max_delay (no longer queued, not yet
    computed) is answered by stop(), at once: stop() does not wait out the window, nor cancel it."""
    calls = []

    def predict(batch):
        calls.append(list(batch))
        return [{"text": t} for t in batch]

    async def scenario():
        batcher = DynamicBatcher(predict, max_batch_size=8, max_delay_ms=600_000, max_queue=4)
        await batcher.start()
        held = batcher.submit(texts[:2])
        while not batcher._queue.empty():  # the worker takes it and starts its ten-minute window
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        await batcher.stop(drain_timeout=60)
        with pytest.raises(Stopping):
            batcher.submit(texts[2:3])  # refused once stopping: 503, not queued
        return held.result()

    assert [r["text"] for r in asyncio.run(scenario())] == texts[:2]
    assert calls == [texts[:2]]


def test_stop_is_bounded_by_drain_timeout(texts):
    """A forward that never returns: stop() gives up after drain_timeout and every accepted request,
    computing or queued, fails with Stopping (the server's 503) instead of hanging."""
    release = threading.Event()

    def stuck(batch):
        release.wait(60)
        return [{} for _ in batch]

    async def scenario():
        batcher = DynamicBatcher(stuck, max_batch_size=1, max_delay_ms=0, max_queue=4)
        await batcher.start()
        futures = [batcher.submit([t]) for t in texts[:3]]
        while not batcher._computing:
            await asyncio.sleep(0.001)
        await batcher.stop(drain_timeout=0.2)
        return await asyncio.gather(*futures, return_exceptions=True)

    try:
        outcomes = asyncio.run(scenario())
    finally:
        release.set()
    assert all(isinstance(o, Stopping) for o in outcomes), outcomes
    assert "drain timeout" in str(outcomes[0])


def serve_process(checkpoint, port, *extra):
    env = {**os.environ, "PYTHONPATH": REPO_SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "zhcls", "-q", "serve", "--params_path", str(checkpoint), "--port",
                             str(port), "--threads", "1", "--no_access_log", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_burst_over_max_queue_then_sigterm(checkpoint, reference, texts):
    """A real `zhcls serve` process. A burst of 400 requests far above --max_queue 4: 429s with Retry-After,
    every accepted request correct, memory flat. Then SIGTERM while requests are in flight: they are all
    answered and the process exits 0."""
    port = free_port()
    process = serve_process(checkpoint, port, "--max_queue", "4", "--max_batch_size", "4", "--max_delay_ms", "300")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        requests = [texts[i % len(texts)] for i in range(400)]

        async def burst(batch):
            limits = httpx.Limits(max_connections=len(batch))
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
                return await asyncio.gather(*(client.post("/v1/classify", json={"texts": [t]}) for t in batch))

        asyncio.run(burst(requests[:8]))  # connections and allocator warmed, then the baseline
        before = rss_mb(process.pid)
        responses = asyncio.run(burst(requests))
        grown = rss_mb(process.pid) - before
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 429}, set(codes)
        assert codes.count(429) > 200 and codes.count(200) >= 4
        for text, r in zip(requests, responses):
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1 and "max_queue" in r.json()["error"]
            else:
                same(r.json()["results"], reference.predict([text]))
        assert grown < 40, f"RSS grew {grown:.0f} MB under the burst"

        async def in_flight_then_sigterm():
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                pending = [asyncio.create_task(client.post("/v1/classify", json={"texts": [t]})) for t in texts[:3]]
                await asyncio.sleep(0.15)  # sent, and waiting in the batcher's 300 ms window
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*pending)

        answered = asyncio.run(in_flight_then_sigterm())
        assert [r.status_code for r in answered] == [200, 200, 200]
        for text, r in zip(texts[:3], answered):
            same(r.json()["results"], reference.predict([text]))
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_errors_are_one_line(checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO_SRC}
    run = [sys.executable, "-m", "zhcls", "serve"]
    r = subprocess.run(run + ["--params_path", str(tmp_path / "nowhere")], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("zhcls: error:") and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(run + ["--params_path", str(checkpoint), "--max_queue", "0"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--max_queue" in r.stderr


def test_triton_engine_fails_in_one_line_or_runs_here():
    """Where PyTriton cannot run (no pytriton, numpy 2, old glibc): one ZhclsError line naming --engine triton."""
    try:
        check_platform()
    except ZhclsError as e:
        assert str(e).startswith("--engine triton") and "\n" not in str(e)
    else:
        import numpy
        import pytriton  # noqa: F401

        assert int(numpy.__version__.split(".")[0]) < 2


def test_triton_server_gets_this_interpreters_libpython_first():
    import sysconfig

    env = server_environment({"LD_LIBRARY_PATH": "/usr/lib/x86_64-linux-gnu:/opt/lib", "PATH": "/usr/bin"}, "/venv/bin/python")
    assert env["LD_LIBRARY_PATH"].split(":") == [sysconfig.get_config_var("LIBDIR"), "/usr/lib/x86_64-linux-gnu", "/opt/lib"]
    assert env["PATH"] == "/venv/bin:/usr/bin"  # the stub's embedded Python finds its packages by the python3 on PATH
    assert server_environment({})["LD_LIBRARY_PATH"] == sysconfig.get_config_var("LIBDIR")

