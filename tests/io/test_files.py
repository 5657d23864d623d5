"""write_atomic on real files: bytes, a streaming writer, and a writer that fails half way."""

from __future__ import annotations

import errno
import os
import threading

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
        assert not target.exists()
        (temp,) = os.listdir(tmp_path)
        assert temp.startswith(".big.bin.") and temp.endswith(".tmp")
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


def test_the_temporary_is_a_hidden_sibling_told_apart_per_writer(tmp_path):
    target = tmp_path / "meta.json"
    assert temp_name(target, "ab12") == tmp_path / ".meta.json.ab12.tmp"
    assert temp_name(target) != temp_name(target)  # a fresh token per call


def test_concurrent_writers_of_one_path_each_write_their_own_whole_file(tmp_path):
    # Two processes sharing a cache may write the same small file at the same moment: both
    # must be inside their writer at once, and the result must be one writer's whole output.
    target = tmp_path / "hashes.json"
    both_writing = threading.Barrier(2, timeout=30)
    payloads = {name: name.encode() * 50_000 for name in ("first", "second")}
    errors: list[BaseException] = []

    def write(name: str) -> None:
        def writer(fh):
            fh.write(payloads[name][:1000])
            both_writing.wait()  # the other writer has its temporary open now too
            fh.write(payloads[name][1000:])
        try:
            write_atomic(target, writer)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert target.read_bytes() in payloads.values()
    assert os.listdir(tmp_path) == ["hashes.json"]


@pytest.mark.parametrize("name", ["a" * 246 + ".png",  # 250 bytes
                                  "é" * 123 + ".png",  # 250 bytes: 2 per character
                                  "写" * 82 + ".png",  # 250 bytes: 3 per character
                                  "b" * 255],          # the longest name there is
                         ids=["ascii-250", "utf8-2byte-250", "utf8-3byte-250", "ascii-255"])
def test_a_long_name_that_fits_is_written_through_a_temporary_that_fits(tmp_path, name):
    """The temporary added 18 bytes to the name: a result name the file system accepts failed
    with ENAMETOOLONG. Now its middle is left out of the temporary's name (never splitting a
    character), which stays hidden, told apart per writer and in the same folder."""
    target = tmp_path / name
    seen = []

    def writer(fh):
        (temp,) = os.listdir(tmp_path)
        seen.append(temp)
        fh.write(b"result")

    write_atomic(target, writer)
    assert target.read_bytes() == b"result"
    assert os.listdir(tmp_path) == [name]
    (temp,) = seen
    encoded = os.fsencode(temp)
    assert len(encoded) <= os.pathconf(tmp_path, "PC_NAME_MAX")
    assert temp.startswith("." + name[:20]) and temp.endswith(".tmp") and "~" in temp
    assert temp[-4 - 12:-4].isalnum() and encoded.decode("utf-8")  # whole characters only
    assert temp_name(target, "ab12").parent == tmp_path
    assert temp_name(target) != temp_name(target)


def test_a_name_too_long_for_the_file_system_fails_at_once_and_leaves_nothing(tmp_path):
    calls = []
    with pytest.raises(OSError) as info:
        write_atomic(tmp_path / ("c" * 256), lambda fh: calls.append(fh))
    assert info.value.errno == errno.ENAMETOOLONG and calls == []
    assert os.listdir(tmp_path) == []
