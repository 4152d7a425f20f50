"""What the commands print: a result as text or one line of JSON, and predict's table."""

from __future__ import annotations

import json


def print_result(result, as_json: bool, text: str | None = None) -> None:
    """A command's result on stdout: one line of JSON with --json, else ``text`` (default: as Python
    prints it, which is how the tutorial printed its evaluation dict)."""
    print(json.dumps(result) if as_json else text if text is not None else result)


def format_predictions(rows: list[dict], classes: tuple[str, ...]) -> str:
    """An aligned table: input, the class's name, the label and each class's probability under its
    name (for MNIST, the digits: "0" to "9")."""
    shown = [row for row in rows if "error" not in row]  # errors went to stderr
    width = max([len("input")] + [len(row["input"]) for row in shown])
    named = max([5] + [len(name) for name in classes])  # the class and label columns
    columns = [max(7, len(name) + 2) for name in classes]
    header = "".join(f"{name:>{column}}" for name, column in zip(classes, columns, strict=True))
    lines = [f"{'input':<{width}}  {'class':>{named}}  {'label':>{named}}{header}"]
    for row in shown:
        if row["no_digit"]:
            lines.append(f"{row['input']:<{width}}  {row['detail'].removeprefix(row['input'] + ': ')}")
            continue
        label = classes[row["label"]] if "label" in row else "-"
        probabilities = "".join(f"{p:>{column}.3f}" for p, column in zip(row["probabilities"], columns, strict=True))
        lines.append(f"{row['input']:<{width}}  {row['name']:>{named}}  {label:>{named}}{probabilities}")
    return "\n".join(lines)
