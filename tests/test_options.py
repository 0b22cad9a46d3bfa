"""Options declared once: every config field reaches the command line and back, run files (--config,
--print_config), and a checkpoint's run.yaml that reproduces its training run."""
import dataclasses
import json
import random
import typing

import pytest
import yaml
from safetensors.numpy import load_file
from tests.helpers import SMALL

from zhcls import options
from zhcls.cli import COMMANDS, build_parser, main
from zhcls.compress.config import PruneConfig
from zhcls.demo import DemoConfig


def leaf_commands(commands=COMMANDS, path=()):
    """(command words, config class) of every command that has options, `analyze dirty` included."""
    for name, command in commands.items():
        if command.kinds:
            yield from leaf_commands(command.kinds, (*path, name))
        elif command.config:
            yield (*path, name), command.config


LEAVES = list(leaf_commands())


def leaf_parser(words):
    parser = build_parser()
    for word in words:
        parser = next(a for a in parser._actions if a.dest.endswith(("command", "_kind"))).choices[word]
    return parser


def other_value(f, kind, spec):
    """A value of the field's type that is not its default (so that the flag, not the default, is tested)."""
    default = options.default_of(f)
    if kind is bool:
        return not default
    if spec.choices:
        return next(c for c in reversed(spec.choices) if c != default)
    if typing.get_origin(kind) is list:
        return [f"{f.name}_a", f"{f.name}_b"]
    if kind is int:
        return (default or 0) + 7
    if kind is float:
        return (default or 0.0) + 0.25
    return f"value_of_{f.name}"


def test_the_commands_cover_every_config_class():
    assert {"train", "evaluate", "predict", "export", "bench", "serve", "prune", "distill", "pretrain", "clue",
            "convert", "inspect", "baseline", "augment", "explain"} <= {w[-1] for w, _ in LEAVES}
    assert ("analyze", "dirty") in {w for w, _ in LEAVES} and ("analyze", "sparse") in {w for w, _ in LEAVES}


def demo_parser():
    parser = options.Parser(prog="python -m zhcls.demo")
    options.add_options(parser, DemoConfig)
    return parser


@pytest.mark.parametrize("words,cls", [*LEAVES, (("demo",), DemoConfig)],
                         ids=[" ".join(w) for w, _ in LEAVES] + ["python -m zhcls.demo"])
def test_every_field_reaches_the_command_line_and_back(words, cls):
    if cls is DemoConfig:
        parser, words, make = demo_parser(), (), demo_parser
    else:
        parser, make = leaf_parser(words), build_parser
    actions = {a.dest: a for a in parser._actions}
    declared = options.fields(cls)
    # Every field is an option, except the progress switch (-q) and two loop settings prune fixes itself.
    not_options = {f.name for f in dataclasses.fields(cls)} - {f.name for f, _, _ in declared}
    assert not_options <= ({"progress", "save_dir", "init_random"} if cls is PruneConfig else {"progress"}), not_options
    values, argv, positionals = {}, [], []
    for f, kind, spec in declared:
        assert f.name in actions, f"{' '.join(words)}: field {f.name} has no option"
        assert actions[f.name].help, f"{' '.join(words)} --{f.name}: no help"
        value = values[f.name] = other_value(f, kind, spec)
        if spec.positional:
            positionals.append(str(value))
            continue
        flag = actions[f.name].option_strings[-1]  # the last spelling: aliases are tested too
        if kind is bool:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *value]
        else:
            argv += [flag, str(value)]
    args = make().parse_args([*words, *argv, *positionals])
    assert options.from_args(cls, args) == cls(**values)
    # And the defaults: only the required options given, the config is the dataclass's own defaults.
    required = {f.name: values[f.name] for f, _, spec in declared if options.default_of(f) is dataclasses.MISSING}
    minimal = [t for f, _, spec in declared if f.name in required and not spec.positional
               for t in (actions[f.name].option_strings[0], *(values[f.name] if isinstance(values[f.name], list)
                                                              else [str(values[f.name])]))]
    positional = [str(values[f.name]) for f, _, spec in declared if spec.positional and f.name in required]
    assert options.from_args(cls, make().parse_args([*words, *minimal, *positional])) == cls(**required)


def print_config(capsys, *args) -> dict:
    assert main([*map(str, args), "--print_config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_run_file_round_trip_and_flags_override_it(tmp_path, capsys):
    effective = print_config(capsys, "train", "--dataset_dir", tmp_path, "--model", "rbt3", "--batch_size", 4,
                             "--early_stop", "--learning_rate", 5e-5)
    assert effective["model_name"] == "rbt3" and effective["batch_size"] == 4 and effective["early_stop"] is True
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump(effective), encoding="utf-8")
    assert print_config(capsys, "train", "--config", run) == effective
    # The command line wins over the file, wherever it stands.
    assert print_config(capsys, "train", "--batch_size", 8, "--config", run)["batch_size"] == 8
    # JSON is YAML: a JSON run file is read alike.
    (tmp_path / "run.json").write_text(json.dumps({"dataset_dir": str(tmp_path), "epochs": 2}), encoding="utf-8")
    got = print_config(capsys, "train", "--config", tmp_path / "run.json")
    assert got["epochs"] == 2 and got["dataset_dir"] == str(tmp_path) and got["batch_size"] == 32
    # Lists and store_false flags survive the trip.
    prune = print_config(capsys, "prune", "--dataset_dir", tmp_path, "--width_mult_list", "1/2", "--no_bench")
    run.write_text(yaml.safe_dump(prune), encoding="utf-8")
    assert print_config(capsys, "prune", "--config", run) == prune


def one_line_error(capsys, *args) -> str:
    assert main([*map(str, args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zhcls: error:"), err
    return err[0]


def test_bad_run_files_are_one_line_errors(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text("dataset_dir: data\nbatch_sise: 4\n", encoding="utf-8")
    assert "'batch_sise' is not an option" in one_line_error(capsys, "train", "--config", run)
    run.write_text("dataset_dir: data\nmodel: rbt3\n", encoding="utf-8")  # a flag's alias: the file names the field
    assert "'model': a run file names the option by its field, 'model_name'" in one_line_error(
        capsys, "train", "--config", run)
    run.write_text("dataset_dir: [unclosed\n", encoding="utf-8")
    assert f"{run}:2" in one_line_error(capsys, "train", "--config", run)
    assert "no such file" in one_line_error(capsys, "train", "--config", tmp_path / "missing.yaml").lower()
    # A bad choice, in the file or on the command line: argparse's one line and exit 2, as before.
    run.write_text("dataset_dir: data\ntask: poem\n", encoding="utf-8")
    for argv in (["--config", run], ["--dataset_dir", "d", "--task", "poem"]):
        with pytest.raises(SystemExit) as e:
            main(["train", *map(str, argv)])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("zhcls: error: train: argument --task: invalid choice: 'poem'")


def synthetic_dataset(folder):
    """Two labels a tiny model learns in a few steps: texts of 好-words and texts of 坏-words."""
    rng = random.Random(0)
    good, bad = "好棒赞美妙优秀喜欢", "坏差烂糟糕讨厌难"
    folder.mkdir()
    (folder / "label.txt").write_text("正面\n负面\n", encoding="utf-8")
    for name, n in (("train.txt", 48), ("dev.txt", 12)):
        rows = []
        for i in range(n):
            label, chars = ("正面", good) if i % 2 == 0 else ("负面", bad)
            rows.append("".join(rng.choice(chars) for _ in range(rng.randint(4, 12))) + f"\t{label}\n")
        (folder / name).write_text("".join(rows), encoding="utf-8")
    return folder


def test_a_checkpoint_run_file_reproduces_the_run(tmp_path):
    dataset = synthetic_dataset(tmp_path / "data")
    first, again, other_seed = tmp_path / "first", tmp_path / "again", tmp_path / "seed4"
    assert main(["-q", "train", "--dataset_dir", str(dataset), "--model", SMALL, "--init_random", "--vocab_from_data",
                 "--vocab_size", "120", "--max_seq_length", "16", "--batch_size", "8", "--epochs", "2",
                 "--device", "cpu", "--threads", "1", "--no_baseline", "--save_dir", str(first)]) == 0
    stored = yaml.safe_load((first / options.RUN_FILE).read_text(encoding="utf-8"))
    assert stored["vocab_size"] == 120 and stored["epochs"] == 2 and stored["save_dir"] == str(first)
    assert main(["-q", "train", "--config", str(first / options.RUN_FILE), "--save_dir", str(again)]) == 0
    assert main(["-q", "train", "--config", str(first), "--save_dir", str(other_seed), "--seed", "4"]) == 0
    weights = load_file(first / "model.safetensors")
    repeated = load_file(again / "model.safetensors")
    assert weights.keys() == repeated.keys()
    for name, tensor in weights.items():
        assert (tensor == repeated[name]).all(), name
    # The run file is complete: another seed is another run (so the equality above is not a given).
    reseeded = load_file(other_seed / "model.safetensors")
    assert any((tensor != reseeded[name]).any() for name, tensor in weights.items())
    copy = yaml.safe_load((again / options.RUN_FILE).read_text(encoding="utf-8"))
    assert {**copy, "save_dir": str(first)} == stored


def test_a_required_option_may_come_from_the_run_file_but_must_come(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text("epochs: 2\n", encoding="utf-8")
    assert "--dataset_dir" in one_line_error(capsys, "train", "--config", run)
    assert print_config(capsys, "train", "--config", run, "--dataset_dir", tmp_path)["epochs"] == 2
    run.write_text(f"dataset_dir: {tmp_path}\n", encoding="utf-8")
    assert print_config(capsys, "train", "--config", run)["dataset_dir"] == str(tmp_path)
    with pytest.raises(SystemExit) as e:  # without --config, argparse's own check, as before
        main(["train", "--epochs", "2"])
    assert e.value.code == 2 and "required: --dataset_dir" in capsys.readouterr().err
