"""cnn_mnist/notebook.py outside a kernel and against a stand-in IPython shell (tests/
test_tutorial_notebook.py runs the real kernel)."""

import sys

import tqdm

from cnn_mnist import notebook
from cnn_mnist.errors import TrainingInterrupted


class Shell:
    """What say_interrupts_in_one_line uses of IPython's InteractiveShell."""

    def __init__(self, custom_exceptions=()):
        self.custom_exceptions = custom_exceptions

    def set_custom_exc(self, kinds, handler):
        self.custom_exceptions, self.handler = kinds, handler


def test_outside_ipython_nothing_is_imported_or_set(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert notebook.shell() is None and not notebook.in_kernel()
    notebook.say_interrupts_in_one_line(TrainingInterrupted, str)  # nothing to set: no error
    assert "IPython" not in sys.modules


def test_an_interrupt_is_one_line_and_a_users_handler_is_kept(monkeypatch, capsys):
    shell = Shell()
    monkeypatch.setattr(notebook, "shell", lambda: shell)
    notebook.say_interrupts_in_one_line(TrainingInterrupted, lambda stop: stop.sentence("run the cell again"))
    assert shell.custom_exceptions == (TrainingInterrupted,)
    assert shell.handler(shell, TrainingInterrupted, TrainingInterrupted(7, saved=True), None) == []
    assert capsys.readouterr().err == ("cnn-mnist: interrupted at global step 7; a checkpoint of it was saved: run "
                                       "the cell again to resume from it\n")
    users = Shell(custom_exceptions=(ValueError,))
    monkeypatch.setattr(notebook, "shell", lambda: users)
    notebook.say_interrupts_in_one_line(TrainingInterrupted, str)
    assert users.custom_exceptions == (ValueError,)


def test_the_bar_is_a_widget_only_where_ipywidgets_is_installed(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "ipywidgets" else find_spec(name))
    assert notebook.progress_bar_class() is tqdm.std.tqdm
