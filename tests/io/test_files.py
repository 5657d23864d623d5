"""write_atomic on real files: bytes, a streaming writer, and a writer that fails half way."""

from __future__ import annotations

import os

import pytest

from restora.io.files import temp_name, write_atomic


def test_bytes_are_written_and_replace_the_old_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    assert write_atomic(target, b"new contents") == target
    assert target.read_bytes() == b"new contents"
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_a_streaming_writer_writes_into_the_open_file(tmp_path):
    target = tmp_path / "big.bin"
    chunks = [bytes([i]) * 4096 for i in range(5)]

    def writer(fh):
        # while it writes, the target does not exist yet: only the hidden temporary does
        assert not target.exists() and temp_name(target).exists()
        for chunk in chunks:
            fh.write(chunk)

    write_atomic(str(target), writer)
    assert target.read_bytes() == b"".join(chunks)
    assert sorted(os.listdir(tmp_path)) == ["big.bin"]


class EncoderFailed(Exception):
    pass


def test_a_writer_that_raises_leaves_no_temporary_and_the_old_target_untouched(tmp_path):
    target = tmp_path / "result.webp"
    target.write_bytes(b"previous result")

    def writer(fh):
        fh.write(b"half of a new file")
        raise EncoderFailed("boom")

    with pytest.raises(EncoderFailed, match="boom"):
        write_atomic(target, writer)
    assert target.read_bytes() == b"previous result"
    assert sorted(os.listdir(tmp_path)) == ["result.webp"]


def test_a_missing_folder_is_an_os_error_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "absent" / "x.png", b"data")
    assert os.listdir(tmp_path) == []
