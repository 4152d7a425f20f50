"""The one atomic writer and the output-folder checks that data, training and use share."""

import os

import pytest

from cnn_mnist import files
from cnn_mnist.errors import OutputError


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")

    def fail(temp):
        temp.write_text("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        files.write_atomically(path, fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]


def test_a_durable_write_syncs_the_file_and_its_folder_before_and_after_the_rename(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(len(renamed)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(b), real_replace(a, b))[1])
    result = files.write_atomically(tmp_path / "data.bin", lambda temp: temp.write_bytes(b"abc"), durable=True,
                                    temp_prefix=".data.bin.", temp_suffix=".part")
    assert result == 3 and (tmp_path / "data.bin").read_bytes() == b"abc"
    assert synced == [0, 1]  # the file's bytes before the rename, the folder after it
    assert oct((tmp_path / "data.bin").stat().st_mode & 0o777) == oct(0o644)  # not mkstemp's 0600


def test_the_temporary_is_named_for_the_sweeper(tmp_path):
    seen = []
    files.write_atomically(tmp_path / "x.pt", lambda temp: seen.append(temp.name) or temp.write_bytes(b""),
                           temp_prefix=".x-", temp_suffix=".part")
    assert seen[0].startswith(".x-") and seen[0].endswith(".part")


def test_an_output_folder_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputError, match=r"--output .*taken/report is inside .*taken, which is a file"):
        files.prepare_output_dir(tmp_path / "taken" / "report")
    with pytest.raises(OutputError, match="is a directory; give a file name"):
        files.prepare_output_file(tmp_path, "--output")
    assert files.prepare_output_dir(tmp_path / "new" / "dir").is_dir()
