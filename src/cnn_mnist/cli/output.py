"""What the commands print: a result as text or one line of JSON, and predict's table."""

from __future__ import annotations

import json


def print_result(result, as_json: bool, text: str | None = None) -> None:
    """A command's result on stdout: one line of JSON with --json, else ``text`` (default: as Python
    prints it, which is how the tutorial printed its evaluation dict)."""
    print(json.dumps(result) if as_json else text if text is not None else result)


def format_predictions(rows: list[dict]) -> str:
    """An aligned table: input, class, label and each digit's probability under its digit."""
    shown = [row for row in rows if "error" not in row]  # errors went to stderr
    width = max([len("input")] + [len(row["input"]) for row in shown])
    digits = "".join(f"{digit:>7}" for digit in range(10))
    lines = [f"{'input':<{width}}  class  label{digits}"]
    for row in shown:
        if row["no_digit"]:
            lines.append(f"{row['input']:<{width}}  {row['detail'].removeprefix(row['input'] + ': ')}")
            continue
        label = str(row["label"]) if "label" in row else "-"
        probabilities = "".join(f"{p:>7.3f}" for p in row["probabilities"])
        lines.append(f"{row['input']:<{width}}  {row['class']:>5}  {label:>5}{probabilities}")
    return "\n".join(lines)
