"""The settings of `zhcls export`, `bench` and `serve`; each field is also the command-line option of that
name (`zhcls.options`). No torch or numpy here: `zhcls --help` reads them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zhcls.errors import ZhclsError
from zhcls.options import option

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-fused", "onnx-int8", "onnx-int8-static")


@dataclass(kw_only=True)
class ExportConfig:
    """`zhcls export`: PaddleNLP export_model.py's params_path and output_path, plus the ONNX options."""

    params_path: str = option("./checkpoint", "checkpoint folder to export")
    output_path: str = option("./export", "export folder (model.onnx, tokenizer, labels, report)")
    overwrite: bool = option(False)
    opset: int | None = option(None, "ONNX opset (default: zhcls's tested one)")
    fp16: bool = option(False, "also write an fp16 graph (for the CUDA provider)")
    quantize: str | None = option(None, "INT8, gated on dev accuracy: int8-static (calibrated on dev: measured "
                                  "fastest), int8-dynamic, or int8 (static, then dynamic if refused)",
                                  choices=("int8", "int8-static", "int8-dynamic"))
    max_accuracy_drop: float = option(0.5, "INT8 gate, in accuracy points")
    dataset_dir: str | None = option(None, "dev texts for verification and the INT8 gate")
    dev_file: str = option("dev.txt")
    label_file: str = option("label.txt")
    optimize: bool = option(True, "skip ONNX Runtime's transformer fusions", flags=("--no_optimize",))
    max_seq_length: int | None = option(None)
    threads: int | None = option(None, "ONNX Runtime threads during verification")
    triton_repo: str | None = option(None, "also write a Triton model repository here (tokenizer, ONNX model with "
                                     "dynamic batching, post-processing: an ensemble for the NGC Triton container)")
    triton_backend: str = option("onnxruntime", "--triton_repo's form: onnxruntime (the ensemble; truncate and "
                                 "head_tail checkpoints) or python (one Python model running zhcls's ONNX Runtime "
                                 "predictor: any long-text policy, and Triton builds without the onnxruntime backend, "
                                 "such as PyTriton's)", choices=("onnxruntime", "python"))
    progress: bool = True


@dataclass(kw_only=True)
class BenchConfig:
    """`zhcls bench`: dev accuracy and latency of each backend, for one or more model folders."""

    params_path: list[str] = option(help="checkpoint or export folder(s); several: one plot")
    dataset_dir: str = option()
    dev_file: str = option("dev.txt")
    label_file: str = option("label.txt")
    backends: str = option("auto", f"comma-separated backends to measure ({', '.join(BACKENDS)}); auto: all of "
                           "them, torch-bf16 only on CPUs with native bf16")
    batch_size: int = option(32)
    max_seq_length: int = option(128)
    threads: int | None = option(None)
    repeats: int = option(3, "runs per backend; medians are reported")
    max_samples: int | None = option(None, "use the first N dev texts")
    json: str | None = option(None, "also write the rows as JSON here")
    plot: str | None = option(None, "accuracy-latency PNG here")
    progress: bool = True

    def backend_list(self) -> tuple[str, ...]:
        if self.backends == "auto":
            return ()  # bench's default_backends(): what this CPU has
        return tuple(b.strip() for b in self.backends.split(",") if b.strip())


@dataclass(kw_only=True)
class ServeConfig:
    """`zhcls serve`'s flags."""

    params_path: str = option("./checkpoint", "checkpoint folder (torch) or export folder (ONNX Runtime)")
    backend: str = option("auto")
    device: str = option("cpu")
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(8000, "HTTP port (triton: gRPC on port+1, metrics on port+2)")
    name: str | None = option(None, "model name in answers and URLs (default: the params folder's name)")
    model_version: str | None = option(None, "version in answers (default: a hash of the model files)")
    max_batch_size: int = option(32, "texts merged into one forward (1: no batching)")
    # Texts per forward inside that call, after predict() sorts them by length: each forward pads to its
    # own longest text, so on CPU small forwards of similar lengths beat one padded forward (measured:
    # 32 merged KUAKE-QIC texts, ERNIE 3.0 Micro, 1 thread: 2.4 ms/text in forwards of 8, 4.6 in one).
    batch_size: int = option(8, "texts per forward within a merged batch, after sorting by length (padding is per "
                             "forward; raise it on GPU)")
    max_delay_ms: float = option(2.0, "how long a forward waits for more texts")
    max_queue: int = option(256, "requests waiting at most; more get 429, before the body is read")
    drain_timeout: float = option(30.0, "on SIGTERM: seconds to answer the requests accepted; those not answered "
                                  "by then get 503")
    timeout: float = option(60.0, "seconds to answer a request; later: 504, and its queued work is dropped")
    max_texts_per_request: int = option(64, "more get 413")
    max_request_bytes: int = option(1 << 20, "larger bodies get 413, before they are read")
    # What one request may make the model compute: sliding windows of one text, and the tokens of all its
    # inputs (windows included). 64 texts of 128 tokens are 8192; one text of 64 windows of 512 is 32768.
    max_windows_per_text: int = option(64, "sliding checkpoints: a text needing more windows gets 413")
    max_tokens_per_request: int = option(65536, "a request whose texts make more model tokens (windows included) "
                                         "gets 413")
    # uvicorn's limit_concurrency and listen backlog: with max_request_bytes they bound the memory that
    # bodies being read can take (max_connections x max_request_bytes at worst).
    max_connections: int = option(512, "connections and requests at once (uvicorn's limit_concurrency); more get 503")
    backlog: int = option(2048, "connections waiting to be accepted (the listen backlog)")
    max_seq_length: int | None = option(None)
    threads: int = option(0, "CPU threads of the backend (default: its own)")
    engine: str = option("uvicorn", "uvicorn: zhcls's ASGI server; triton: NVIDIA Triton through PyTriton (the "
                         "[triton] extra)", choices=("uvicorn", "triton"))
    access_log: bool = option(True, "no line per request", flags=("--no_access_log",))
    grpc_port: int | None = option(None, "triton: the gRPC port (default: --port + 1)")
    metrics_port: int | None = option(None, "triton: the metrics port (default: --port + 2)")

    @property
    def model_name(self) -> str:
        return self.name or Path(self.params_path).resolve().name

    def check(self) -> None:
        """Flags and the model folder, checked before any engine starts."""
        from zhcls.data.long_text import LongText
        from zhcls.inference.loading import read_meta

        for flag in ("max_batch_size", "batch_size", "max_queue", "max_texts_per_request", "max_request_bytes",
                     "max_windows_per_text", "max_tokens_per_request", "max_connections", "backlog"):
            if getattr(self, flag) < 1:
                raise ZhclsError(f"--{flag} must be >= 1")
        if self.max_delay_ms < 0:
            raise ZhclsError("--max_delay_ms must be >= 0")
        for flag in ("drain_timeout", "timeout"):
            if not getattr(self, flag) > 0:
                raise ZhclsError(f"--{flag} must be > 0")
        if self.engine not in ("uvicorn", "triton"):
            raise ZhclsError(f"--engine {self.engine}: expected uvicorn or triton")
        if not 0 <= self.port < 65536:
            raise ZhclsError(f"--port {self.port}: not a port number")
        meta = read_meta(self.params_path)  # a missing or broken model folder fails now, not in the background
        LongText.from_meta(meta).check((self.max_seq_length or meta.get("max_seq_length", 128)) - 2)
