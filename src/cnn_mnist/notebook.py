"""Where the package meets Jupyter (a notebook, JupyterLab, VS Code, Colab): whether it runs in a
kernel, which progress bar a kernel shows, and a Ctrl-C (the kernel's interrupt) said in one line.

Nothing here imports IPython unless the caller already runs inside it, and nothing happens at
import: the interrupt message is set up by the first training run in a kernel.
"""

from __future__ import annotations

import importlib.util
import sys


def shell():
    """The running IPython shell (a kernel's or a terminal IPython's), or None outside IPython."""
    if "IPython" not in sys.modules:  # never import IPython just to ask
        return None
    from IPython import get_ipython

    return get_ipython()


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel, whose output area shows widgets and HTML."""
    running = shell()
    return running is not None and type(running).__name__ == "ZMQInteractiveShell"


def progress_bar_class():
    """tqdm's notebook bar (a widget) where ipywidgets is installed; else tqdm's text bar, which
    a notebook's output area redraws in place too."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    return tqdm


def say_interrupts_in_one_line(kind: type[BaseException], sentence) -> None:
    """In IPython, show an exception of ``kind`` as ``sentence(exception)`` alone, not as a
    traceback through the package: the one line says what was saved and how to go on. The cell
    still ends as interrupted (Run All stops there). Leaves a handler the user set alone."""
    running = shell()
    if running is None or running.custom_exceptions:  # outside IPython, or set already (by us or the user)
        return

    def handler(self, etype, value, tb, tb_offset=None):
        print(f"cnn-mnist: {sentence(value)}", file=sys.stderr)
        return []

    running.set_custom_exc((kind,), handler)
