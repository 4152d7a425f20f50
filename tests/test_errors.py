"""install_hint: the command to add an extra fits how the package was installed."""

import json
import sys
from importlib import metadata

import pytest

from cnn_mnist.errors import install_hint


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


def test_a_clone_with_the_make_venv_is_told_make_install(monkeypatch, tmp_path):
    (tmp_path / ".venv").mkdir()
    hint = hint_for(monkeypatch, {"url": tmp_path.as_uri(), "dir_info": {"editable": True}}, tmp_path / ".venv")
    assert f"run 'make install' in {tmp_path}" in hint and f'-e "{tmp_path}[serve]" -c ' in hint


def test_a_clone_installed_into_another_environment_gets_pip_on_the_clone(monkeypatch, tmp_path):
    hint = hint_for(monkeypatch, {"url": tmp_path.as_uri(), "dir_info": {"editable": True}}, tmp_path / "elsewhere")
    assert hint.endswith(f'{sys.executable} -m pip install -e "{tmp_path}[serve]"') and "make" not in hint


def test_a_wheel_file_gets_the_extra_added_to_the_same_file(monkeypatch):
    url = "file:///home/me/Downloads/cnn_mnist-0.1.0-py3-none-any.whl"
    hint = hint_for(monkeypatch, {"url": url, "archive_info": {}})
    assert hint.endswith(f'-m pip install "cnn-mnist[serve] @ {url}"')


def test_a_git_url_gets_the_same_commit(monkeypatch):
    hint = hint_for(monkeypatch, {"url": "https://example.org/cnn-mnist.git",
                                  "vcs_info": {"vcs": "git", "commit_id": "abc123"}})
    assert hint.endswith('"cnn-mnist[serve] @ git+https://example.org/cnn-mnist.git@abc123"')


def test_an_index_install_gets_the_plain_extra(monkeypatch):
    assert hint_for(monkeypatch, None).endswith('-m pip install "cnn-mnist[serve]"')


def test_not_installed_at_all(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    assert 'pip install -e ".[serve]" in the clone' in install_hint("serve")


@pytest.mark.parametrize("extra", ["export", "serve", "robustness"])
def test_this_checkout_names_an_extra_that_exists(extra):
    from cnn_mnist.errors import install_hint as real

    assert f"'{extra}' extra" in real(extra)
    assert extra in metadata.metadata("cnn-mnist").get_all("Provides-Extra")
