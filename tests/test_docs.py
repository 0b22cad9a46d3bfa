"""The documentation can be trusted: its links resolve, its command lines parse, its figures have their files.

Reads README.md and docs/*.md as a reader on GitHub sees them. No torch, no ../shared: the parser is
built by ``zhcls.cli.build_parser()``, which imports neither.
"""
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from zhcls.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BENCHMARKS = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "benchmarks" / "results"

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&"}


def split_page(text: str, keep_inline_code: bool = False) -> tuple[list[str], list[list[str]]]:
    """The page's prose lines (inline code removed unless asked) and its fenced code blocks."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if FENCE.match(line):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line if keep_inline_code else re.sub(r"`[^`]*`", "", line))
    assert block is None, "a code fence is never closed"
    return prose, blocks


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in headings(page):
        slug = github_slug(line)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def headings(page: Path) -> list[str]:
    """Heading texts outside code blocks (backticks kept out of the slug by github_slug)."""
    texts, in_code = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            texts.append(m.group(1))
    return texts


def links(page: Path) -> list[str]:
    prose, _ = split_page(page.read_text(encoding="utf-8"))
    return [m.group(1) for line in prose for m in LINK.finditer(line)]


def command_lines(page: Path) -> list[str]:
    """Every logical line of the page's code blocks (backslash continuations joined)."""
    _, blocks = split_page(page.read_text(encoding="utf-8"))
    lines = []
    for block in blocks:
        pending = ""
        for line in block:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            lines.append(pending + line)
            pending = ""
        if pending:
            lines.append(pending)
    return lines


def zhcls_arguments(line: str) -> list[str] | None:
    """The arguments after `zhcls` (or `-m zhcls`, as torchrun and python run it), or None for other lines."""
    try:
        tokens = shlex.split(line.strip().removeprefix("$ "), comments=True)
    except ValueError:  # not shell: a JSON or Python line in a code block
        return None
    for i, token in enumerate(tokens):
        if (i == 0 and token == "zhcls") or (i > 0 and token == "zhcls" and tokens[i - 1] == "-m"):
            rest = tokens[i + 1:]
            cut = next((j for j, t in enumerate(rest) if t in SHELL_OPERATORS), len(rest))
            return rest[:cut]
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for line in command_lines(page):
            arguments = zhcls_arguments(line)
            if arguments is not None:
                found.append((f"{page.relative_to(REPO)}: {line.strip()}", arguments))
    return found


def inline_commands(page: Path) -> list[str]:
    """`zhcls ...` spans in the prose (often fragments: `zhcls train --model DIR`), joined across lines."""
    prose, _ = split_page(page.read_text(encoding="utf-8"), keep_inline_code=True)
    return [" ".join(span.split()) for span in re.findall(r"`(zhcls\s[^`]+)`", "\n".join(prose))]


def help_text(parser, command: tuple[str, ...]) -> str | None:
    """What `zhcls COMMAND --help` prints, or None when COMMAND is not a command."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args([*command, "--help"])
    except SystemExit as e:
        return out.getvalue() if e.code == 0 else None
    return None


def unknown_flags(parser, arguments: list[str], helps: dict) -> list[str]:
    """The `--flags` among arguments that their command does not have, spelt out: argparse would also
    take an unambiguous prefix (`--epoch` for `--epochs`), which is not the documented name. The
    command is the longest run of leading words that the parser knows (`analyze dirty|sparse`: analyze)."""
    words = arguments[:next((i for i, a in enumerate(arguments) if a.startswith("-")), len(arguments))]
    for n in range(len(words), -1, -1):
        command = tuple(words[:n])
        if command not in helps:
            helps[command] = help_text(parser, command)
        if helps[command] is not None:
            break
    flags = [a.split("=")[0] for a in arguments if a.startswith("--")]
    return [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", helps[command])]


def refusal(parser, arguments: list[str], helps: dict) -> str | None:
    """Why the parser refuses these arguments as a whole command line, or None."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(arguments)
    except SystemExit as e:
        return stderr.getvalue().strip().splitlines()[-1] if e.code else None
    if args.command is None:
        return "no command"
    unknown = unknown_flags(parser, arguments, helps)
    return f"not a flag of this command (a prefix?): {unknown}" if unknown else None


def test_the_pages_exist_and_the_readme_stays_a_front_door():
    names = {page.name for page in PAGES}
    assert {"README.md", "benchmarks.md", "training.md", "architecture.md"} <= names
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.name}: " + "; ".join(broken_links(page))


def test_the_link_check_would_catch_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## `zhcls train` (flags)\n\n```\n# not a heading\n```\n",
                                   encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#zhcls-train-flags) [top](#b) [web](https://example.org/x) `[code](nowhere.md)`\n"
                    "# B\n[file](c.md) [anchor](a.md#not-a-heading) [self](#nope)\n", encoding="utf-8")
    assert broken_links(page) == ["c.md: no such file", "a.md#not-a-heading: no heading with that anchor in a.md",
                                  "#nope: no heading with that anchor in b.md"]


def test_every_documented_command_line_parses():
    commands = documented_commands()
    assert len(commands) > 30, "the docs lost their command lines, or this test stopped finding them"
    parser, helps = build_parser(), {}
    failures = [f"{where}\n    {why}" for where, arguments in commands if (why := refusal(parser, arguments, helps))]
    assert not failures, "command lines in the docs that the parser refuses:\n" + "\n".join(failures)


def test_every_inline_command_names_real_flags():
    parser, helps = build_parser(), {}
    spans = [(page.name, span) for page in PAGES for span in inline_commands(page)]
    assert len(spans) > 20, "the docs lost their inline commands, or this test stopped finding them"
    wrong = [f"{name}: `{span}`: {bad}" for name, span in spans
             if (bad := unknown_flags(parser, shlex.split(span)[1:], helps))]
    assert not wrong, "flags in the docs' prose that the command does not have:\n" + "\n".join(wrong)


def test_the_parser_check_would_catch_a_wrong_flag():
    """The check above is only worth something if a misspelt flag, a prefix or a wrong command fails it."""
    parser, helps = build_parser(), {}
    assert refusal(parser, ["train", "--dataset_dir", "d", "--epochs", "3"], helps) is None
    assert refusal(parser, ["analyze", "dirty", "--dataset_dir", "d", "--dirty_num", "9"], helps) is None
    for arguments in (["train", "--dataset_dir", "d", "--epochz", "3"], ["train", "--dataset_dir", "d", "--epoch", "3"],
                      ["trian", "--dataset_dir", "d"], ["predict", "--params_path"]):
        assert refusal(parser, arguments, helps), arguments
    assert unknown_flags(parser, ["analyze", "dirty", "--dirty_num", "9"], helps) == []
    assert unknown_flags(parser, ["analyze", "dirty|sparse"], helps) == []
    assert unknown_flags(parser, ["train", "--model", "DIR", "--epoch"], helps) == ["--epoch"]
    assert zhcls_arguments("torchrun --nproc_per_node 2 -m zhcls train --save_dir ckpt  # two ranks") == [
        "train", "--save_dir", "ckpt"]
    assert zhcls_arguments("curl -s localhost:8000/v1/classify") is None


def test_every_figure_has_its_committed_result_file():
    text = BENCHMARKS.read_text(encoding="utf-8")
    named = set(re.findall(r"benchmarks/results/([\w.\-/]+\.(?:json|png))", text))
    assert named, "docs/benchmarks.md names no result file"
    missing = sorted(name for name in named if not (RESULTS / name).is_file())
    assert not missing, f"docs/benchmarks.md names result files that are not committed: {missing}"
    undocumented = sorted(str(path.relative_to(RESULTS)) for path in RESULTS.rglob("*.json")
                          if str(path.relative_to(RESULTS)) not in named)
    assert not undocumented, f"result files that docs/benchmarks.md does not show: {undocumented}"
