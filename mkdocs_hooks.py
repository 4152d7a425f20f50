"""MkDocs hooks (mkdocs.yml's ``hooks``): the tutorial notebook, which lives in notebooks/ beside
its percent script, joins the site as the page ``notebooks/tutorial/`` without a copy in docs/; and
docs/train.md's table of train's flags is built from the parser and the settings' docstrings."""

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent
TRAIN_FLAGS = "<!-- train flags -->"  # where docs/train.md wants the table


@event_priority(100)  # before mkdocs-jupyter's own on_files turns .ipynb files into pages
def on_files(files, config):
    files.append(File("notebooks/tutorial.ipynb", src_dir=str(ROOT), dest_dir=config.site_dir,
                      use_directory_urls=config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "train.md":
        markdown = markdown.replace(TRAIN_FLAGS, train_flags_table())
    return markdown


def train_flags_table() -> str:
    """Every flag of ``cnn-mnist train`` as a Markdown table (flag, default, description), in --help's
    order: a setting's description is its field's docstring, as --help says it, and its default the
    tutorial preset's value, with each other preset's where it differs; any other flag's come from
    its --help text."""
    import argparse

    from cnn_mnist.cli import build_parser
    from cnn_mnist.cli.parser import SETTINGS, describe, field_docs, preset_values, settings_flags
    from cnn_mnist.training.presets import PRESETS

    train = next(action for action in build_parser()._actions
                 if isinstance(action, argparse._SubParsersAction)).choices["train"]
    settings = {flag: (owner, setting.name) for _, owner, setting, flag in settings_flags()}
    presets = {name: preset_values(name) for name in PRESETS}
    titles = {title for title, _, _ in SETTINGS}
    rows = ["| flag | default | description |", "|---|---|---|"]
    for group in train._action_groups:
        if group.title in titles:
            rows.append(f"| **{group.title}** | | |")
        for action in group._group_actions:
            if action.help == argparse.SUPPRESS or "--help" in action.option_strings:
                continue
            if action.option_strings[0] in settings:
                owner, name = settings[action.option_strings[0]]
                default = _preset_defaults(presets, action.dest)
                description = describe(field_docs(owner)[name])
            else:  # "where MNIST is cached (default: ...)"; the switches (-q, -v, --json) say none: off
                said = re.fullmatch(r"(.*) \(default: (.*)\)", action.help, re.DOTALL)
                description, default = said.groups() if said else (action.help, "off")
            rows.append(f"| {_invocation(action)} | {default} | {description} |")
    return "\n".join(rows)


def _invocation(action) -> str:
    """``--steps N``, ``--optimizer {sgd,momentum,adam}``, ``-q``, ``--quiet``: each as code."""
    if action.nargs == 0:  # a switch
        return ", ".join(f"`{option}`" for option in action.option_strings)
    shown = action.metavar or ("{" + ",".join(action.choices) + "}" if action.choices else action.dest.upper())
    return ", ".join(f"`{option} {shown}`" for option in action.option_strings)


def _preset_defaults(presets: dict[str, dict], name: str) -> str:
    """``20000 (`fast`: 460, `best`: 8600)``: the tutorial's value, then the others where they differ."""
    from cnn_mnist.cli.parser import value_text

    def shown(value) -> str:
        return f"`{value}`" if isinstance(value, str) else value_text(value)

    tutorial = presets["tutorial"][name]
    others: dict[str, list[str]] = {}
    for preset, values in presets.items():
        if values[name] != tutorial:
            others.setdefault(shown(values[name]), []).append(f"`{preset}`")
    differing = "; ".join(f"{', '.join(names)}: {value}" for value, names in others.items())
    return f"{shown(tutorial)} ({differing})" if differing else shown(tutorial)
