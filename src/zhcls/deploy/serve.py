"""`zhcls serve`: a classifier behind HTTP, a thin layer over `zhcls.load(...).predict`.

FastAPI on uvicorn (the `[serve]` extra): an ASGI app whose request models give validation, the
OpenAPI schema and the docs page for free, served by the ASGI server most Python deployments use.
The server never tokenises or post-processes: requests are merged across clients by
`batcher.DynamicBatcher` into ``predict`` calls and its results are passed through.

    POST /v1/classify        {"texts": [...] | [[a, b], ...], "topk": 1}
    POST /models/{name}      PaddleNLP SimpleServing's request and response, for migrating clients
    GET  /health/live        the process answers
    GET  /health/ready       200 once the model is loaded and warmed up, 503 before
    GET  /metrics            Prometheus text
    GET  /docs, /openapi.json

Limits answer with a JSON ``{"error": ...}``: a body over ``max_request_bytes`` -> 413, more than
``max_texts_per_request`` texts, ``max_windows_per_text`` windows or ``max_tokens_per_request``
tokens -> 413, malformed JSON, wrong types or an empty text -> 422, a full queue -> 429 with
Retry-After, a model not ready yet or a server stopping -> 503, no answer within ``timeout`` -> 504
(and the request leaves the queue uncomputed, as it does when its client hangs up). 413 by
Content-Length, 429 and 503 come before the body is read (`_Admission`). On SIGTERM the batcher
answers every request it accepted within ``drain_timeout`` (it stops waiting for more texts at
once), uvicorn finishes the requests in flight, and the process exits 0.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from zhcls.deploy.batcher import DynamicBatcher, QueueFull, Stopping
from zhcls.deploy.serving import ServeConfig, load_predictor, model_version
from zhcls.errors import ZhclsError
from zhcls.inference.predictor import Predictor

log = logging.getLogger("zhcls")

LATENCY_BUCKETS = (.001, .0025, .005, .0075, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("zhcls_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.texts = Counter("zhcls_texts", "texts classified", registry=r)
        self.queue_depth = Gauge("zhcls_queue_depth", "requests waiting for a forward", registry=r)
        self.batch_size = Histogram("zhcls_batch_size", "texts per forward", buckets=BATCH_BUCKETS, registry=r)
        self.queue_seconds = Histogram("zhcls_queue_seconds", "time from arrival to its forward", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.compute_seconds = Histogram("zhcls_compute_seconds", "time of one predict call (tokenise, forward, "
                                         "post-process)", buckets=LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("zhcls_request_seconds", "time from request to response, by route",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.ready = Gauge("zhcls_ready", "1 once the model is loaded and warmed up", registry=r)


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("text is empty or only whitespace")
    return value


Text = Annotated[str, AfterValidator(_text)]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text | tuple[Text, Text]] = Field(min_length=1, description="texts, or [text_a, text_b] pairs")
    topk: int = Field(1, ge=1, le=1000, description="also return the k best labels (multi-class)")


class ClassifyResponse(BaseModel):
    model: str
    version: str
    results: list[dict[str, Any]] = Field(description="predict()'s result per text, in order: label, score, "
                                          "topk (when topk > 1); multi-label: labels, scores")


class SimpleServingData(BaseModel):
    text: list[Text] = Field(min_length=1)
    text_pair: list[Text] | None = None


class SimpleServingRequest(BaseModel):
    """PaddleNLP SimpleServing's body; ``parameters`` max_seq_len and batch_size are the server's business
    here (they are accepted and ignored); prob_limit is the multi-label threshold."""
    model_config = ConfigDict(extra="forbid")
    data: SimpleServingData
    parameters: dict[str, Any] = Field(default_factory=dict)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class _Admission:
    """ASGI middleware: a POST is refused before its body is read (413 by Content-Length, or what
    ``refuse()`` answers: 429 for a full queue, 503 while loading or stopping), and a body that grows
    past ``limit`` bytes as it streams gets 413 there, so no refused body is ever held whole."""

    def __init__(self, app, limit: int, refuse: Callable[[], JSONResponse | None]):
        self.app, self.limit, self.refuse = app, limit, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status = 413 if declared.isdigit() else 400
            return await _error(status, f"request body over --max_request_bytes {self.limit}"
                                if status == 413 else "bad Content-Length")(scope, receive, send)
        refused = self.refuse()
        if refused is not None:
            return await refused(scope, receive, send)
        body, more = [], True
        size = 0
        while more:  # chunked bodies are counted as they come
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.append(message.get("body", b""))
            size += len(body[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await _error(413, f"request body over --max_request_bytes {self.limit}")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(body), "more_body": False}

        await self.app(scope, replay, send)


async def _disconnected(receive) -> None:
    """Returns once the client has closed its connection: after the body, uvicorn's receive() answers
    only that (or the end of the response, which is not sent while this waits)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Observe:
    """ASGI middleware: every response counted by route and status, and timed."""

    def __init__(self, app, metrics: ServeMetrics, routes: Callable[[], set]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        route = scope["path"] if scope["path"] in self.routes() else "other"  # bounded label values

        async def observed(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - start)


def create_app(cfg: ServeConfig, loader: Callable[[ServeConfig], Predictor] = load_predictor,
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The ASGI app. The model is loaded by ``loader`` in a thread after start-up, so that the server
    answers /health/live (and /health/ready: 503) while it loads; ``on_load_error`` is told when it fails."""
    metrics = ServeMetrics()
    state = {"predictor": None, "error": None}
    batcher = DynamicBatcher(lambda texts, **options: state["predictor"].predict(texts, **options),
                             max_batch_size=cfg.max_batch_size, max_delay_ms=cfg.max_delay_ms, max_queue=cfg.max_queue,
                             metrics=metrics)
    name, version = cfg.model_name, cfg.model_version or model_version(cfg.params_path)

    async def load_in_background():
        try:
            state["predictor"] = await asyncio.get_running_loop().run_in_executor(None, loader, cfg)
        except Exception as e:  # ZhclsError or a backend's own: the server must stop either way
            state["error"] = e
            log.error(f"zhcls serve: loading {cfg.params_path} failed: {e}")
            if on_load_error:
                on_load_error(e)
            return
        metrics.ready.set(1)
        log.info(f"model {name} (version {version}) loaded and warmed up: ready")

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        loading = asyncio.create_task(load_in_background())
        yield
        await batcher.stop(cfg.drain_timeout)  # answers what is still queued; 503 for what is not in time
        loading.cancel()

    app = FastAPI(title="zhcls", version=version, lifespan=lifespan,
                  description=f"Text classification with model `{name}`. A thin layer over `zhcls.load(...).predict`.")
    app.state.zhcls = state
    app.state.drain = lambda: batcher.stop(cfg.drain_timeout)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        # loc without pydantic's union-branch tags: "body.texts.0: text is empty or only whitespace"
        detail = [{"loc": [p for p in e["loc"] if not (isinstance(p, str) and "[" in p)], "msg": e["msg"]}
                  for e in exc.errors()[:20]]
        message = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in detail[:3])
        return JSONResponse({"error": message, "status": 422, "detail": detail}, status_code=422)

    def refuse() -> JSONResponse | None:
        """Why a new request is refused before its body is read, if it is."""
        if state["predictor"] is None:
            return _error(503, "the model is loading", {"Retry-After": "1"})
        if batcher.stopping:
            return _error(503, "the server is stopping", {"Retry-After": "1"})
        if batcher.depth >= cfg.max_queue:
            return _error(429, f"server busy: {batcher.depth} requests queued (--max_queue {cfg.max_queue})",
                          {"Retry-After": "1"})
        return None

    def too_much_work(predictor: Predictor, texts: list) -> JSONResponse | None:
        """413 when the texts would make more model inputs than the limits allow (sliding windows count)."""
        windows, tokens = predictor.workload(texts)
        worst = max(range(len(texts)), key=windows.__getitem__)
        if windows[worst] > cfg.max_windows_per_text:
            return _error(413, f"text {worst} needs {windows[worst]} windows; the limit is --max_windows_per_text "
                               f"{cfg.max_windows_per_text}")
        if tokens > cfg.max_tokens_per_request:
            return _error(413, f"the texts make {tokens} tokens; the limit is --max_tokens_per_request "
                               f"{cfg.max_tokens_per_request}")
        return None

    async def classify(request: Request, texts: list, **options) -> list[dict] | JSONResponse:
        """predict(texts) through the batcher, within the request's deadline; the request is dropped
        from the batcher (never computed) when the deadline passes or the client goes away first."""
        deadline = time.monotonic() + cfg.timeout
        if len(texts) > cfg.max_texts_per_request:
            return _error(413, f"{len(texts)} texts in one request; the limit is --max_texts_per_request "
                               f"{cfg.max_texts_per_request}")
        refused = refuse()
        if refused is not None:
            return refused
        predictor = state["predictor"]
        # Without sliding windows a text is one input of at most max_seq_length tokens: nothing to count
        # unless that bound passes the limit. Else tokenised off the event loop (a long text takes a while).
        if (predictor.long_text.policy == "sliding"
                or len(texts) * predictor.max_seq_length > cfg.max_tokens_per_request):
            refused = await asyncio.to_thread(too_much_work, predictor, texts)
            if refused is not None:
                return refused
        try:
            future = batcher.submit(texts, **options)
        except QueueFull as e:
            return _error(429, f"server busy: {e}", {"Retry-After": "1"})
        except Stopping as e:
            return _error(503, str(e), {"Retry-After": "1"})
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            done, _ = await asyncio.wait({future, gone}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not future.done():
                future.cancel()  # its slot is freed; not computed unless its forward has started
        if future not in done:
            if gone in done:  # nobody reads the answer; counted in the metrics as nginx counts it
                return _error(499, "the client closed the connection")
            return _error(504, f"not answered within --timeout {cfg.timeout:g} s (server overloaded?)",
                          {"Retry-After": "1"})
        try:
            results = future.result()
        except Stopping as e:
            return _error(503, str(e), {"Retry-After": "1"})
        except ZhclsError as e:
            return _error(422, str(e))
        metrics.texts.inc(len(texts))
        return results

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classify"],
              responses={413: {}, 422: {}, 429: {}, 503: {}, 504: {}})
    async def v1_classify(body: ClassifyRequest, request: Request):
        """Classify texts (or pairs): the label and score of each, and the k best with ``topk``."""
        texts = [list(t) if isinstance(t, tuple) else t for t in body.texts]
        if len({isinstance(t, list) for t in texts}) > 1:  # refused here, so it never fails a merged batch
            return _error(422, "body.texts: a mix of single texts and pairs; send one kind per request")
        results = await classify(request, texts, topk=body.topk)
        if isinstance(results, JSONResponse):
            return results
        return JSONResponse({"model": name, "version": version, "results": results})

    @app.post("/models/{model}", tags=["classify"], responses={404: {}, 413: {}, 422: {}, 429: {}, 503: {}, 504: {}})
    async def simple_serving(model: str, body: SimpleServingRequest, request: Request):
        """PaddleNLP SimpleServing's format: ``{"data": {"text": [...], "text_pair": [...]}, "parameters": {...}}``
        -> ``{"result": {"label": [class ids], "confidence": [scores]}}``."""
        if model != name:
            return _error(404, f"no model {model!r}; this server has {name!r}")
        data = body.data
        if data.text_pair is not None and len(data.text_pair) != len(data.text):
            return _error(422, f"data.text has {len(data.text)} texts but data.text_pair {len(data.text_pair)}")
        texts = data.text if data.text_pair is None else [[a, b] for a, b in zip(data.text, data.text_pair)]
        options = {}
        if "prob_limit" in body.parameters:
            limit = body.parameters["prob_limit"]
            if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 <= limit <= 1:
                return _error(422, "parameters.prob_limit must be a number in [0, 1]")
            options["threshold"] = float(limit)
        results = await classify(request, texts, **options)
        if isinstance(results, JSONResponse):
            return results
        index = {label: i for i, label in enumerate(state["predictor"].labels)}
        if all("label" in r for r in results):
            result = {"label": [index[r["label"]] for r in results], "confidence": [r["score"] for r in results]}
        else:
            result = {"label": [[index[x] for x in r["labels"]] for r in results],
                      "confidence": [r["scores"] for r in results]}
        return JSONResponse({"result": result})

    @app.get("/health/live", tags=["operations"])
    async def live():
        return {"live": True}

    @app.get("/health/ready", tags=["operations"])
    async def ready():
        if state["predictor"] is None:
            return JSONResponse({"ready": False, "model": name, "error": str(state["error"] or "") or None},
                                status_code=503)
        return {"ready": True, "model": name, "version": version}

    @app.get("/metrics", tags=["operations"])
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = {r.path for r in app.routes} | {f"/models/{name}"}
    app.add_middleware(_Admission, limit=cfg.max_request_bytes, refuse=refuse)
    app.add_middleware(_Observe, metrics=metrics, routes=lambda: routes)  # added last: runs first, sees every 413
    return app


def run_uvicorn(cfg: ServeConfig) -> None:
    """Serve ``cfg`` with uvicorn until SIGINT / SIGTERM (then finish what is in flight and return)."""
    import uvicorn

    cfg.check()
    server: uvicorn.Server | None = None

    def stop(_error):
        server.should_exit = True

    app = create_app(cfg, on_load_error=stop)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, access_log=cfg.access_log, log_level="info",
                            timeout_graceful_shutdown=cfg.drain_timeout, lifespan="on",
                            limit_concurrency=cfg.max_connections, backlog=cfg.backlog)
    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            # uvicorn waits for the requests in flight before the app's lifespan shutdown: the batcher must
            # stop first (answer what it holds now, not after max_delay; refuse what comes) or they wait.
            draining = asyncio.ensure_future(app.state.drain())
            await super().shutdown(sockets)
            await draining

    server = Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it found: with this
    # one in place the re-raised signal is a no-op, so a graceful stop exits 0 (what orchestrators expect).
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    except SystemExit:  # uvicorn's answer to a port it cannot bind (it has logged the OSError)
        raise ZhclsError(f"--host {cfg.host} --port {cfg.port}: cannot listen there (in use?)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    error = app.state.zhcls["error"]
    if error is not None:
        raise error if isinstance(error, ZhclsError) else ZhclsError(f"{cfg.params_path}: cannot load the model ({error})")
