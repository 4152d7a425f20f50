"""The IDX format: the exact bytes the writer produces, and a rejection for every way a file can be wrong."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_mnist.data import idx
from cnn_mnist.errors import IdxFormatError


def test_images_header_is_magic_then_big_endian_dimensions():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert idx.encode(idx.IMAGES_MAGIC, images) == struct.pack(">IIII", 2051, 2, 3, 4) + images.tobytes()


def test_labels_header_is_magic_then_count():
    labels = np.array([7, 2, 1], dtype=np.uint8)
    assert idx.encode(idx.LABELS_MAGIC, labels) == struct.pack(">II", 2049, 3) + bytes([7, 2, 1])


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_raw_and_gzip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9], dtype=np.uint8)
    idx.write_images(tmp_path / f"images{suffix}", images)
    idx.write_labels(tmp_path / f"labels{suffix}", labels)
    np.testing.assert_array_equal(idx.read_images(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(idx.read_labels(tmp_path / f"labels{suffix}"), labels)


def test_labels_file_read_as_images_names_the_magic_check(tmp_path):
    idx.write_labels(tmp_path / "labels", np.array([1, 2], dtype=np.uint8))
    with pytest.raises(IdxFormatError, match=r"labels: wrong magic number 2049 \(expected 2051"):
        idx.read_images(tmp_path / "labels")


def test_gzip_file_without_gz_suffix_fails_on_magic(tmp_path):
    (tmp_path / "images").write_bytes(gzip.compress(idx.encode(idx.IMAGES_MAGIC, np.zeros((1, 2, 2), np.uint8))))
    with pytest.raises(IdxFormatError, match="wrong magic number"):
        idx.read_images(tmp_path / "images")


def test_truncated_file_fails_on_byte_length(tmp_path):
    data = idx.encode(idx.IMAGES_MAGIC, np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "images").write_bytes(data[:-100])
    with pytest.raises(IdxFormatError, match=r"byte length 2268 does not match dimensions \(3, 28, 28\)"):
        idx.read_images(tmp_path / "images")


def test_count_larger_than_the_data_fails_on_byte_length():
    data = struct.pack(">II", 2049, 5) + bytes(3)
    with pytest.raises(IdxFormatError, match="byte length"):
        idx.decode(data, idx.LABELS_MAGIC, "labels")


def test_trailing_bytes_fail_on_byte_length():
    data = idx.encode(idx.LABELS_MAGIC, np.zeros(3, np.uint8)) + b"extra"
    with pytest.raises(IdxFormatError, match="byte length"):
        idx.decode(data, idx.LABELS_MAGIC)


def test_truncated_header_and_tiny_file_are_rejected():
    with pytest.raises(IdxFormatError, match="too short"):
        idx.decode(b"\x00\x00", idx.LABELS_MAGIC)
    with pytest.raises(IdxFormatError, match="header truncated"):
        idx.decode(struct.pack(">II", 2051, 1), idx.IMAGES_MAGIC)


def test_zero_sized_image_dimensions_are_rejected():
    with pytest.raises(IdxFormatError, match="bad dimensions"):
        idx.decode(struct.pack(">IIII", 2051, 4, 0, 28), idx.IMAGES_MAGIC)


def test_label_that_is_not_a_digit_is_rejected(tmp_path):
    idx.write_labels(tmp_path / "labels", np.array([3, 10], dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="label value 10 is not a digit"):
        idx.read_labels(tmp_path / "labels")


def test_missing_and_corrupt_gzip_files_are_reported_by_name(tmp_path):
    with pytest.raises(IdxFormatError, match="nope: file not found"):
        idx.read_images(tmp_path / "nope")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(IdxFormatError, match=r"bad\.gz: cannot read"):
        idx.read_images(tmp_path / "bad.gz")


def test_writer_refuses_arrays_the_format_cannot_hold():
    with pytest.raises(IdxFormatError, match="uint8"):
        idx.encode(idx.IMAGES_MAGIC, np.zeros((1, 2, 2), np.float32))
    with pytest.raises(IdxFormatError, match="3 dimensions"):
        idx.encode(idx.IMAGES_MAGIC, np.zeros((2, 2), np.uint8))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), magic=st.sampled_from([idx.IMAGES_MAGIC, idx.LABELS_MAGIC]))
def test_any_bytes_decode_to_an_array_or_the_packages_error(data, magic):
    try:
        array = idx.decode(data, magic)
    except IdxFormatError:
        return
    assert array.dtype == np.uint8 and array.ndim == (3 if magic == idx.IMAGES_MAGIC else 1)


@settings(max_examples=300, deadline=None)
@given(shape=st.tuples(*[st.integers(0, 2**32 - 1)] * 3), tail=st.binary(max_size=32))
def test_hostile_headers_never_allocate_what_they_declare(shape, tail):
    data = struct.pack(">IIII", idx.IMAGES_MAGIC, *shape) + tail
    try:
        array = idx.decode(data, idx.IMAGES_MAGIC)
    except IdxFormatError:
        return
    assert array.nbytes == len(tail)


def test_a_gzip_bomb_is_refused_without_expanding_it(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "MAX_BYTES", 1 << 20)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(4 << 20)))  # 4 MiB of zeros in a few KiB
    with pytest.raises(IdxFormatError, match="expands to over 1 MiB"):
        idx.read_images(path)
