"""`zhcls clue`: CLUE's classification baseline in one command. For each task: get the data (a local
copy or the official zip), convert it to a dataset folder, fine-tune with the task's recipe, keep
the best dev checkpoint, write the leaderboard's ``{task}_predict.json``, and print the table of the
ERNIE 3.0 model card (task scores and their average) beside the zoo's published numbers.

The recipes follow PaddleNLP's CLUE benchmark grid (its per-task epochs and max_seq_length, the
centre of its learning-rate and batch-size grid); any of them can be overridden for all tasks.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from zhcls import data
from zhcls.clue.config import ClueConfig
from zhcls.clue.download import locate
from zhcls.clue.tasks import Task, convert, parse_tasks
from zhcls.errors import ZhclsError
from zhcls.inference.loading import load
from zhcls.io import atomic_dir, atomic_open, check_output_dir
from zhcls.models import zoo
from zhcls.training.finetune import TrainConfig, train

log = logging.getLogger("zhcls")

RECIPES = {
    "afqmc": dict(learning_rate=3e-5, batch_size=32, epochs=3, max_seq_length=128),
    "tnews": dict(learning_rate=3e-5, batch_size=32, epochs=3, max_seq_length=128),
    "iflytek": dict(learning_rate=3e-5, batch_size=32, epochs=3, max_seq_length=128),
    "cmnli": dict(learning_rate=3e-5, batch_size=32, epochs=2, max_seq_length=128),
    "ocnli": dict(learning_rate=3e-5, batch_size=32, epochs=5, max_seq_length=128),
    "cluewsc2020": dict(learning_rate=3e-5, batch_size=16, epochs=50, max_seq_length=128),
    "csl": dict(learning_rate=3e-5, batch_size=32, epochs=5, max_seq_length=256),
}


def prepare(task: Task, cfg: ClueConfig, out: Path) -> Path:
    """The task's dataset folder: converted from CLUE's raw files, or the local folder as it is
    (a copy with the first ``max_train_samples`` training lines when asked)."""
    kind, src = locate(task, cfg.data_dir)
    folder = out / "data" / task.name
    if kind == "raw":
        convert(task, src, folder)
    elif cfg.max_train_samples:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("dev.txt", "label.txt", "data.txt", "ids.txt"):
            if (src / name).exists():
                shutil.copyfile(src / name, folder / name)
        shutil.copyfile(src / "train.txt", folder / "train.txt")
    else:
        return src
    if cfg.max_train_samples:
        lines = (folder / "train.txt").read_text(encoding="utf-8").splitlines(keepends=True)
        with atomic_open(folder / "train.txt") as f:
            f.write("".join(lines[:cfg.max_train_samples]))
    return folder


def predict_split(folder: Path, ds: data.DatasetFolder) -> tuple[str, list, list]:
    """("test" or "dev", inputs, CLUE ids): the test texts when the task has them, else dev (to check the format)."""
    if (folder / "data.txt").exists():
        examples = data.read_texts(folder / "data.txt", ds.task)
        ids = (folder / "ids.txt").read_text(encoding="utf-8").split()
        if len(ids) != len(examples):
            raise ZhclsError(f"{folder / 'ids.txt'}: {len(ids)} ids for {len(examples)} texts in data.txt")
        return "test", data.predictor_inputs(examples), [int(i) if i.isdigit() else i for i in ids]
    return "dev", data.predictor_inputs(ds.dev), list(range(len(ds.dev)))


def clue(config: ClueConfig | None = None, **kwargs) -> dict:
    """Run the tasks; returns (and writes to OUTPUT_DIR/clue_results.json) the scores and files."""
    cfg = config or ClueConfig(**kwargs)
    tasks = parse_tasks(cfg.tasks)
    out = check_output_dir(cfg.output_dir, flag="--output_dir", overwrite=cfg.overwrite,
                           inputs=[p for p in (cfg.data_dir, cfg.model_name, cfg.vocab_file) if p and Path(p).exists()])
    with atomic_dir(out):  # a fresh folder that the guard recognises as ours on the next run
        pass
    # Every task's data is read and checked before the first model is trained.
    folders = {t.name: prepare(t, cfg, out) for t in tasks}
    datasets = {name: data.load_dataset(folder) for name, folder in folders.items()}
    results = {"model": cfg.model_name, "init_random": cfg.init_random, "tasks": {}}
    for task in tasks:
        recipe = {**RECIPES[task.name], **cfg.overrides()}
        ds = datasets[task.name]
        log.info("CLUE %s: %d train / %d dev examples, recipe %s", task.name, len(ds.train), len(ds.dev), recipe)
        r = train(TrainConfig(dataset_dir=str(folders[task.name]), model_name=cfg.model_name, save_dir=str(out / task.name),
                              init_random=cfg.init_random, vocab_file=cfg.vocab_file, device=cfg.device,
                              threads=cfg.threads, seed=cfg.seed, cache_dir=cfg.cache_dir, progress=cfg.progress, **recipe))
        split, inputs, ids = predict_split(folders[task.name], ds)
        predictor = load(out / task.name, device=cfg.device, batch_size=64, max_seq_length=recipe["max_seq_length"])
        predictions = predictor.predict(inputs, progress=cfg.progress)
        submission = out / f"{task.name}_predict.json"
        with atomic_open(submission) as f:
            f.write("".join(json.dumps(task.submission(i, p["label"]), ensure_ascii=False) + "\n"
                            for i, p in zip(ids, predictions)))
        if split == "dev":
            log.warning("%s: no test split in %s; %s holds the dev predictions (to check the format)",
                        task.name, folders[task.name], submission.name)
        results["tasks"][task.name] = {"dev_accuracy": round(100 * r.best_score, 2), "best_epoch": r.best_epoch,
                                       "seconds": round(r.seconds, 1), "recipe": recipe, "train_examples": len(ds.train),
                                       "predicted_split": split, "submission": submission.name}
    scores = [t["dev_accuracy"] for t in results["tasks"].values()]
    results["average"] = round(sum(scores) / len(scores), 2)
    entry = zoo.find(cfg.model_name)
    results["published"] = {t.name: entry.published[t.name] for t in tasks if entry and t.name in entry.published}
    with atomic_open(out / "clue_results.json") as f:
        json.dump(results, f, ensure_ascii=False, indent=1)
    plot(results, out / "clue_results.png")
    return results


def format_table(results: dict) -> str:
    """The ERNIE 3.0 model card's layout: one row per model, AVG then the tasks; '-' where unknown."""
    names = list(results["tasks"])
    rows = [(f"{results['model']}{' (random init)' if results['init_random'] else ''}, this run",
             results["average"], [results["tasks"][n]["dev_accuracy"] for n in names])]
    published = results["published"]
    if published:
        avg = round(sum(published.values()) / len(published), 2) if len(published) == len(names) else None
        rows.append((f"{results['model']}, published", avg, [published.get(n) for n in names]))
    width = max(len(r[0]) for r in rows)
    header = f"{'model':{width}}  {'AVG':>6}  " + "  ".join(f"{n.upper():>11}" for n in names)

    def cell(v):
        return "-" if v is None else f"{v:.2f}"

    lines = [header, "-" * len(header)]
    lines += [f"{name:{width}}  {cell(avg):>6}  " + "  ".join(f"{cell(v):>11}" for v in values) for name, avg, values in rows]
    return "\n".join(lines) + "\n(dev accuracy %; submission files: " + ", ".join(
        t["submission"] for t in results["tasks"].values()) + ")"


def plot(results: dict, path: Path) -> Path | None:
    """Dev accuracy per task, this run beside the published numbers (skipped without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        log.info("matplotlib is not installed: no %s (pip install 'zhcls[plot]')", path.name)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["tasks"])
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [results["tasks"][n]["dev_accuracy"] for n in names], 0.4, label="this run")
    if results["published"]:
        ax.bar([i + 0.2 for i in x], [results["published"].get(n, 0) for n in names], 0.4, label="published")
    ax.set_xticks(list(x), [n.upper() for n in names])
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title(results["model"])
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
