"""Cross-request dynamic batching for `zhcls serve`: many small requests, few large forwards.

Requests wait in one bounded queue. A single worker takes the oldest request, then every request that
arrives within ``max_delay_ms`` (or is already waiting) until ``max_batch_size`` texts are gathered,
and runs them as one ``predict`` call in a worker thread, off the event loop. The predictor sorts
the merged texts by length, pads per batch and restores their order, so each request gets back
exactly the results ``predict`` gives for its own texts. Requests whose ``predict`` options differ
(``topk``, ``threshold``), and pairs and single texts, are merged only with their own kind: one call
per kind and batch.

The queue is bounded in requests (``max_queue``): a full queue refuses at once (`QueueFull`, HTTP
429), so memory stays bounded under any burst. A request whose future is cancelled (its client went
away, or its deadline passed) leaves the count at once and is never computed.

`stop` refuses new requests (`Stopping`, HTTP 503), answers every request it accepted (the one being
gathered too: the worker stops waiting out ``max_delay`` and runs what it holds), and after
``drain_timeout`` seconds fails whatever is still unanswered with `Stopping`, so no caller waits forever.
This module imports neither torch nor the web stack.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


class QueueFull(Exception):
    """The batcher holds ``max_queue`` requests already; the caller should retry later."""


class Stopping(Exception):
    """The batcher is stopping: no new requests, and an accepted one not answered within the drain time."""


_END = object()  # put on the queue by stop(), after the last request accepted: the worker's signal to finish


@dataclass(eq=False)  # hashed by identity: kept in sets until answered
class _Request:
    texts: list
    options: tuple  # sorted (name, value) pairs of predict's keyword arguments
    pairs: bool  # (text_a, text_b) pairs are never merged with single texts
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """``await batcher.submit(texts, topk=2)`` -> ``predict(texts, topk=2)``, merged with other requests.

    ``predict`` is the predictor's method; ``metrics`` (optional) has ``queue_depth`` (a gauge),
    ``batch_size``, ``queue_seconds`` and ``compute_seconds`` (histograms), as `serve.ServeMetrics`.
    """

    def __init__(self, predict: Callable[..., list], *, max_batch_size: int = 32, max_delay_ms: float = 2.0,
                 max_queue: int = 256, metrics=None):
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_ms >= 0")
        self.predict, self.metrics = predict, metrics
        self.max_batch_size, self.max_delay, self.max_queue = max_batch_size, max_delay_ms / 1000, max_queue
        self._queue: asyncio.Queue[_Request] | None = None
        self._carry: _Request | None = None  # taken from the queue, but it did not fit in the last batch
        self._worker: asyncio.Task | None = None
        # Accepted and not answered yet (a request leaves when its future is done: answered, failed or
        # cancelled by its caller); the ones of the forward being computed are also in _computing.
        self._open: set[_Request] = set()
        self._computing: set[_Request] = set()
        self._stopping = False
        self._stopped: asyncio.Future | None = None  # stop()'s drain, once started
        # One thread: forwards run one at a time, each using the backend's own intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zhcls-forward")

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def depth(self) -> int:
        """Requests accepted and waiting for a forward (not counting the forward being computed)."""
        return len(self._open - self._computing)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="zhcls-batcher")

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Refuse new requests, answer every accepted one, stop the worker. What is still unanswered
        after ``drain_timeout`` seconds (a forward that hangs) fails with `Stopping`. Calling it again
        waits for the first call to finish."""
        if self._stopped is None:
            self._stopping = True
            self._stopped = asyncio.ensure_future(self._drain(drain_timeout))
        await asyncio.shield(self._stopped)

    async def _drain(self, drain_timeout: float) -> None:
        if self._worker:
            self._queue.put_nowait(_END)  # behind every accepted request: they are all answered first
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), drain_timeout)
            except asyncio.TimeoutError:
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker
        unanswered = [r for r in self._open if not r.future.done()]
        for r in unanswered:
            r.future.set_exception(Stopping(f"the server stopped before answering (drain timeout {drain_timeout:g} s)"))
        # A forward still running in its thread cannot be interrupted: do not wait for it.
        self._executor.shutdown(wait=not unanswered, cancel_futures=True)

    def submit(self, texts: list, **options) -> asyncio.Future:
        """Queue ``texts``; the future resolves to predict's results for them, in order. Raises
        `QueueFull` when ``max_queue`` requests are waiting."""
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() has not run")
        if self._stopping:
            raise Stopping("the server is stopping")
        if self.depth >= self.max_queue:
            raise QueueFull(f"{self.depth} requests queued (--max_queue {self.max_queue})")
        texts = list(texts)
        pairs = bool(texts) and isinstance(texts[0], (list, tuple))
        request = _Request(texts, tuple(sorted(options.items())), pairs, asyncio.get_running_loop().create_future())
        self._open.add(request)
        request.future.add_done_callback(lambda _: self._close(request))
        self._queue.put_nowait(request)
        self._gauge()
        return request.future

    def _close(self, request: _Request) -> None:
        """Its future is done (answered, failed, or cancelled by a caller that gave up): its slot is free."""
        self._open.discard(request)
        self._computing.discard(request)
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(self.depth)

    async def _take(self):
        """The next request still wanted (a cancelled one is dropped here, never computed), or _END."""
        while True:
            request = self._carry if self._carry is not None else await self._queue.get()
            self._carry = None
            if request is _END or not request.future.done():
                return request

    async def _next_batch(self) -> list[_Request]:
        """The oldest request, then more until max_batch_size texts or max_delay after the first; an
        empty list once stop() was called and every request before it was taken."""
        first = await self._take()
        if first is _END:
            return []
        batch, size = [first], len(first.texts)
        deadline = time.perf_counter() + self.max_delay
        while size < self.max_batch_size:
            try:
                if self._queue.empty():
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                else:
                    request = self._queue.get_nowait()
            except asyncio.TimeoutError:
                break
            if request is _END or size + len(request.texts) > self.max_batch_size:
                self._carry = request  # first in line for the next batch (stop: run this one now)
                break
            if not request.future.done():
                batch.append(request)
                size += len(request.texts)
        return batch

    async def _run(self) -> None:
        while batch := await self._next_batch():
            self._computing.update(r for r in batch if not r.future.done())
            self._gauge()
            await self._answer(batch)

    async def _answer(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        groups: dict[tuple, list[_Request]] = {}
        for r in batch:
            if not r.future.done():  # a client that went away is not computed
                groups.setdefault((r.pairs, r.options), []).append(r)
            if self.metrics:
                self.metrics.queue_seconds.observe(started - r.arrived)
        for (_, options), requests in groups.items():
            texts = [t for r in requests for t in r.texts]
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, lambda t=texts, o=options: self.predict(t, **dict(o)))
            except Exception as e:  # the backend failed: every request of this call gets the error
                for r in requests:
                    if not r.future.done():
                        r.future.set_exception(e)
                continue
            if self.metrics:
                self.metrics.batch_size.observe(len(texts))
                self.metrics.compute_seconds.observe(time.perf_counter() - t0)
            start = 0
            for r in requests:
                if not r.future.done():
                    r.future.set_result(results[start:start + len(r.texts)])
                start += len(r.texts)
