"""The documentation: the MkDocs site builds with --strict, every Python example in docs/ and the
README runs, every page is in the nav, no page names an issue by number, and the README stays a
front page.

Examples run in a temporary folder, so the model directories they create land there. The ones
that train use the real MNIST ($CNN_MNIST_DATA or ~/.cache/cnn_mnist, downloaded on first use)
for a hundred steps; the export page's examples read a model.onnx and a model.safetensors,
which a module fixture writes once with the CLI from a 20-step model.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pytest_examples import CodeExample, EvalExample, find_examples

from conftest import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 150
ISSUE_NUMBER = re.compile(r"\bissues? #?\d+", re.IGNORECASE)
EXPORTED_FILES = ("model.onnx", "model.safetensors")
ARTIFACTS = ROOT / "test-artifacts"


class _MkDocsLoader(yaml.SafeLoader):
    """yaml.safe_load, plus MkDocs's ``!!python/name:`` tags read as plain strings (never imported)."""


_MkDocsLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def python_examples() -> list:
    """Every ```python (or ```py) block of docs/ and README.md, marked real_data where it needs MNIST."""
    params = []
    for example in find_examples(str(DOCS), str(README)):
        if example.prefix.split()[0] not in ("py", "python"):
            continue  # e.g. ```pycon
        needs_data = "load_mnist" in example.source or any(name in example.source for name in EXPORTED_FILES)
        marks = [pytest.mark.real_data] if needs_data else []
        params.append(pytest.param(example, id=f"{example.path.relative_to(ROOT)}:{example.start_line}", marks=marks))
    return params


def run_cli(*args: str, cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "cnn_mnist", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"cnn-mnist {' '.join(args)} failed:\n{result.stderr}"


@pytest.fixture(scope="module")
def exported_models(tmp_path_factory) -> Path:
    """A folder holding model.onnx and model.safetensors, exported from a 20-step model on real MNIST."""
    folder = tmp_path_factory.mktemp("exported")
    run_cli("train", "-q", "--model-dir", "model", "--steps", "20", "--eval-every", "0",
            "--log-probabilities-every", "0", cwd=folder)
    for name in EXPORTED_FILES:
        fmt = name.rsplit(".", 1)[1]
        run_cli("export", "-q", "--model-dir", "model", "--format", fmt, "--output", name, cwd=folder)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as `mkdocs build --strict` writes it (any warning fails the build)."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return site_dir


def test_the_site_builds_without_a_warning(site):
    assert (site / "index.html").is_file() and (site / "architecture" / "index.html").is_file()


@pytest.mark.browser
def test_the_architecture_diagram_renders_offline(site):
    """The Mermaid diagram becomes an SVG in Chromium, from the site's own copy of Mermaid (no CDN:
    every request outside the site is refused), with every layer's box in it."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (make install-test)")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set CNN_MNIST_CHROMIUM to another binary)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            # Material draws each diagram in a closed shadow root; opened here so the test can look in.
            page.add_init_script("const attach = Element.prototype.attachShadow; Element.prototype.attachShadow ="
                                 " function (options) { return attach.call(this, {...options, mode: 'open'}); };")
            outside = []
            page.route(lambda url: not url.startswith("file://"),
                       lambda route: outside.append(route.request.url) or route.abort())
            page.goto((site / "architecture" / "index.html").as_uri())
            diagram = page.wait_for_selector(".mermaid svg", timeout=30_000)
            text = diagram.text_content()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "docs-architecture.png", full_page=True)
        finally:
            browser.close()
    for layer in ("cli", "experiment", "use", "training", "model", "data", "kernels", "errors"):
        assert layer in text, (layer, text)
    assert not any("mermaid" in url for url in outside), outside


def test_there_are_python_examples_to_run():
    assert python_examples(), "no ```python block found in docs/ or README.md"


@pytest.mark.parametrize("example", python_examples())
def test_python_example_runs(example: CodeExample, eval_example: EvalExample, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    for name in EXPORTED_FILES:
        if name in example.source:
            shutil.copy(request.getfixturevalue("exported_models") / name, tmp_path / name)
    eval_example.run(example)


def test_no_page_names_an_issue_by_number():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in [*pages(), README]
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if ISSUE_NUMBER.search(line)]
    assert not found, "issue numbers belong in commits, not in the documentation:\n" + "\n".join(found)


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES} and move detail into docs/")


def test_every_command_line_flag_is_documented():
    """Every command's flags somewhere in docs/, as `--flag` (train's are in its generated table, below)."""
    import argparse

    from cnn_mnist.cli import build_parser

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    everywhere = "\n".join(path.read_text(encoding="utf-8") for path in pages())
    missing = [f"{name} {flag}"
               for name, parser in commands.choices.items() if name != "train"
               for action in parser._actions if action.help != argparse.SUPPRESS
               for flag in action.option_strings if flag not in ("-h", "--help") and f"`{flag}" not in everywhere]
    assert not missing, f"flags the documentation does not name (as `{{flag}}`): {missing}"


def test_the_train_page_tables_every_train_flag_with_its_help(site):
    """The built train page's table has a row per flag of `cnn-mnist train`, in --help's order, saying
    what --help says (less the tutorial's value, which has its own column); train.md holds no copy."""
    import argparse
    import html

    from cnn_mnist.cli import build_parser

    train = next(action for action in build_parser()._actions
                 if isinstance(action, argparse._SubParsersAction)).choices["train"]
    page = (site / "train" / "index.html").read_text(encoding="utf-8")
    table = page[page.index('id="every-flag"'):]
    table = table[:table.index("</table>")]
    rows = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", row)).split())
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)]
    flag_rows = [row for row in rows if row.startswith("-")]
    actions = [action for action in train._actions if action.help != argparse.SUPPRESS and action.dest != "help"]
    assert len(flag_rows) == len(actions), flag_rows
    for row, action in zip(flag_rows, actions, strict=True):
        help_text = " ".join(re.split(r" \((?:tutorial|default): [^)]*\)$", action.help)[0].split())
        assert row.startswith(action.option_strings[0]) and help_text in row, (row, action.help)
    source = (DOCS / "train.md").read_text(encoding="utf-8")
    assert not [flag for action in actions for flag in action.option_strings if f"| `{flag}" in source]


COMMAND_LINE = re.compile(r"(?:^|`|\$ )((?:\.venv/bin/)?cnn-mnist(?: [^`\n]*)?|python -m cnn_mnist(?: [^`\n]*)?|"
                          r"(?:\.venv/bin/)?python benchmarks/\w+\.py(?: [^`\n]*)?)", re.MULTILINE)


def documented_command_lines() -> list[tuple[str, str]]:
    """(page, command line) for every `cnn-mnist ...`, `python -m cnn_mnist ...` and `python
    benchmarks/X.py ...` in README.md and docs/, in code blocks and inline, comments cut off."""
    found = []
    for path in [README, *pages()]:
        for match in COMMAND_LINE.finditer(path.read_text(encoding="utf-8")):
            line = re.split(r"\s#\s|\s\||\s&&|\s>|\s2>", match.group(1))[0].strip()
            found.append((path.name, line))
    return found


def flags_of(words: list[str]) -> list[str]:
    return [word.split("=")[0] for word in words if word.startswith("-") and word not in ("-", "--")]


def benchmark_helps(scripts: set[str]) -> dict[str, str]:
    """Each existing script's --help, as a reader would run it: two at a time, since each imports
    torch (~1.5 s) and this machine has two cores (22 s one at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    def help_of(script: str) -> str:
        return subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                              timeout=120).stdout

    found = sorted(script for script in scripts if (ROOT / script).is_file())
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(found, pool.map(help_of, found), strict=True))


def test_every_documented_command_line_names_a_command_and_flags_that_exist():
    """What a reader copies from the pages parses: the subcommand exists, and so does each flag."""
    import argparse
    import shlex

    from cnn_mnist.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    top_flags = set(parser._option_string_actions)
    wrong = []
    lines = documented_command_lines()
    assert len(lines) > 50
    parsed = []
    for page, line in lines:
        try:
            words = shlex.split(line.replace("...", ""))
        except ValueError:  # an unclosed quote in a line cut short by the page: check the words before it
            words = line.replace("...", "").split()
        if words[0].endswith("python") and words[1] == "-m":
            words = ["cnn-mnist", *words[3:]]
        parsed.append((page, line, words))
    benchmark_help = benchmark_helps({words[1] for _, _, words in parsed if words[0].endswith("python")})
    for page, line, words in parsed:
        if words[0].endswith("python"):  # a benchmark: its flags are in its --help
            script = words[1]
            if script not in benchmark_help:
                wrong.append(f"{page}: {line} (no {script})")
                continue
            wrong += [f"{page}: {line} ({flag})" for flag in flags_of(words[2:])
                      if not re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", benchmark_help[script])]
            continue
        rest = words[1:]
        while rest and rest[0] in top_flags:  # cnn-mnist -q train ...
            rest = rest[1:]
        if not rest or rest[0] in ("--help", "-h", "--version"):
            continue
        command = commands.choices.get(rest[0])
        if command is None:
            wrong.append(f"{page}: {line} (no command {rest[0]!r})")
            continue
        known = set(command._option_string_actions) | top_flags
        wrong += [f"{page}: {line} ({flag})" for flag in flags_of(rest[1:]) if flag not in known]
    assert not wrong, "documented command lines that do not parse:\n" + "\n".join(wrong)


def nav_pages(entry) -> list[str]:
    """Every .md file named anywhere in a mkdocs.yml nav entry (lists, {title: page}, {title: [...]})."""
    if isinstance(entry, str):
        return [entry] if entry.endswith(".md") else []
    if isinstance(entry, list):
        return [page for item in entry for page in nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkDocsLoader)
    docs_dir = ROOT / config.get("docs_dir", "docs")
    in_nav = set(nav_pages(config["nav"]))
    on_disk = {path.relative_to(docs_dir).as_posix() for path in docs_dir.rglob("*.md")}
    assert not on_disk - in_nav, f"pages missing from mkdocs.yml's nav: {sorted(on_disk - in_nav)}"
    assert not in_nav - on_disk, f"nav entries without a page: {sorted(in_nav - on_disk)}"
