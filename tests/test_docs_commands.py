"""The docs cannot rot: every ``metakd ...`` command shown in README.md and docs/*.md names a subcommand that
exists (its ``--help`` works) and only flags that subcommand has; every config it names, and every config
name or pattern written in code spans, exists among the shipped configs; every script, example, test and
source file the docs point at exists, and every link (and heading anchor) between pages resolves.
Fast: parsing only, no training.

Placeholders (RUN, ROOT, NAME, HOST, A, B, ``...``, ``$VAR``, ``<dir>``) are skipped where a value goes."""
import contextlib
import fnmatch
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest

from metakd.cli import build_parser, main
from metakd.config import resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _listed(what: str) -> list:
    """The names `metakd list <what>` prints (the CLI is the one place that knows where each kind lives)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", what]) == 0
    return [n.strip() for n in out.getvalue().split(":", 1)[1].split(",") if n.strip()]


CONFIG_TAKERS = {"train": "configs", "config": "configs", "distill": "distill-configs", "pretrain": "pretrain-configs"}
# metakd at a command position: a line's start (after an optional path such as .venv/bin/), after && or ;,
# or after `-m` (python -m metakd, torchrun ... -m metakd)
COMMAND = re.compile(r"(?:^\s*(?:[\w./-]*/)?|(?:&&|;)\s*(?:[\w./-]*/)?|\s-m\s+)metakd\s+([a-z][\w-]*)([^\n`&|;]*)", re.M)


def _code(text: str):
    """(fenced code, inline code spans) of a markdown page; fenced lines with a trailing backslash joined."""
    fenced, rest = [], []
    for i, part in enumerate(re.split(r"^```[^\n]*\n", text, flags=re.M)):
        (fenced if i % 2 else rest).append(part)
    blocks = [re.sub(r"\\\n\s*", " ", b) for b in fenced]
    blocks = ["\n".join(line.split(" #")[0] if not line.lstrip().startswith("#") else "" for line in b.splitlines())
              for b in blocks]
    spans = [s for r in rest for s in re.findall(r"`([^`\n]+)`", r)]
    return blocks, spans


def _commands(pages=None):
    """(page, subcommand, argument tokens) for every metakd command shown; pages: {name: markdown text}."""
    pages = pages if pages is not None else {p.relative_to(ROOT): p.read_text() for p in PAGES}
    found = []
    for page, text in pages.items():
        blocks, spans = _code(text)
        for snippet in blocks + spans:
            for m in COMMAND.finditer(snippet):
                try:
                    tokens = shlex.split(m.group(2))
                except ValueError:
                    tokens = m.group(2).split()
                found.append((page, m.group(1), tokens))
    return found


def _placeholder(token: str) -> bool:
    return (re.fullmatch(r"[A-Z][A-Z0-9_]*", token) is not None or "..." in token or "$" in token
            or any(c in token for c in "<>[]"))


def _subparsers():
    parser = build_parser()
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


COMMANDS = _commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) > 30
    assert {c for _, c, _ in COMMANDS} >= {"train", "eval", "demo", "list", "robustness", "compare", "pretrain",
                                           "distill", "data", "config"}


@pytest.mark.parametrize("command", sorted({c for _, c, _ in COMMANDS}))
def test_every_shown_subcommand_exists_and_has_help(command, capsys):
    assert command in _subparsers(), f"`metakd {command}` is shown in the docs but is no subcommand"
    assert main([command, "--help"]) == 0
    assert f"usage: metakd {command}" in capsys.readouterr().out


def _command_problems(commands):
    """What is wrong with the given (page, subcommand, tokens): unknown options, unknown configs."""
    subs, problems = _subparsers(), []
    for page, command, tokens in commands:
        if command not in subs:
            continue  # reported by the test above
        flags = {s for a in subs[command]._actions for s in a.option_strings}
        for t in tokens:
            if t.startswith("--") and t.split("=")[0] not in flags:
                problems.append(f"{page}: `metakd {command} ... {t}`: no such option")
        positional = [t for t in tokens if not t.startswith("-") and "=" not in t and not _placeholder(t)]
        if command in CONFIG_TAKERS and positional:
            name = positional[0]
            if command in ("train", "config"):
                try:
                    resolve_config_path(name)
                except Exception as exc:  # noqa: BLE001 - report every failure at once
                    problems.append(f"{page}: `metakd {command} {name}`: {exc}")
            elif name not in _listed(CONFIG_TAKERS[command]):
                problems.append(f"{page}: `metakd {command} {name}`: no such {command} config")
    return problems


def test_every_shown_flag_exists_and_every_named_config_exists():
    assert _command_problems(COMMANDS) == []


def test_the_checks_catch_a_rotten_command():
    """The checker itself: a wrong flag, a missing config and an unknown subcommand are all reported."""
    page = ("Run `metakd train maml_glyphs_5w9s` or\n\n```bash\n.venv/bin/metakd eval RUN --no-such-flag\n"
            "metakd pretrain pretrain_nope && metakd frobnicate\n```\n")
    commands = _commands({"fake.md": page})
    assert {c for _, c, _ in commands} == {"train", "eval", "pretrain", "frobnicate"}
    problems = " | ".join(_command_problems(commands))
    assert "maml_glyphs_5w9s" in problems and "--no-such-flag" in problems and "pretrain_nope" in problems
    assert "frobnicate" not in _subparsers()
    assert _config_problems({"fake.md": "`{maml,nope}_glyphs_5w1s`"}) == \
        ["fake.md: `{maml,nope}_glyphs_5w1s` names 'nope_glyphs_5w1s', which is no shipped config"]


def _expand(pattern: str):
    """Shell brace expansion of one pattern: a_{x,y}_{1,2} -> a_x_1, a_x_2, a_y_1, a_y_2."""
    parts = re.split(r"(\{[^{}]*\})", pattern)
    choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
    return ["".join(c) for c in itertools.product(*choices)]


LOOKS_LIKE_CONFIG = re.compile(r"[a-z0-9_{},*]*(?:_5w[15{][^`\s]*|demo_[a-z]+|pretrain_[a-z0-9_{},*]+|"
                               r"distill_[a-z0-9_{},*]*glyphs[a-z0-9_{},*]*|distill_cifar100_[a-z0-9_{},*]+)")


def _config_problems(pages, counter=None):
    """Config names (or brace / glob patterns of them) in code spans that match no shipped config."""
    names = set(_listed("configs")) | set(_listed("distill-configs")) | set(_listed("pretrain-configs"))
    problems = []
    for page, text in pages.items():
        for span in _code(text)[1]:
            if not LOOKS_LIKE_CONFIG.fullmatch(span):
                continue
            for name in _expand(span):
                if counter is not None:
                    counter.append(name)
                if not fnmatch.filter(names, name):
                    problems.append(f"{page}: `{span}` names {name!r}, which is no shipped config")
    return problems


def test_every_config_name_written_in_code_exists():
    checked = []
    assert _config_problems({p.relative_to(ROOT): p.read_text() for p in PAGES}, checked) == []
    assert len(checked) > 140  # the brace patterns of the config families expand to every shipped name


def test_every_file_the_docs_point_at_exists():
    problems = []
    for page in PAGES:
        text = page.read_text()
        for path in set(re.findall(r"(?<![\w/.-])((?:benchmarks|examples|tests|scripts|metakd)/[\w./-]+\.(?:py|sh))", text)):
            if not (ROOT / path).is_file():
                problems.append(f"{page.relative_to(ROOT)}: {path} does not exist")
        for target, anchor in set(re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text)):
            if re.match(r"[a-z]+://", target):
                continue
            linked = (page.parent / target) if target else page
            if not linked.exists():
                problems.append(f"{page.relative_to(ROOT)}: link {target} does not exist")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
                problems.append(f"{page.relative_to(ROOT)}: link {target}#{anchor}: no such heading")
    assert problems == []


def _anchors(markdown: str) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    _, *rest = re.split(r"^```[^\n]*\n", markdown, flags=re.M)
    prose = "".join(part for i, part in enumerate([_] + rest) if i % 2 == 0)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", prose, flags=re.M)}
