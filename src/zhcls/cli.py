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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhcls", description="Chinese text classification with small Transformer "
                                     "encoders: train, evaluate, predict, export.")
    parser.add_argument("--version", action="version", version=f"zhcls {_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune a model on a dataset folder (keeps the best dev checkpoint)")
    _add_common_data(t)
    t.add_argument("--model_name", "--model", dest="model_name", default="ernie-3.0-medium-zh",
                   help="zoo name (see `zhcls models`), hub id, or local folder (HF, PaddleNLP or TensorFlow format)")
    t.add_argument("--save_dir", default="./checkpoint", help="where the best checkpoint is written")
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

    e = sub.add_parser("evaluate", help="accuracy, top-k, per-class P/R/F1, confusion matrix and bad cases")
    _add_common_data(e)
    e.add_argument("--test_file", default="test.txt", help="test file name in --dataset_dir (used when present)")
    e.add_argument("--params_path", default="./checkpoint", help="checkpoint or export folder")
    e.add_argument("--output_dir", default=None, help="where reports go (default: PARAMS_PATH/eval)")
    e.add_argument("--splits", default="train,dev,test", help="comma-separated splits to evaluate")
    e.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    _add_runtime(e)

    p = sub.add_parser("predict", help="label every line of data.txt")
    p.add_argument("--dataset_dir", default=".", help="folder holding --data_file")
    p.add_argument("--data_file", default="data.txt", help="one text (or text_a<TAB>text_b) per line")
    p.add_argument("--label_file", default=None, help="optional: check the model's labels against this label.txt")
    p.add_argument("--params_path", default="./checkpoint", help="checkpoint or export folder")
    p.add_argument("--output_file", default="output.txt", help="text<TAB>label<TAB>confidence per input line")
    p.add_argument("--topk", type=int, default=1, help="also write the k best labels")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    _add_runtime(p)

    sub.add_parser("models", help="list the model zoo")

    x = sub.add_parser("export", help="verified ONNX export (fused graph, optional INT8) for ONNX Runtime")
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

    i = sub.add_parser("inspect", help="format, architecture, parameters, unused / missing tensors of a checkpoint")
    i.add_argument("src", help="checkpoint folder (HF, PaddleNLP or TensorFlow)")

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

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "quiet")}
    result = train(TrainConfig(**fields, progress=not args.quiet))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary line, from the first process
            print(f"best dev score {result.best_score:.4f} (epoch {result.best_epoch}) in {result.seconds:.0f}s; "
              f"checkpoint: {result.save_dir}")


def cmd_evaluate(args) -> None:
    from zhcls.evaluation import evaluate

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = set(splits) - {"train", "dev", "test"}
    if bad:
        from zhcls.errors import ZhclsError

        raise ZhclsError(f"--splits: unknown split(s) {', '.join(sorted(bad))}; choose from train, dev, test")
    from zhcls.evaluation.metrics import format_report

    reports = evaluate(args.params_path, args.dataset_dir, splits=splits, output_dir=args.output_dir,
                       batch_size=args.batch_size, max_seq_length=args.max_seq_length, device=args.device,
                       backend=args.backend, train_file=args.train_file, dev_file=args.dev_file,
                       test_file=args.test_file, label_file=args.label_file, progress=not args.quiet)
    for split, report in reports.items():
        print(format_report(report, title=split))


def cmd_predict(args) -> None:
    from pathlib import Path

    from zhcls import data
    from zhcls.errors import ZhclsError
    from zhcls.inference.loading import load, read_meta
    from zhcls.inference.predictor import write_predictions

    # Validate the input before loading the model.
    meta = read_meta(args.params_path)
    examples = data.read_texts(Path(args.dataset_dir) / args.data_file, meta.get("task", "auto"))
    if not examples:
        raise ZhclsError(f"{Path(args.dataset_dir) / args.data_file}: no text to predict")
    predictor = load(args.params_path, backend=args.backend, device=args.device, batch_size=args.batch_size,
                     max_seq_length=args.max_seq_length)
    if args.label_file:
        labels = data.read_labels(Path(args.dataset_dir) / args.label_file, predictor.problem_type)
        if labels != predictor.labels:
            raise ZhclsError(f"{args.label_file}: labels differ from the model's ({', '.join(predictor.labels[:5])}, ...)")
    texts = data.predictor_inputs(examples)
    results = predictor.predict(texts, topk=args.topk, progress=not args.quiet)
    write_predictions(args.output_file, texts, results, topk=args.topk)
    print(f"{len(results)} predictions written to {args.output_file}")


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
    from zhcls.deploy.export import OPSET, export

    report = export(args.params_path, args.output_path, opset=args.opset or OPSET, fp16=args.fp16,
                    quantize=args.quantize, max_accuracy_drop=args.max_accuracy_drop, dataset_dir=args.dataset_dir,
                    optimize=not args.no_optimize, max_seq_length=args.max_seq_length, dev_file=args.dev_file,
                    label_file=args.label_file, threads=args.threads, progress=not args.quiet)
    print(f"exported {args.params_path} -> {args.output_path}; report: {args.output_path}/export_report.json")
    print(json.dumps(report.get("summary", report), ensure_ascii=False, indent=1)[:2000])


def cmd_bench(args) -> None:
    from zhcls.deploy.bench import bench, format_table, plot
    from zhcls.evaluation.metrics import write_json

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

    print(f"converted {args.src} -> {convert(args.src, args.dst, from_format=args.from_format)}")


def cmd_inspect(args) -> None:
    from zhcls.models.inspection import format_inspect, inspect

    print(format_inspect(inspect(args.src)))


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


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "models": cmd_models,
            "export": cmd_export, "bench": cmd_bench, "convert": cmd_convert, "inspect": cmd_inspect,
            "pretrain": cmd_pretrain, "clue": cmd_clue}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.quiet or os.environ.get("RANK", "0") != "0")  # torchrun workers: warnings only
    from zhcls.errors import ZhclsError

    try:
        COMMANDS[args.command](args)
    except ZhclsError as e:
        print(f"zhcls: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zhcls: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
