"""`zhcls serve --engine triton`: the same predictor behind NVIDIA Triton Inference Server, through PyTriton.

PyTriton (`nvidia-pytriton`, the `[triton]` extra) ships the tritonserver binary and runs our Python
function as a Triton model: Triton's dynamic batcher (configured from ``--max_batch_size``,
``--max_delay_ms``, and ``--max_queue`` and ``--timeout`` as its queue policy) merges requests,
KServe v2 HTTP on ``--port``, gRPC on port+1, Prometheus metrics on port+2, Triton's own health
endpoints (/v2/health/ready). Each batch is one ``predictor.predict`` call; the model answers every
row of it.

The model ``NAME`` takes ``text`` (BYTES, UTF-8, one per row; pair models also ``text_pair``) and
answers ``result`` (BYTES: predict()'s dict for that row, as JSON: label, score, ...).

Two known ways it fails to start, handled here rather than in the user's shell:
- Triton's Python stub loads ``libpython3.X.so`` from the library path; beside a pyenv / conda
  Python, the system's libpython of another patch release is found first and the model fails to
  load (``'_thread.RLock' object has no attribute '_recursion_count'``). The running interpreter's
  own library folder (``sysconfig.get_config_var("LIBDIR")``) goes first on LD_LIBRARY_PATH.
- The stub's embedded Python ignores PYTHONPATH and takes its packages from the ``python3`` it finds
  first on PATH: from a virtual environment not activated, that is the base Python's, with its own
  numpy (measured here: numpy 2, so the stub misreads the text tensors). The running interpreter's
  folder goes first on PATH.
- PyTriton 0.7 requires numpy < 2 (its stub mis-reads BYTES tensors under numpy 2: measured here,
  the stub aborts on the first request). With numpy 2 installed we stop with one line saying so.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import signal
import sys
import sysconfig

import numpy as np

from zhcls.deploy.serving import ServeConfig, load_predictor
from zhcls.errors import ZhclsError

log = logging.getLogger("zhcls")

INPUT, PAIR_INPUT, OUTPUT = "text", "text_pair", "result"


def check_platform() -> None:
    """One line saying why PyTriton cannot run here, or nothing."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        raise ZhclsError(f"--engine triton: PyTriton runs on Linux x86_64 / aarch64 only, not {platform.system()} "
                         f"{platform.machine()}; use --engine uvicorn, or the NGC Triton container with `zhcls export --triton_repo`")
    libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    version = tuple(int(x) for x in libc.split()[-1].split(".")[:2]) if libc.startswith("glibc") else (0, 0)
    if version < (2, 35):
        raise ZhclsError(f"--engine triton: PyTriton's tritonserver needs glibc >= 2.35, this system has "
                         f"{libc or 'no glibc'}; use --engine uvicorn, or the NGC Triton container")
    if int(np.__version__.split(".")[0]) >= 2:
        raise ZhclsError(f"--engine triton: PyTriton needs numpy < 2 (this environment has numpy {np.__version__}; "
                         "Triton's Python stub misreads text tensors under numpy 2); install zhcls[triton] in "
                         "an environment of its own, or use --engine uvicorn")
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise ZhclsError("--engine triton needs PyTriton: pip install 'zhcls[triton]' (nvidia-pytriton)") from None


def server_environment(env: dict, executable: str = sys.executable) -> dict:
    """``env`` with this interpreter's libpython folder first on LD_LIBRARY_PATH and the folder of
    ``executable`` first on PATH: Triton's Python stub must load the libpython, and find the packages,
    of the environment zhcls runs in, not others the system has."""
    def first(name, value):
        rest = [p for p in env.get(name, "").split(os.pathsep) if p and p != value]
        return os.pathsep.join([value, *rest])

    return {**env, "LD_LIBRARY_PATH": first("LD_LIBRARY_PATH", sysconfig.get_config_var("LIBDIR")),
            "PATH": first("PATH", os.path.dirname(executable))}


def infer_function(predictor):
    """The Triton model: a batch of rows in, predict()'s result per row out (every row, in order)."""
    def infer(requests):
        # PyTriton hands over the requests Triton's batcher merged: concatenate them, one predict
        # call, then split the answers back.
        rows = [r[INPUT].reshape(-1) for r in requests]
        texts = [t.decode("utf-8") for batch in rows for t in batch]
        if PAIR_INPUT in requests[0].keys():
            pairs = [t.decode("utf-8") for r in requests for t in r[PAIR_INPUT].reshape(-1)]
            texts = [[a, b] for a, b in zip(texts, pairs)]
        results = predictor.predict(texts)
        encoded = np.array([[json.dumps(r, ensure_ascii=False).encode("utf-8")] for r in results], dtype=object)
        answers, start = [], 0
        for batch in rows:
            answers.append({OUTPUT: encoded[start:start + len(batch)]})
            start += len(batch)
        return answers
    return infer


def run_triton(cfg: ServeConfig) -> None:
    """Load and warm up the predictor, bind it to Triton, serve until SIGINT / SIGTERM."""
    cfg.check()
    check_platform()
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
    from pytriton.triton import Triton, TritonConfig

    predictor = load_predictor(cfg)
    os.environ.update(server_environment(dict(os.environ)))  # PyTriton starts tritonserver with this environment
    inputs = [Tensor(name=INPUT, dtype=bytes, shape=(1,))]
    if predictor.task == "pair":
        inputs.append(Tensor(name=PAIR_INPUT, dtype=bytes, shape=(1,)))
    config = TritonConfig(http_address=cfg.host, http_port=cfg.port, grpc_address=cfg.host,
                          grpc_port=cfg.grpc_port or cfg.port + 1, metrics_address=cfg.host,
                          metrics_port=cfg.metrics_port or cfg.port + 2, exit_timeout_secs=30)
    batcher = DynamicBatcher(max_queue_delay_microseconds=int(cfg.max_delay_ms * 1000),
                             # --timeout as Triton's queue timeout: a request still queued then is rejected
                             default_queue_policy=QueuePolicy(max_queue_size=cfg.max_queue,
                                                              default_timeout_microseconds=int(cfg.timeout * 1e6)))
    # SIGTERM (Kubernetes, systemd) stops Triton the way Ctrl-C does: in-flight requests finish.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        with Triton(config=config) as triton:
            triton.bind(model_name=cfg.model_name, infer_func=infer_function(predictor), inputs=inputs,
                        outputs=[Tensor(name=OUTPUT, dtype=bytes, shape=(1,))], strict=False,
                        config=ModelConfig(max_batch_size=cfg.max_batch_size, batcher=batcher, batching=True))
            log.info(f"Triton: model {cfg.model_name}, HTTP {cfg.host}:{cfg.port}, gRPC port {config.grpc_port}, "
                     f"metrics port {config.metrics_port}")
            triton.serve()
    except ZhclsError:
        raise
    except Exception as e:  # PyTriton's start-up errors: a port in use, a server that died
        raise ZhclsError(f"--engine triton: Triton did not start ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
