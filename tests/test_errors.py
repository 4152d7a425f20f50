"""install_hint: the command to add an extra fits how the package was installed, and is one a
shell reads back as the words meant (quoted where a path has spaces)."""

import json
import shlex
import sys
from importlib import metadata

import pytest

from cnn_mnist.errors import install_hint

PIP = [sys.executable, "-m", "pip", "install"]


class Installed:
    """Stands in for the installed distribution, with the direct_url.json pip wrote (or none)."""

    def __init__(self, direct_url):
        self.direct_url = direct_url

    def read_text(self, name):
        assert name == "direct_url.json"
        return None if self.direct_url is None else json.dumps(self.direct_url)


def hint_for(monkeypatch, direct_url, prefix=None):
    monkeypatch.setattr(metadata, "distribution", lambda name: Installed(direct_url))
    if prefix is not None:
        monkeypatch.setattr(sys, "prefix", str(prefix))
    return install_hint("serve")


def words_of_the_command(hint: str) -> list[str]:
    return shlex.split(hint.rsplit(": ", 1)[1])


def test_a_clone_with_the_make_venv_is_told_make_install(monkeypatch, tmp_path):
    clone = tmp_path / "my clone"  # a space, as a user's folder may have
    (clone / ".venv").mkdir(parents=True)
    hint = hint_for(monkeypatch, {"url": clone.as_uri(), "dir_info": {"editable": True}}, clone / ".venv")
    assert f"run 'make install' in {clone}" in hint
    assert words_of_the_command(hint) == [*PIP, "-e", f"{clone}[serve]", "-c", str(clone / "constraints.txt")]


def test_a_clone_installed_into_another_environment_gets_pip_on_the_clone(monkeypatch, tmp_path):
    hint = hint_for(monkeypatch, {"url": tmp_path.as_uri(), "dir_info": {"editable": True}}, tmp_path / "elsewhere")
    assert "make" not in hint and words_of_the_command(hint) == [*PIP, "-e", f"{tmp_path}[serve]"]


def test_a_wheel_file_gets_the_extra_added_to_the_same_file(monkeypatch):
    url = "file:///home/me/Downloads/cnn_mnist-0.1.0-py3-none-any.whl"
    hint = hint_for(monkeypatch, {"url": url, "archive_info": {}})
    assert words_of_the_command(hint) == [*PIP, f"cnn-mnist[serve] @ {url}"]


def test_a_git_url_gets_the_same_commit(monkeypatch):
    hint = hint_for(monkeypatch, {"url": "https://example.org/cnn-mnist.git",
                                  "vcs_info": {"vcs": "git", "commit_id": "abc123"}})
    assert words_of_the_command(hint) == [*PIP, "cnn-mnist[serve] @ git+https://example.org/cnn-mnist.git@abc123"]


def test_an_index_install_gets_the_plain_extra(monkeypatch):
    assert words_of_the_command(hint_for(monkeypatch, None)) == [*PIP, "cnn-mnist[serve]"]


def test_not_installed_at_all(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    assert 'pip install -e ".[serve]" in the clone' in install_hint("serve")


@pytest.mark.parametrize("extra", ["export", "serve", "robustness"])
def test_this_checkout_names_an_extra_that_exists(extra):
    assert f"'{extra}' extra" in install_hint(extra)
    assert extra in metadata.metadata("cnn-mnist").get_all("Provides-Extra")
