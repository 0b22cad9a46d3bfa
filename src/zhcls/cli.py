"""`zhcls` command line: argument parsing only; every command calls the Python API.

Imports of torch and friends happen inside the commands, so `zhcls --help` answers at once.
Flag names are those of PaddleNLP's multi_class scripts (train.py, predict.py, export_model.py,
prune.py, analysis/evaluate.py), plus zhcls's own.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _add_common_data(p, *, train=True):
    p.add_argument("--dataset_dir", required=True, help="folder with train.txt, dev.txt, [test.txt], label.txt")
    if train:
        p.add_argument("--train_file", default="train.txt", help="training file name in --dataset_dir")
    p.add_argument("--dev_file", default="dev.txt", help="dev file name in --dataset_dir")
    p.add_argument("--label_file", default="label.txt", help="label file name in --dataset_dir")


def _add_runtime(p):
    p.add_argument("--device", default="auto", help="cpu, gpu or auto (default: gpu when available)")
    p.add_argument("--max_seq_length", type=int, default=None, help="truncate longer inputs (default: the model's)")
    p.add_argument("--batch_size", type=int, default=32)


def _add_long_text(p, default):
    """Train stores the long-text policy in the checkpoint; evaluate and predict may override it."""
    p.add_argument("--long_text", default=default, choices=["truncate", "head_tail", "sliding"],
                   help="texts longer than max_seq_length: truncate (keep the start), head_tail (start and end), "
                        "sliding (windows, logits pooled)" + ("" if default else "; default: the checkpoint's"))
    p.add_argument("--stride", type=int, default=0 if default else None,
                   help="sliding: tokens between window starts (0: half a window)")
    p.add_argument("--window_pooling", default="mean" if default else None, choices=["mean", "max"])


def _add_decision(p):
    """Multi-label decisions at evaluate and predict (the checkpoint's tuned thresholds by default)."""
    p.add_argument("--threshold", type=float, default=None, help="multi-label: one threshold for every label "
                   "(default: the thresholds tuned on dev at training, else 0.5)")
    p.add_argument("--min_labels", type=int, default=0, help="multi-label: at least this many labels per text")
    p.add_argument("--max_labels", type=int, default=None, help="multi-label: at most this many labels per text")
    p.add_argument("--hierarchy_policy", default=None, choices=["add_parents", "drop_orphans"],
                   help="hierarchical: a child predicted without its parent brings it, or is dropped "
                        "(default: the checkpoint's, add_parents)")
    _add_long_text(p, None)


def _long_text(args, params_path):
    """The --long_text / --stride / --window_pooling override, on top of the checkpoint's policy (None: none)."""
    if args.long_text is None and args.stride is None and args.window_pooling is None:
        return None  # no model folder read: evaluate's own errors come first
    from zhcls.data.long_text import LongText
    from zhcls.inference.loading import read_meta

    return LongText.from_meta(read_meta(params_path)).override(args.long_text, args.stride, args.window_pooling)


def _check_threshold(args):
    if args.threshold is not None:
        from zhcls.inference.predictor import check_threshold

        check_threshold(args.threshold)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhcls", description="Chinese text classification with small Transformer "
                                     "encoders: train, evaluate, predict, compress, export, serve, analyse, pretrain.")
    parser.add_argument("--version", action="version", version=f"zhcls {_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune a model on a dataset folder (keeps the best dev checkpoint)")
    _add_common_data(t)
    t.add_argument("--model_name", "--model", dest="model_name", default="ernie-3.0-medium-zh",
                   help="zoo name (see `zhcls models`), hub id, or local folder (HF, PaddleNLP or TensorFlow format)")
    t.add_argument("--save_dir", default="./checkpoint", help="where the best checkpoint is written: a missing or "
                   "empty folder, or one zhcls wrote (else refused; see --overwrite)")
    t.add_argument("--overwrite", action="store_true", help="let --save_dir replace a folder zhcls did not write")
    t.add_argument("--device", default="auto", help="cpu, gpu or auto")
    t.add_argument("--max_seq_length", type=int, default=128)
    t.add_argument("--batch_size", type=int, default=32)
    t.add_argument("--learning_rate", type=float, default=None, help="default 3e-5 (pretrained), 5e-4 (--init_random)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--early_stop", action="store_true", help="stop after --early_stop_nums epochs without dev improvement")
    t.add_argument("--early_stop_nums", type=int, default=3)
    t.add_argument("--logging_steps", type=int, default=5)
    t.add_argument("--weight_decay", type=float, default=0.0)
    t.add_argument("--warmup", action="store_true", help="linear warmup (with --warmup_steps or --warmup_proportion)")
    t.add_argument("--warmup_steps", type=int, default=0)
    t.add_argument("--warmup_proportion", type=float, default=None, help="warmup as a ratio of all steps")
    t.add_argument("--init_from_ckpt", default=None, help="start from these weights (checkpoint folder or .safetensors)")
    t.add_argument("--seed", type=int, default=3)
    t.add_argument("--task", default="auto", choices=["auto", "text", "pair"])
    t.add_argument("--problem_type", default="multi_class", choices=["multi_class", "multi_label", "hierarchical"])
    t.add_argument("--init_random", action="store_true", help="build --model's architecture with fresh weights (no download)")
    t.add_argument("--vocab_file", default=None, help="vocab.txt to use instead of the model's")
    t.add_argument("--vocab_from_data", action="store_true", help="build a WordPiece vocab from the training texts")
    t.add_argument("--vocab_size", type=int, default=8000, help="size of the --vocab_from_data vocab")
    t.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"], help="mixed precision (auto: on GPU only)")
    t.add_argument("--gradient_accumulation_steps", type=int, default=1)
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --save_dir")
    t.add_argument("--save_steps", type=int, default=0, help="also save the resumable state every N steps")
    t.add_argument("--max_steps", type=int, default=0, help="stop after N optimizer steps")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    t.add_argument("--cache_dir", default=None, help="hub download cache")
    t.add_argument("--metric", default=None, choices=["accuracy", "micro_f1", "macro_f1", "weighted_f1"],
                   help="dev score that picks the best checkpoint and tunes the thresholds "
                        "(default: accuracy, multi-label micro_f1)")
    t.add_argument("--threshold_min_support", type=int, default=10,
                   help="multi-label: a label gets its own tuned threshold with this many dev positives, else the global one")
    t.add_argument("--hierarchy_policy", default="add_parents", choices=["add_parents", "drop_orphans"],
                   help="hierarchical: a child predicted without its parent brings it, or is dropped")
    _add_long_text(t, "truncate")
    t.add_argument("--class_weights", default="none",
                   help="none, balanced, or a FILE of label<TAB>weight lines (multi-class CE weights; multi-label pos_weight)")
    t.add_argument("--loss", default="ce", choices=["ce", "focal"], help="cross-entropy (multi-label: BCE) or focal loss")
    t.add_argument("--focal_gamma", type=float, default=2.0)
    t.add_argument("--no_baseline", action="store_true", help="skip the TF-IDF baseline's dev score beside the model's")

    e = sub.add_parser("evaluate", help="accuracy, top-k, per-class P/R/F1, confusion matrix and bad cases")
    _add_common_data(e)
    e.add_argument("--test_file", default=None, help="test file name in --dataset_dir (default: test.txt, used when "
                   "present; a name given here must exist)")
    e.add_argument("--params_path", default="./checkpoint", help="checkpoint or export folder")
    e.add_argument("--output_dir", default=None, help="where reports go (default: PARAMS_PATH/eval)")
    e.add_argument("--splits", default=None, help="comma-separated splits to evaluate, each of which must exist "
                   "(default: train, dev, and test when present)")
    e.add_argument("--no_plot", action="store_true", help="no confusion-matrix PNG (text reports only)")
    e.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    e.add_argument("--no_baseline", action="store_true", help="skip the TF-IDF baseline's dev score beside the model's")
    _add_runtime(e)
    _add_decision(e)

    p = sub.add_parser("predict", help="label every line of data.txt (or JSONL / Parquet files, streamed)")
    p.add_argument("--dataset_dir", default=".", help="folder holding --data_file")
    p.add_argument("--data_file", default=["data.txt"], nargs="+", help="one text (or text_a<TAB>text_b) per line; "
                   "or .jsonl / .parquet files; several files or globs ('logs/*.jsonl') are read in order")
    p.add_argument("--input_format", default="auto", choices=["auto", "text", "jsonl", "parquet"],
                   help="auto: from each file's suffix (.jsonl/.json, .parquet, else text lines)")
    p.add_argument("--text_field", default="text", help="JSONL / Parquet: the field holding the text")
    p.add_argument("--text_pair_field", default="text_pair", help="JSONL / Parquet: the second text of a pair model")
    p.add_argument("--label_file", default=None, help="optional: check the model's labels against this label.txt")
    p.add_argument("--params_path", default="./checkpoint", help="checkpoint or export folder")
    p.add_argument("--output_file", default="output.txt", help="text<TAB>label<TAB>confidence per input line "
                   "(multi-label: text<TAB>label1,label2<TAB>score1,score2); a .jsonl name: one JSON object per line")
    p.add_argument("--topk", type=int, default=1, help="also write the k best labels")
    p.add_argument("--on_error", default="fail", choices=["fail", "skip"],
                   help="a malformed input record (FILE:LINE): stop with an error, or skip it (counted in the summary)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT_FILE.partial")
    p.add_argument("--chunk_size", type=int, default=4096, help="texts read, scored and written at a time "
                   "(memory is bounded by a chunk)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: the cores, "
                   "at most 8; with --engine ray: the cores per worker)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process; ray: Ray Data actors on a Ray cluster (the [ray] extra)")
    p.add_argument("--address", default=None, help="--engine ray: the cluster's address (default: a local Ray "
                   "started for this run)")
    p.add_argument("--num_workers", type=int, default=1, help="--engine ray: predictor actors (one ONNX model each)")
    _add_runtime(p)
    _add_decision(p)

    sub.add_parser("models", help="list the model zoo")

    x = sub.add_parser("export", help="verified ONNX export (fused graph, optional INT8) for ONNX Runtime",
                       epilog="exit status: 0 exported (with INT8 when asked); 2 error, nothing written; 3 the INT8 "
                       "gate refused every mode: the fp32 export IS written (export_report.json: "
                       "variants.int8.accepted is false)")
    x.add_argument("--params_path", default="./checkpoint", help="checkpoint folder to export")
    x.add_argument("--output_path", default="./export", help="export folder (model.onnx, tokenizer, labels, report)")
    x.add_argument("--opset", type=int, default=None, help="ONNX opset (default: zhcls's tested one)")
    x.add_argument("--fp16", action="store_true", help="also write an fp16 graph (for the CUDA provider)")
    x.add_argument("--quantize", choices=["int8"], default=None, help="INT8 dynamic quantisation, gated on dev accuracy")
    x.add_argument("--max_accuracy_drop", type=float, default=0.5, help="INT8 gate, in accuracy points")
    x.add_argument("--dataset_dir", default=None, help="dev texts for verification and the INT8 gate")
    x.add_argument("--dev_file", default="dev.txt")
    x.add_argument("--label_file", default="label.txt")
    x.add_argument("--no_optimize", action="store_true", help="skip ONNX Runtime's transformer fusions")
    x.add_argument("--max_seq_length", type=int, default=None)
    x.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads during verification")
    x.add_argument("--overwrite", action="store_true", help="let --output_path replace a folder zhcls did not write")
    x.add_argument("--triton_repo", default=None, help="also write a Triton model repository here (tokenizer, "
                   "ONNX model with dynamic batching, post-processing: an ensemble for the NGC Triton container)")

    b = sub.add_parser("bench", help="dev accuracy and latency per backend (torch, onnx, onnx-fused, onnx-int8)")
    b.add_argument("--params_path", required=True, nargs="+", help="checkpoint or export folder(s); several: one plot")
    b.add_argument("--dataset_dir", required=True)
    b.add_argument("--dev_file", default="dev.txt")
    b.add_argument("--label_file", default="label.txt")
    b.add_argument("--backends", default="torch,onnx,onnx-fused,onnx-int8")
    b.add_argument("--batch_size", type=int, default=32)
    b.add_argument("--max_seq_length", type=int, default=128)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--repeats", type=int, default=3, help="runs per backend; medians are reported")
    b.add_argument("--max_samples", type=int, default=None, help="use the first N dev texts")
    b.add_argument("--json", default=None, help="also write the rows as JSON here")
    b.add_argument("--plot", default=None, help="accuracy-latency PNG here")

    c = sub.add_parser("convert", help="PaddleNLP / TensorFlow / HF checkpoint -> Hugging Face folder")
    c.add_argument("src", help="source folder (or TF checkpoint prefix)")
    c.add_argument("--from", dest="from_format", default="auto", choices=["auto", "hf", "paddle", "tf"])
    c.add_argument("--to", dest="dst", required=True, help="output folder (config.json, model.safetensors, vocab.txt)")
    c.add_argument("--vocab_file", default=None, help="vocab.txt when the source has none beside its weights")
    c.add_argument("--config", dest="config_path", default=None, help="TensorFlow only: the model's config JSON "
                   "when it is not beside the checkpoint")
    c.add_argument("--overwrite", action="store_true", help="let --to replace a folder zhcls did not write")

    i = sub.add_parser("inspect", help="format, architecture, parameters, unused / missing tensors of a checkpoint",
                       epilog="exit status: 0 convertible; 1 problems found (listed); 2 error (unreadable source)")
    i.add_argument("src", help="checkpoint folder (HF, PaddleNLP or TensorFlow)")
    i.add_argument("--from", dest="from_format", default="auto", choices=["auto", "hf", "paddle", "tf"])
    i.add_argument("--config", dest="config_path", default=None, help="TensorFlow only: the model's config JSON")

    sv = sub.add_parser("serve", help="HTTP server with cross-request dynamic batching (or Triton through PyTriton)")
    sv.add_argument("--params_path", default="./checkpoint", help="checkpoint folder (torch) or export folder (ONNX Runtime)")
    sv.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    sv.add_argument("--device", default="cpu", help="cpu, gpu or auto")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="HTTP port (triton: gRPC on port+1, metrics on port+2)")
    sv.add_argument("--name", default=None, help="model name in answers and URLs (default: the params folder's name)")
    sv.add_argument("--model_version", default=None, help="version in answers (default: a hash of the model files)")
    sv.add_argument("--max_batch_size", type=int, default=32, help="texts merged into one forward (1: no batching)")
    sv.add_argument("--batch_size", type=int, default=8, help="texts per forward within a merged batch, after sorting "
                    "by length (padding is per forward; raise it on GPU)")
    sv.add_argument("--max_delay_ms", type=float, default=2.0, help="how long a forward waits for more texts")
    sv.add_argument("--max_queue", type=int, default=256, help="requests waiting at most; more get 429")
    sv.add_argument("--max_texts_per_request", type=int, default=64, help="more get 413")
    sv.add_argument("--max_request_bytes", type=int, default=1 << 20, help="larger bodies get 413")
    sv.add_argument("--max_seq_length", type=int, default=None, help="truncate longer inputs (default: the model's)")
    sv.add_argument("--threads", type=int, default=0, help="CPU threads of the backend (default: its own)")
    sv.add_argument("--engine", default="uvicorn", choices=["uvicorn", "triton"],
                    help="uvicorn: zhcls's ASGI server; triton: NVIDIA Triton through PyTriton (the [triton] extra)")
    sv.add_argument("--no_access_log", dest="access_log", action="store_false", help="no line per request")

    _prune_parser(sub)
    _distill_parser(sub)
    _add_analysis_commands(sub)

    pt = sub.add_parser("pretrain", help="continue pretraining (or pretrain) an encoder on a text corpus: MLM, wwm, ELECTRA")
    pt.add_argument("--corpus", required=True, nargs="+", help="text files or folders, one sentence or document per line (streamed)")
    pt.add_argument("--model_name", "--model", dest="model_name", default="uer/chinese_roberta_L-4_H-256",
                    help="zoo name, hub id or folder to continue from (a zhcls pretrain folder keeps its heads)")
    pt.add_argument("--init_random", action="store_true", help="build --model's architecture with fresh weights")
    pt.add_argument("--vocab_file", default=None, help="vocab.txt to use instead of the model's")
    pt.add_argument("--vocab_from_data", action="store_true", help="build a WordPiece vocab from the corpus")
    pt.add_argument("--vocab_size", type=int, default=8000, help="size of the --vocab_from_data vocab")
    pt.add_argument("--objective", default="mlm", choices=["mlm", "electra"])
    pt.add_argument("--mask_prob", type=float, default=0.15)
    pt.add_argument("--whole_word_masking", action="store_true", help="mask whole Chinese words (jieba), as HFL's wwm models")
    pt.add_argument("--max_seq_length", type=int, default=128, help="lines are packed into sequences of this length")
    pt.add_argument("--save_dir", default="./pretrained", help="checkpoint folder (`zhcls train --model` takes it)")
    pt.add_argument("--overwrite", action="store_true", help="replace a --save_dir zhcls did not write")
    pt.add_argument("--device", default="auto")
    pt.add_argument("--batch_size", type=int, default=32)
    pt.add_argument("--learning_rate", type=float, default=None, help="default 3e-5 (pretrained), 5e-4 (--init_random)")
    pt.add_argument("--epochs", type=int, default=1)
    pt.add_argument("--max_steps", type=int, default=0, help="stop after N optimizer steps")
    pt.add_argument("--warmup_proportion", type=float, default=None)
    pt.add_argument("--weight_decay", type=float, default=0.0)
    pt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    pt.add_argument("--save_steps", type=int, default=0, help="also save the resumable state every N steps")
    pt.add_argument("--resume", action="store_true", help="continue the interrupted run in --save_dir")
    pt.add_argument("--logging_steps", type=int, default=5)
    pt.add_argument("--seed", type=int, default=3)
    pt.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"])
    pt.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    pt.add_argument("--cache_dir", default=None, help="hub download cache")

    cl = sub.add_parser("clue", help="CLUE classification baseline: fine-tune each task, dev table, submission files")
    cl.add_argument("--model_name", "--model", dest="model_name", required=True, help="zoo name, hub id or local folder")
    cl.add_argument("--tasks", default="afqmc,tnews,iflytek,cmnli,ocnli,cluewsc2020,csl", help="comma-separated CLUE tasks")
    cl.add_argument("--data_dir", default=None, help="local copies: DIR/TASK/ with CLUE's JSON files or a dataset folder "
                    "(default: download CLUE's zips into the cache)")
    cl.add_argument("--output_dir", default="./clue_output", help="checkpoints, {task}_predict.json, clue_results.json/png")
    cl.add_argument("--overwrite", action="store_true", help="replace an --output_dir zhcls did not write")
    cl.add_argument("--learning_rate", type=float, default=None, help="override every task's recipe")
    cl.add_argument("--batch_size", type=int, default=None, help="override every task's recipe")
    cl.add_argument("--epochs", type=int, default=None, help="override every task's recipe")
    cl.add_argument("--max_seq_length", type=int, default=None, help="override every task's recipe")
    cl.add_argument("--max_train_samples", type=int, default=0, help="first N training examples per task (a quick check)")
    cl.add_argument("--init_random", action="store_true", help="build --model's architecture with fresh weights")
    cl.add_argument("--vocab_file", default=None, help="vocab.txt to use instead of the model's")
    cl.add_argument("--device", default="auto")
    cl.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    cl.add_argument("--seed", type=int, default=3)
    cl.add_argument("--cache_dir", default=None, help="hub download cache")
    return parser


def _version() -> str:
    from zhcls import __version__

    return __version__


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear tqdm's progress bars."""

    def emit(self, record):
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(quiet: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("[zhcls] %(message)s"))
    logger = logging.getLogger("zhcls")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def cmd_train(args) -> None:
    from zhcls.training import TrainConfig, train

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "quiet", "no_baseline")}
    result = train(TrainConfig(**fields, progress=not args.quiet))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary line, from the first process
        print(f"best dev score {result.best_score:.4f} (epoch {result.best_epoch}) in {result.seconds:.0f}s; "
              f"checkpoint: {result.save_dir}")
        if not args.no_baseline:
            from zhcls.evaluation.baseline import baseline

            print(baseline(args.dataset_dir, train_file=args.train_file, dev_file=args.dev_file,
                           label_file=args.label_file, task=args.task, problem_type=args.problem_type).line())


def cmd_evaluate(args) -> None:
    from zhcls.evaluation import evaluate

    splits = None if args.splits is None else [s.strip() for s in args.splits.split(",") if s.strip()]
    from zhcls.evaluation.metrics import format_report

    _check_threshold(args)
    reports = evaluate(args.params_path, args.dataset_dir, splits=splits, output_dir=args.output_dir,
                       batch_size=args.batch_size, max_seq_length=args.max_seq_length, device=args.device,
                       backend=args.backend, train_file=args.train_file, dev_file=args.dev_file,
                       test_file=args.test_file, label_file=args.label_file, plot=not args.no_plot,
                       progress=not args.quiet, threshold=args.threshold, min_labels=args.min_labels,
                       max_labels=args.max_labels, hierarchy_policy=args.hierarchy_policy,
                       long_text=_long_text(args, args.params_path),
                       baseline=not args.no_baseline and (splits is None or "dev" in splits))
    for split, report in reports.items():
        print(format_report(report, title=split))
    if "baseline" in reports.get("dev", {}):
        dev, base = reports["dev"], reports["dev"]["baseline"]
        model_score = 100 * (dev["accuracy"] if "accuracy" in dev else dev["micro_f1"])
        print(f"dev {base['metric']}: model {model_score:.2f}, TF-IDF + linear SVM baseline {base['score']:.2f} "
              f"({base['seconds']:.1f}s)")


def cmd_predict(args) -> None:
    from zhcls.inference.streaming import PredictConfig

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "quiet")}
    config = PredictConfig(**fields, progress=not args.quiet)
    if config.engine == "ray":
        from zhcls.distributed import predict_files

        print(predict_files(config).line())
        return
    from zhcls.inference.streaming import predict_files

    print(predict_files(config).line())


def cmd_models(args) -> None:
    from zhcls.models.modeling import EncoderConfig, count_parameters
    from zhcls.models.zoo import MODELS

    header = f"{'name':34} {'layers/hidden/heads':>19} {'params':>8} {'source':>6}  published dev accuracy"
    print(header)
    print("-" * len(header))
    for m in MODELS:
        params = count_parameters(EncoderConfig.from_dict(m.config_dict()))
        shape = f"{m.layers}/{m.hidden}/{m.heads}"
        published = ", ".join(f"{k} {v}" for k, v in m.published.items())
        print(f"{m.name:34} {shape:>19} {params / 1e6:7.1f}M {m.source_format:>6}  {published}")


def cmd_export(args) -> None:
    from zhcls.errors import require

    for module in ("onnx", "onnxruntime"):
        require(module, "onnx", "zhcls export")
    from zhcls.deploy.export import OPSET, Int8Refused, export

    refused = None
    try:
        report = export(args.params_path, args.output_path, opset=args.opset or OPSET, fp16=args.fp16,
                        quantize=args.quantize, max_accuracy_drop=args.max_accuracy_drop,
                        dataset_dir=args.dataset_dir, optimize=not args.no_optimize,
                        max_seq_length=args.max_seq_length, dev_file=args.dev_file, label_file=args.label_file,
                        threads=args.threads, overwrite=args.overwrite, progress=not args.quiet)
        print(f"exported {args.params_path} -> {args.output_path}; report: {args.output_path}/export_report.json")
        print(json.dumps(report.get("summary", report), ensure_ascii=False, indent=1)[:2000])
    except Int8Refused as e:  # the fp32 export is written: the Triton repository can still be built from it
        refused = e
    if args.triton_repo:
        from zhcls.deploy.triton_repo import write_triton_repo

        repo = write_triton_repo(args.output_path, args.triton_repo, overwrite=args.overwrite)
        print(f"Triton model repository: {repo}")
    if refused:
        raise refused


def cmd_bench(args) -> None:
    from zhcls.deploy.bench import bench, format_table, plot
    from zhcls.errors import require
    from zhcls.evaluation.metrics import write_json

    if args.plot:  # before minutes of measuring
        require("matplotlib", "plot", "--plot")
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    rows = []
    for path in args.params_path:
        rows += bench(path, args.dataset_dir, backends=backends, batch_size=args.batch_size,
                      max_seq_length=args.max_seq_length, threads=args.threads, repeats=args.repeats,
                      max_samples=args.max_samples, dev_file=args.dev_file, label_file=args.label_file,
                      progress=not args.quiet)
    print(format_table(rows))
    if args.json:
        write_json(args.json, rows)
    if args.plot:
        print(f"plot: {plot(rows, args.plot)}")


def cmd_convert(args) -> None:
    from zhcls.models.convert import convert

    dst = convert(args.src, args.dst, from_format=args.from_format, vocab_file=args.vocab_file,
                  config_path=args.config_path, overwrite=args.overwrite)
    print(f"converted {args.src} -> {dst}")


def cmd_serve(args) -> None:
    from zhcls.deploy.serving import ServeConfig
    from zhcls.errors import require

    cfg = ServeConfig(**{k: v for k, v in vars(args).items() if k not in ("command", "quiet")})
    if cfg.engine == "triton":
        from zhcls.deploy.triton import run_triton

        return run_triton(cfg)
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "serve", "zhcls serve")
    from zhcls.deploy.serve import run_uvicorn

    run_uvicorn(cfg)


def cmd_inspect(args) -> int:
    from zhcls.models.inspection import format_inspect, inspect

    info = inspect(args.src, from_format=args.from_format, config_path=args.config_path)
    print(format_inspect(info))
    return 1 if info["problems"] else 0  # scripts can gate on it, as on a linter


def cmd_pretrain(args) -> None:
    from zhcls.pretrain import PretrainConfig, pretrain

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "quiet")}
    result = pretrain(PretrainConfig(**fields, progress=not args.quiet))
    if os.environ.get("RANK", "0") == "0":
        print(f"pretrained {result.global_step} steps in {result.seconds:.0f}s; fixed-mask score {result.best_score:.4f}; "
              f"checkpoint: {result.save_dir} (fine-tune it with `zhcls train --model {result.save_dir}`)")


def cmd_clue(args) -> None:
    from zhcls.clue import ClueConfig, clue, format_table

    overrides = {k: getattr(args, k) for k in ("learning_rate", "batch_size", "epochs", "max_seq_length")}
    fields = {k: v for k, v in vars(args).items() if k not in ("command", "quiet", *overrides)}
    results = clue(ClueConfig(**fields, overrides=overrides, progress=not args.quiet))
    print(format_table(results))
    print(f"results: {args.output_dir}/clue_results.json, {args.output_dir}/clue_results.png")


# -- zhcls prune: width pruning with distillation (PaddleNLP prune.py's flags), or --vocab -----------------

def _prune_parser(sub) -> None:
    r = sub.add_parser("prune", help="cut heads and FFN width (3/4, 2/3, 1/2), distil each width; or --vocab")
    r.add_argument("--params_dir", "--params_path", dest="params_dir", default="./checkpoint",
                   help="fine-tuned checkpoint folder to prune")
    r.add_argument("--dataset_dir", required=True)
    r.add_argument("--output_dir", default="./prune", help="width_mult_W/ folders, prune_report.json, PNG "
                   "(with --vocab: the pruned checkpoint folder)")
    r.add_argument("--width_mult_list", nargs="+", default=["3/4", "2/3", "1/2"],
                   help="widths, as fractions or decimals; each must keep a whole number of heads")
    r.add_argument("--per_device_train_batch_size", "--batch_size", dest="batch_size", type=int, default=32)
    r.add_argument("--per_device_eval_batch_size", dest="eval_batch_size", type=int, default=32)
    r.add_argument("--learning_rate", type=float, default=None, help="default 3e-5")
    r.add_argument("--num_train_epochs", "--epochs", dest="epochs", type=int, default=3)
    r.add_argument("--logging_steps", type=int, default=5)
    r.add_argument("--save_steps", type=int, default=0, help="also save the resumable state every N steps")
    r.add_argument("--seed", type=int, default=3)
    r.add_argument("--max_seq_length", type=int, default=128)
    r.add_argument("--device", default="auto", help="cpu, gpu or auto")
    r.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    r.add_argument("--early_stop", action="store_true", help="stop a width after --early_stop_nums epochs without gain")
    r.add_argument("--early_stop_nums", type=int, default=3)
    r.add_argument("--resume", action="store_true", help="continue the interrupted prune in --output_dir")
    r.add_argument("--overwrite", action="store_true", help="replace an --output_dir zhcls did not write")
    r.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the logit loss")
    r.add_argument("--hidden_weight", type=float, default=1.0, help="weight of the hidden-state MSE")
    r.add_argument("--no_bench", action="store_true", help="skip the ONNX latency measurement")
    r.add_argument("--train_file", default="train.txt")
    r.add_argument("--dev_file", default="dev.txt")
    r.add_argument("--label_file", default="label.txt")
    r.add_argument("--vocab", action="store_true", help="prune the vocabulary to the tokens the domain uses instead")
    r.add_argument("--corpus_files", nargs="*", default=[], help="--vocab: more texts whose tokens are kept")


def cmd_prune(args) -> None:
    if args.vocab:
        from zhcls.compress.vocab import prune_vocab

        report = prune_vocab(args.params_dir, args.dataset_dir, args.output_dir, corpus_files=args.corpus_files,
                             overwrite=args.overwrite, measure=not args.no_bench, threads=args.threads or None,
                             progress=not args.quiet)
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    from zhcls.compress.prune import PLOT, REPORT, PruneConfig, format_table, prune

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "quiet", "no_bench", "vocab", "corpus_files")}
    report = prune(PruneConfig(**fields, bench=not args.no_bench, progress=not args.quiet))
    print(format_table(report))
    print(f"report: {args.output_dir}/{REPORT}" + ("" if args.no_bench else f"; plot: {args.output_dir}/{PLOT}"))


# -- zhcls distill: task distillation from a fine-tuned teacher into a smaller student ------------------

def _distill_parser(sub) -> None:
    d = sub.add_parser("distill", help="distil a fine-tuned teacher into a smaller student (soft labels, hidden states)")
    d.add_argument("--teacher", required=True, help="fine-tuned teacher checkpoint folder")
    d.add_argument("--student", "--model", dest="student", required=True, help="zoo name, hub id or folder")
    d.add_argument("--init_random", action="store_true", help="the student starts from random weights")
    d.add_argument("--vocab_file", default=None, help="the student's vocab.txt with --init_random")
    d.add_argument("--dataset_dir", required=True)
    d.add_argument("--train_file", default="train.txt")
    d.add_argument("--dev_file", default="dev.txt")
    d.add_argument("--label_file", default="label.txt")
    d.add_argument("--unlabeled_file", default=None, help="extra texts, labelled by the teacher (e.g. data.txt)")
    d.add_argument("--save_dir", default="./distilled", help="where the student's best checkpoint is written")
    d.add_argument("--temperature", type=float, default=2.0)
    d.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher's soft labels (1 - alpha: gold)")
    d.add_argument("--hidden_weight", type=float, default=0.0,
                   help="> 0: also match hidden states through a projection (same vocab.txt needed)")
    d.add_argument("--max_seq_length", type=int, default=128)
    d.add_argument("--batch_size", type=int, default=32)
    d.add_argument("--learning_rate", type=float, default=None, help="default 3e-5 (pretrained), 5e-4 (--init_random)")
    d.add_argument("--epochs", type=int, default=10)
    d.add_argument("--early_stop", action="store_true")
    d.add_argument("--early_stop_nums", type=int, default=3)
    d.add_argument("--logging_steps", type=int, default=5)
    d.add_argument("--save_steps", type=int, default=0)
    d.add_argument("--seed", type=int, default=3)
    d.add_argument("--device", default="auto", help="cpu, gpu or auto")
    d.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    d.add_argument("--resume", action="store_true", help="continue the interrupted run in --save_dir")
    d.add_argument("--overwrite", action="store_true", help="replace a --save_dir zhcls did not write")


def cmd_distill(args) -> None:
    from zhcls.compress.distill import DistillConfig, distill

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "quiet")}
    result = distill(DistillConfig(**fields, progress=not args.quiet))
    print(f"best dev score {result.best_score:.4f} (epoch {result.best_epoch}) in {result.seconds:.0f}s; "
          f"student: {result.save_dir}")


# --- baseline, analyze, augment, explain (the analysis commands: parsers, commands, table entries) ---
def _add_analysis_commands(sub) -> None:
    bl = sub.add_parser("baseline", help="dev score of a character n-gram TF-IDF + linear SVM model, in seconds")
    _add_common_data(bl)
    bl.add_argument("--task", default="auto", choices=["auto", "text", "pair"])
    bl.add_argument("--problem_type", default="multi_class", choices=["multi_class", "multi_label", "hierarchical"])

    an = sub.add_parser("analyze", help="data quality: mislabelled training rows (dirty), weakly supported dev "
                                        "examples (sparse)")
    kinds = an.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    d = kinds.add_parser("dirty", help="rank training rows by how likely their label is wrong; write train_dirty.txt "
                                       "and train_clean.txt")
    d.add_argument("--dirty_num", type=int, default=None, help="rows to flag (default: confident learning's estimate)")
    d.add_argument("--method", default=None, choices=["oof", "model", "both"],
                   help="oof: out-of-fold TF-IDF baseline; model: the checkpoint's scores; both (default with "
                        "--params_path)")
    d.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold scores")
    s = kinds.add_parser("sparse", help="dev examples the training data barely supports; augment their support or "
                                        "pick rows of data.txt to annotate")
    s.add_argument("--strategy", default=None, choices=["augment", "annotate"])
    s.add_argument("--sparse_num", type=int, default=100, help="least supported dev examples to report")
    s.add_argument("--support_num", type=int, default=100, help="supporting training rows to augment")
    s.add_argument("--annotate_num", type=int, default=100, help="rows of --unlabeled_file to pick for annotation")
    s.add_argument("--support_k", type=int, default=5, help="support = mean similarity to this many neighbours")
    s.add_argument("--dev_file", default="dev.txt")
    s.add_argument("--unlabeled_file", default="data.txt", help="unlabelled rows in --dataset_dir (annotate)")
    s.add_argument("--aug_strategy", default="mix")
    s.add_argument("--create_n", type=int, default=2)
    s.add_argument("--aug_percent", type=float, default=0.1)
    for k in (d, s):
        k.add_argument("--dataset_dir", required=True)
        k.add_argument("--train_file", default="train.txt")
        k.add_argument("--label_file", default="label.txt")
        k.add_argument("--params_path", default=None, help="a trained checkpoint: adds its view (optional)")
        k.add_argument("--output_dir", default=None, help="where the files go (default: --dataset_dir)")
        k.add_argument("--seed", type=int, default=0)
        _add_runtime(k)

    g = sub.add_parser("augment", help="new training rows, labels kept: synonyms, homophones, insert, delete, swap")
    g.add_argument("--train_path", required=True, help="dataset file to augment")
    g.add_argument("--aug_path", required=True, help="where the augmented rows go (a dataset file)")
    g.add_argument("--label_file", default=None, help="default: label.txt beside --train_path")
    g.add_argument("--aug_strategy", default="mix", help="mix, or a comma list of synonym (substitute), homophone, "
                                                         "insert, delete, swap")
    g.add_argument("--create_n", type=int, default=2, help="new rows per row (at most)")
    g.add_argument("--aug_percent", type=float, default=0.1, help="share of words changed, in (0, 1]")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--task", default="auto", choices=["auto", "text", "pair"])
    g.add_argument("--problem_type", default="multi_class", choices=["multi_class", "multi_label", "hierarchical"])

    x = sub.add_parser("explain", help="word attributions (integrated gradients) and supporting training rows")
    x.add_argument("--params_path", default="./checkpoint", help="checkpoint folder")
    x.add_argument("--text", nargs="+", default=None, help="texts to explain (a pair: 'text_a<TAB>text_b')")
    x.add_argument("--data_file", default=None, help="or a file of texts, one per line")
    x.add_argument("--dataset_dir", default=None, help="adds the supporting training rows (sentence level)")
    x.add_argument("--train_file", default="train.txt")
    x.add_argument("--label_file", default="label.txt")
    x.add_argument("--support_num", type=int, default=3)
    x.add_argument("--steps", type=int, default=20, help="integrated-gradients steps")
    x.add_argument("--output_file", default="explain.html", help="HTML highlight of the attributions")
    _add_runtime(x)


def cmd_baseline(args) -> None:
    from zhcls.evaluation.baseline import baseline

    print(baseline(args.dataset_dir, train_file=args.train_file, dev_file=args.dev_file, label_file=args.label_file,
                   task=args.task, problem_type=args.problem_type).line())


def cmd_analyze(args) -> None:
    runtime = {"device": args.device, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
               "progress": not args.quiet}
    files = {"train_file": args.train_file, "label_file": args.label_file}
    if args.analysis == "dirty":
        from zhcls.analysis.dirty import analyze_dirty

        r = analyze_dirty(args.dataset_dir, params_path=args.params_path, method=args.method,
                          dirty_num=args.dirty_num, output_dir=args.output_dir, folds=args.folds, seed=args.seed,
                          **files, **runtime)
        print(f"{len(r.dirty)} suspicious rows (confident learning estimates {r.estimated_noisy}) -> {r.dirty_path}; "
              f"the other rows -> {r.clean_path}")
        return
    from zhcls.analysis.sparse import analyze_sparse

    r = analyze_sparse(args.dataset_dir, params_path=args.params_path, strategy=args.strategy,
                       sparse_num=args.sparse_num, support_num=args.support_num, annotate_num=args.annotate_num,
                       support_k=args.support_k, output_dir=args.output_dir, dev_file=args.dev_file,
                       unlabeled_file=args.unlabeled_file, aug_strategy=args.aug_strategy, create_n=args.create_n,
                       aug_percent=args.aug_percent, seed=args.seed, **files, **runtime)
    by_class = ", ".join(f"{label} {n}" for label, n in r.classes.items())
    print(f"{len(r.sparse)} least supported dev examples -> {r.sparse_path} ({by_class})")
    if r.support_path:
        print(f"{len(r.picked)} support rows -> {r.support_path}"
              + (f"; new training file -> {r.train_aug_path}" if r.train_aug_path else " (to annotate)"))


def cmd_augment(args) -> None:
    from zhcls.analysis.augment import augment_file

    n = augment_file(args.train_path, args.aug_path, label_file=args.label_file, strategies=args.aug_strategy,
                     create_n=args.create_n, aug_percent=args.aug_percent, seed=args.seed, task=args.task,
                     problem_type=args.problem_type, progress=not args.quiet)
    print(f"{n} augmented rows -> {args.aug_path}")


def cmd_explain(args) -> None:
    from zhcls import data
    from zhcls.analysis.explain import explain, format_explanation
    from zhcls.errors import ZhclsError
    from zhcls.inference.loading import read_meta

    if bool(args.text) == bool(args.data_file):
        raise ZhclsError("explain: give --text or --data_file (one of them)")
    if args.data_file:
        texts = data.predictor_inputs(data.read_texts(args.data_file, read_meta(args.params_path).get("task", "auto")))
    else:
        texts = [tuple(t.split("\t", 1)) if "\t" in t else t for t in args.text]
    for e in explain(args.params_path, texts, dataset_dir=args.dataset_dir, train_file=args.train_file,
                     label_file=args.label_file, support_num=args.support_num, steps=args.steps,
                     output_file=args.output_file, device=args.device, max_seq_length=args.max_seq_length,
                     batch_size=args.batch_size):
        print(format_explanation(e))
    print(f"highlight: {args.output_file}")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "models": cmd_models,
            "export": cmd_export, "bench": cmd_bench, "convert": cmd_convert, "inspect": cmd_inspect,
            "serve": cmd_serve, "prune": cmd_prune, "distill": cmd_distill, "baseline": cmd_baseline,
            "analyze": cmd_analyze, "augment": cmd_augment, "explain": cmd_explain, "pretrain": cmd_pretrain,
            "clue": cmd_clue}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.quiet or os.environ.get("RANK", "0") != "0")  # torchrun workers: warnings only
    from zhcls.errors import ZhclsError

    try:
        return COMMANDS[args.command](args) or 0
    except ZhclsError as e:
        print(f"zhcls: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("zhcls: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
