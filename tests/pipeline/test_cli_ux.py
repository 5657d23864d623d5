"""What a person sees in a terminal: one clear line for a bad output, every missing model in
one message, what to do when models cannot be downloaded, the batch summary, one result per
line when piped, and flags shown without a type."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, shared_path
from restora.cli import main
from tiny_models import write_tiny_manifest


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(tmp_path)))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def photo(env: Path, name: str = "04.jpg") -> Path:
    return Path(shutil.copy(shared_path("testdata", "photos", name), env / name))


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["enhance-faces", "restore-photo"])
def test_unusable_output_is_one_line_before_any_work(env: Path, command: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = photo(env)
    existing = env / "existing.txt"
    existing.write_text("x")
    locked = env / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = {
        "/proc/restora-out": "output_not_writable",
        str(existing): "invalid_parameter",
        str(env / "existing.txt" / "sub"): "output_not_writable",
    }
    if os.geteuid() != 0:  # root writes anywhere: a permission case only means something else
        cases[str(locked / "out")] = "output_not_writable"
    for target, code in cases.items():
        assert main([command, str(src), str(photo(env, "03.jpg")), "-o", target]) == 1
        captured = capsys.readouterr()
        line = one_error_line(captured.err)
        assert line.startswith(f"error[{code}]: ") and target.split("/")[1] in line, line
        assert captured.out == ""  # nothing was processed
    locked.chmod(0o700)


def test_every_missing_model_in_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("RESTORA_MODELS", raising=False)
    src = Path(shutil.copy(shared_path("testdata", "photos", "04.jpg"), tmp_path / "a.jpg"))
    assert main(["enhance-faces", str(src), "-o", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error[model_not_installed]: 2 models")
    assert "(face-restoration)" in line and "(face-detection)" in line
    assert "`restora models pull upscale-enhance" in line
    assert not (tmp_path / "out").exists()


def test_restore_photo_without_face_models_says_so_up_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(tmp_path, include={"x"})))
    src = Path(shutil.copy(shared_path("testdata", "photos", "04.jpg"), tmp_path / "a.jpg"))
    assert main(["restore-photo", str(src), "-o", str(tmp_path / "out"),
                 "--no-scratch-removal"]) == 0
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("warning: no face models installed") and "models pull" in first, err
    assert main(["restore-photo", str(src), "-o", str(tmp_path / "out2"), "--no-face-enhancement",
                 "--no-scratch-removal"]) == 0
    assert "no face models" not in capsys.readouterr().err


def test_models_pull_offline_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESTORA_OFFLINE", "1")
    monkeypatch.delenv("RESTORA_MODELS", raising=False)
    assert main(["models", "pull", "upscale-enhance"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error[offline]: ") and "Traceback" not in err
    assert "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth" in err
    assert "restora models import FILE" in err and "RESTORA_OFFLINE" in err
    for model in ("gfpgan-v1.4", "codeformer", "retinaface-resnet50", "parsenet"):
        assert f"  {model}: https://" in err


def test_piped_batch_one_result_per_line_and_summary(env: Path) -> None:
    folder = env / "in"
    folder.mkdir()
    long_name = "a-rather-long-file-name-that-would-wrap-on-a-narrow-terminal-" * 2 + "x.jpg"
    shutil.copy(shared_path("testdata", "photos", "04.jpg"), folder / long_name)
    shutil.copy(shared_path("testdata", "photos", "05.jpg"), folder / "b.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "40"}
    for as_json in (False, True):
        out = env / ("out-json" if as_json else "out")
        proc = subprocess.run(
            [sys.executable, "-m", "restora", "enhance-faces", str(folder), "-o", str(out),
             "--model", "gfpgan", *(["--json"] if as_json else [])],
            capture_output=True, text=True, env=proc_env, timeout=300)
        assert proc.returncode == 1, proc.stderr  # one input failed
        assert "Traceback" not in proc.stderr
        lines = proc.stdout.splitlines()
        if as_json:
            records = [json.loads(line) for line in lines]
            assert [Path(r["input"]).name for r in records] == sorted(
                [long_name, "b.jpg", "broken.jpg"])
            assert sum("error" in r for r in records) == 1
        else:
            assert len(lines) == 2, proc.stdout  # one line per result, however long
            assert any(line.startswith(str(folder / long_name) + " -> ") for line in lines)
        summary = proc.stderr.strip().splitlines()[-1]
        assert summary.startswith("enhance-faces: 2 done, 1 failed, 0 skipped (of 3) in "), \
            proc.stderr
        assert summary.endswith(" s")


def test_help_shows_flags_without_a_type(env: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "restora", "enhance-faces", "--help"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    assert "--bg-upscale " in proc.stdout and "--json " in proc.stdout


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("RESTORA_ENGINE", "bogus", "'auto', 'torch', 'onnxruntime' or 'openvino'"),
    ("RESTORA_MAX_PIXELS", "lots", "valid integer")])
@pytest.mark.parametrize("command", [["models", "list"], ["enhance-faces", "04.jpg"], ["serve"]])
def test_a_bad_setting_is_one_line_for_every_command(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        variable: str, value: str, named: str, command: list[str]) -> None:
    """A wrong RESTORA_* variable names the variable and the rule, in one line, exit 1, whatever
    the command (before: a pydantic traceback)."""
    photo(env)
    monkeypatch.setenv(variable, value)
    assert main(command) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error[invalid_settings]: {variable}: ") and named in line


def _pipe(args: list[str], stdin: bytes | None, timeout: int = 300) -> subprocess.CompletedProcess:
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "restora", *args], input=stdin,
                          capture_output=True, env=proc_env, timeout=timeout)


def test_standard_input_and_output_carry_one_image(env: Path) -> None:
    from PIL import Image as PILImage

    jpeg = shared_path("testdata", "photos", "03.jpg").read_bytes()
    # enhance-faces: PNG on stdout, the result line (or JSON) on stderr
    proc = _pipe(["enhance-faces", "-", "-o", "-", "--model", "gfpgan", "--seed", "1"], jpeg)
    assert proc.returncode == 0, proc.stderr.decode()
    piped = PILImage.open(io.BytesIO(proc.stdout))
    assert piped.format == "PNG" and piped.size == (400, 225)
    assert b"- -> - (1 face(s)" in proc.stderr
    # the same image as a file gives the same pixels
    src = photo(env, "03.jpg")
    assert main(["enhance-faces", str(src), "-o", str(env / "file.png"), "--model", "gfpgan",
                 "--seed", "1"]) == 0
    assert np.array_equal(np.asarray(piped), np.asarray(PILImage.open(env / "file.png")))
    # restore-photo keeps the input's format; --json goes to stderr
    proc = _pipe(["restore-photo", "-", "-o", "-", "--json"], jpeg)
    assert proc.returncode == 0, proc.stderr.decode()
    assert PILImage.open(io.BytesIO(proc.stdout)).format == "JPEG"
    record = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert record["input"] == "-" and record["output"] == "-" and record["format"] == "jpeg"
    assert record["preview"] is None
    # stdin into a folder: named after "stdin"
    proc = _pipe(["enhance-faces", "-", "-o", str(env / "out")], jpeg)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (env / "out" / "stdin_enhanced.png").is_file()
    assert proc.stdout.decode().startswith("- -> ")


def test_standard_input_and_output_misuse_is_one_line(env: Path) -> None:
    src = photo(env)
    jpeg = src.read_bytes()
    cases = [
        (["enhance-faces", "-", "-o", "-"], b"", "error[empty_file]"),
        (["enhance-faces", "-", "-o", "-"], b"not an image", "error[unsupported_format]"),
        (["enhance-faces", "-", "-", "-o", "-"], jpeg, "error[invalid_parameter]: standard input"),
        (["enhance-faces", str(src), str(shutil.copy(src, env / "b.jpg")), "-o", "-"], None,
         "error[invalid_parameter]: -o - writes one image"),
        (["restore-photo", "-", "-o", "-", "--save-mask"], jpeg,
         "error[invalid_parameter]: --save-mask needs"),
    ]
    for args, stdin, start in cases:
        proc = _pipe(args, stdin)
        assert proc.returncode == 1, (args, proc.stderr.decode())
        line = one_error_line(proc.stderr.decode())
        assert line.startswith(start), line
        assert proc.stdout == b""
    # more than the byte limit on stdin is refused by size, without reading it all
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "RESTORA_MAX_BYTES": "1000"}
    proc = subprocess.run([sys.executable, "-m", "restora", "enhance-faces", "-", "-o", "-"],
                          input=jpeg, capture_output=True, env=proc_env, timeout=300)
    assert proc.returncode == 1
    assert one_error_line(proc.stderr.decode()).startswith("error[file_too_large]")


def test_a_reader_that_goes_away_is_one_line(env: Path) -> None:
    jpeg = shared_path("testdata", "photos", "03.jpg").read_bytes()
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # `restora ... | head -c 10`: the pipe closes long before the PNG is written
    with subprocess.Popen([sys.executable, "-m", "restora", "enhance-faces", "-", "-o", "-",
                           "--upscale", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=proc_env) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(jpeg)
        proc.stdin.close()
        proc.stdout.read(10)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 1
    assert "Traceback" not in err, err
    assert "error[output_not_writable]: standard output was closed" in err, err


def test_every_input_gets_its_own_result_and_results_are_not_inputs(env: Path) -> None:
    folder = env / "album"
    folder.mkdir()
    src = shared_path("testdata", "photos", "04.jpg")
    # dotted names (dates) differ only before their last dot but one; a.jpg / A.png share a stem
    for name in ("2019.07.14 Beach.jpg", "2019.07.20 Party.jpg", "a.jpg", "A.png"):
        shutil.copy(src, folder / name)
    out = folder / "restored"  # inside the input folder, as `-o restored` in the album is
    for run in range(2):
        assert main(["enhance-faces", str(folder), "-o", str(out), "--model", "gfpgan"]) == 0
        results = sorted(p.name for p in out.rglob("*.png"))
        assert results == ["2019.07.14 Beach_enhanced.png", "2019.07.20 Party_enhanced.png",
                           "A_enhanced.png", "a-1_enhanced.png"], (run, results)
        assert not (out / "restored").exists()  # the second run did not take results as photos
    assert main(["restore-photo", str(folder), "-o", str(out), "--save-mask",
                 "--no-face-enhancement"]) == 0
    masks = sorted(p.name for p in out.rglob("*.mask.png"))
    assert masks == ["2019.07.14 Beach.mask.png", "2019.07.20 Party.mask.png", "A.mask.png",
                     "a-1.mask.png"], masks


def test_no_result_overwrites_an_input(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-o` naming the input itself, or a result named like another input of the batch (an
    earlier run's `x_enhanced.png` given with `x.jpg` and `-o .`), must not replace the source."""
    src = photo(env, "02.png")
    original = src.read_bytes()
    for command in ("enhance-faces", "restore-photo"):
        for target in (src, env / "." / src.name):
            assert main([command, str(src), "-o", str(target), "--no-identity"
                         if command == "enhance-faces" else "--no-scratch-removal"]) == 1
            line = one_error_line(capsys.readouterr().err)
            assert line.startswith("error[invalid_parameter]: ") and str(target) in line, line
            assert src.read_bytes() == original
    earlier = Path(shutil.copy(src, env / "x_enhanced.png"))
    os.link(src, env / "linked.png")  # a hard link is the same file under another name
    photo(env, "04.jpg").rename(env / "x.jpg")
    assert main(["enhance-faces", "x.jpg", "x_enhanced.png", "-o", "."]) == 1
    out, err = capsys.readouterr()
    assert "error[invalid_parameter]: x.jpg: " in err and "x_enhanced.png" in err, err
    assert earlier.read_bytes() == original  # the earlier result, an input here, is kept
    assert out.splitlines() == ["x_enhanced.png -> x_enhanced_enhanced.png (4 face(s), "
                                + out.splitlines()[0].split("(4 face(s), ")[1]], out
    assert main(["enhance-faces", "linked.png", "-o", str(src)]) == 1
    assert "error[invalid_parameter]" in capsys.readouterr().err
    assert src.read_bytes() == original


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_mid_write_leaves_no_temporary_file(env: Path, sig: str, code: int) -> None:
    """`kill` (SIGTERM) while a result was being written left its hidden temporary file behind
    and said nothing; now it stops as Ctrl+C does: the write in progress is undone, the summary
    says what happened, exit 128 + signal."""
    import signal
    import time

    folder = env / "in"
    folder.mkdir()
    for i in range(2):
        shutil.copy(shared_path("testdata", "photos", "02.png"), folder / f"{i}.png")
    out = env / "out"
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for args, single in (([str(folder)], False), ([str(folder / "0.png")], True)):
        shutil.rmtree(out, ignore_errors=True)
        with subprocess.Popen([sys.executable, "-m", "restora", "enhance-faces", *args, "-o",
                               str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=proc_env) as proc:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                if out.is_dir() and any(p.name.startswith(".0_enhanced.png.")
                                        for p in out.iterdir()):
                    break  # the first result is being written
                time.sleep(0.002)
            proc.send_signal(getattr(signal, sig))
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err.decode()
        last = err.decode().strip().splitlines()[-1]
        assert "Traceback" not in err.decode()
        if single:
            assert last == f"error[cancelled]: interrupted by {sig}", err.decode()
        else:
            assert last.startswith("enhance-faces: ") and last.endswith(
                f" s, interrupted by {sig}") and ", 2 not started (of 2)" in last, err.decode()
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_an_input_that_is_not_a_file_is_named_for_what_it_is(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO, a device or a socket given as input was reported as not existing."""
    import socket

    fifo = env / "fifo.jpg"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(env / "sock.jpg"))
    try:
        for item in (fifo, env / "sock.jpg", Path("/dev/zero")):
            assert main(["enhance-faces", str(item), "-o", str(env / "out")]) == 1
            line = one_error_line(capsys.readouterr().err)
            assert line == (f"error[invalid_input]: {item} is not a file or folder (a device, "
                            "FIFO or socket); give - to read standard input"), line
    finally:
        sock.close()
    assert main(["enhance-faces", str(env / "nothing.jpg"), "-o", str(env / "out")]) == 1
    assert one_error_line(capsys.readouterr().err).startswith("error[file_not_found]: ")
    assert not (env / "out").exists()


def test_the_same_file_given_twice_is_restored_once(env: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`restora enhance-faces album album/a.jpg` (or a file twice) restored it twice, the
    second time as a-1_enhanced.png; another file of the same name still gets its own."""
    folder = env / "album"
    (folder / "sub").mkdir(parents=True)
    src = Path(shutil.copy(shared_path("testdata", "photos", "04.jpg"), folder / "a.jpg"))
    shutil.copy(src, folder / "sub" / "a.jpg")
    assert main(["enhance-faces", "album/a.jpg", "album", "./album//a.jpg", "album/sub",
                 "-o", "out", "--model", "gfpgan"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(" -> ")[0] for line in out.splitlines()] == [
        "album/a.jpg", "album/sub/a.jpg"], out
    assert sorted(str(p.relative_to(env / "out")) for p in (env / "out").rglob("*.png")) == [
        "a_enhanced.png", "sub/a_enhanced.png"]
    assert err.strip().splitlines()[-1].startswith("enhance-faces: 2 done, 0 failed, 0 skipped")


def test_what_cannot_be_read_is_a_failure_not_silence(env: Path) -> None:
    """An unreadable sub-folder of an input folder was skipped without a word (its photos
    never restored, exit 0); an unreadable input folder or file was a usage error for the
    whole batch, a file in a folder that cannot be looked into a traceback."""
    album = env / "album"
    (album / "locked").mkdir(parents=True)
    shutil.copy(shared_path("testdata", "photos", "04.jpg"), album / "ok.jpg")
    shutil.copy(shared_path("testdata", "photos", "04.jpg"), album / "locked" / "b.jpg")
    (album / "locked").chmod(0)
    as_user = []
    if os.geteuid() == 0:  # root reads anything: without CAP_DAC_* the mode holds for it too
        if shutil.which("setpriv") is None:
            (album / "locked").chmod(0o755)
            pytest.skip("root needs setpriv to drop CAP_DAC_OVERRIDE")
        as_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    try:
        runs = [subprocess.run([*as_user, sys.executable, "-m", "restora", *args],
                               capture_output=True, text=True, env=proc_env, timeout=300)
                for args in (["enhance-faces", "album", "-o", "out", "--model", "gfpgan"],
                             ["enhance-faces", "album/locked", "-o", "out"],
                             ["enhance-faces", "album/locked/b.jpg", "album/ok.jpg", "-o", "out"],
                             ["models", "import", "album/locked/b.jpg"])]
    finally:
        (album / "locked").chmod(0o755)
    proc, alone, files, model = runs
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("album/ok.jpg -> ") and len(proc.stdout.splitlines()) == 1
    assert ("error[invalid_input]: album/locked: the folder could not be searched for images "
            "(Permission denied)") in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "enhance-faces: 1 done, 1 failed, 0 skipped (of 2)")
    assert alone.returncode == 1 and "Traceback" not in alone.stderr
    assert ("error[invalid_input]: album/locked: the folder could not be searched"
            in alone.stderr), alone.stderr
    assert files.returncode == 1 and files.stdout.startswith("album/ok.jpg -> "), files.stderr
    assert "album/locked/b.jpg: The file could not be read: Permission denied" in files.stderr
    assert "Traceback" not in files.stderr
    assert model.returncode == 1
    assert one_error_line(model.stderr) == ("error[import_failed]: cannot read "
                                            "album/locked/b.jpg: Permission denied")


@pytest.mark.parametrize("command", ["enhance-faces", "restore-photo"])
def test_an_engine_cache_that_cannot_be_made_is_one_warning_and_the_run_goes_on(
        env: Path, command: str) -> None:
    """RESTORA_HOME on a file (or a read-only place, as in a container with models baked in)
    was a traceback from the engine cache, then a refusal before any work; the engines now
    export into a temporary folder of their own: the run goes on and says so once (the
    engine's RuntimeWarning, meant for library callers, is not printed again)."""
    src = photo(env)
    (env / "not-a-folder").write_text("x")
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src"),
                "RESTORA_HOME": str(env / "not-a-folder"), "RESTORA_ENGINE": "auto"}
    proc = subprocess.run([sys.executable, "-m", "restora", command, str(src), "-o",
                           str(env / "out")], capture_output=True, text=True, env=proc_env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "cannot be written" in line]
    assert len(said) == 1, proc.stderr
    assert said[0].startswith(f"the engine cache {env / 'not-a-folder' / 'engines'} cannot be "
                              "written (Not a directory): graphs are exported into a temporary "
                              "folder"), said
    assert "RuntimeWarning" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(list((env / "out").glob(f"{src.stem}_*"))) >= 1


def test_a_usage_error_is_one_line(env: Path) -> None:
    """Unknown options, a missing argument, a value of the wrong type: click's four lines
    (Usage, Try, a blank, Error) became one `error[usage]` line; exit status 2 as before."""
    photo(env)
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cases = [
        (["enhance-faces", "-x.jpg"], "No such option: -x"),
        (["enhance-faces", "04.jpg", "--upscale", "abc"], "Invalid value for '--upscale': "),
        (["restore-photo"], "Missing argument 'INPUT...'."),
        (["models", "pull", "x", "--timeout", "0"], "Invalid value for '--timeout': "),
        (["bogus"], "No such command 'bogus'."),
    ]
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "restora", *args], capture_output=True,
                              text=True, env=proc_env, timeout=60)
        assert proc.returncode == 2 and proc.stdout == "", (args, proc.stderr)
        line = one_error_line(proc.stderr)
        assert line.startswith(f"error[usage]: {message}") and line.endswith(" --help`)"), line
    assert main(["enhance-faces", "--nope"]) == 2
    proc = subprocess.run([sys.executable, "-m", "restora", "models"], capture_output=True,
                          text=True, env=proc_env, timeout=60)  # no command: the help
    assert proc.returncode == 2 and "Usage: " in proc.stderr + proc.stdout
    assert "pull" in proc.stderr + proc.stdout


def test_an_input_folder_that_is_the_output_folder_says_so(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`restora enhance-faces photos -o photos` said 'no image files found' with photos there:
    the output folder is never searched (a second run would take results for photos)."""
    (env / "photos").mkdir()
    photo(env).rename(env / "photos" / "a.jpg")
    for output in ("photos", "."):
        assert main(["enhance-faces", "photos", "-o", output]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert line == ("error[no_input]: no image files found in the given input(s): photos "
                        f"is in the output folder {output}, which is never searched for photos "
                        "(give another -o)"), line


def test_a_result_name_too_long_fails_that_image_only(env: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A photo whose name is legal but whose result name is not (too long for the file
    system) stopped the whole batch with output_not_writable; the next photos were skipped."""
    folder = env / "in"
    folder.mkdir()
    long_name = "x" * 240 + ".jpg"
    for name in (long_name, "z.jpg"):
        shutil.copy(shared_path("testdata", "photos", "04.jpg"), folder / name)
    assert main(["enhance-faces", "in", "-o", "out", "--model", "gfpgan"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("in/z.jpg -> out/z_enhanced.png"), out
    assert f"error[invalid_input]: in/{long_name}: cannot write out/x" in err, err
    assert "the name is too long for the file system" in err
    assert err.strip().splitlines()[-1].startswith("enhance-faces: 1 done, 1 failed, 0 skipped")
    assert sorted(p.name for p in (env / "out").iterdir()) == ["z_enhanced.png",
                                                               "z_enhanced.preview.webp"]


def test_standard_output_on_a_full_disk_is_one_line(env: Path) -> None:
    """`restora ... -o - > /dev/full` (or result lines into a full disk) was an OSError
    traceback."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    src = photo(env)
    proc_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for output in ("-", str(env / "out")):
        with open("/dev/full", "wb") as full:
            proc = subprocess.run([sys.executable, "-m", "restora", "enhance-faces", str(src),
                                   "-o", output], stdout=full, stderr=subprocess.PIPE,
                                  env=proc_env, timeout=300)
        assert proc.returncode == 1
        err = proc.stderr.decode()
        assert one_error_line(err) == ("error[output_not_writable]: cannot write to standard "
                                       "output: No space left on device"), err
    assert (env / "out" / "04_enhanced.png").is_file()  # written before its result line


def test_serve_with_an_unknown_log_level_is_one_line(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`restora serve --log-level bogus` built the whole app, then died with a KeyError
    traceback from uvicorn's level table."""
    assert main(["serve", "--log-level", "bogus"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == ("error[invalid_parameter]: unknown --log-level 'bogus'; use critical, error, "
                    "warning, info, debug or trace"), line


def test_ctrl_c_before_the_first_image_is_one_line(env: Path) -> None:
    """Ctrl+C while the command was starting (torch imported, the runtime made, reference
    photos read) exited 130 without a word: typer turns KeyboardInterrupt into a silent exit.
    Now it is one line, exit 130, nothing written. The deterministic point: a models manifest
    (RESTORA_MODELS) that is a FIFO nobody writes to, as `<(...)` gives; the command blocks
    opening it while it starts (the kernel says so in /proc/PID/wchan), and SIGINT arrives
    there. (A FIFO as reference photo no longer blocks: inputs are refused unless they are
    regular files.)"""
    import signal
    import time

    fifo = env / "models-fifo.json"
    os.mkfifo(fifo)
    out = env / "out"
    with subprocess.Popen(
            [sys.executable, "-m", "restora", "enhance-faces", str(photo(env)), "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "RESTORA_MODELS": str(fifo)},
            # a runner started in the background may ignore SIGINT; a terminal's Ctrl+C does not
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        wchan = Path(f"/proc/{proc.pid}/wchan")
        seen = set()
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            seen.add(wchan.read_text() if wchan.is_file() else "0")
            if "wait_for_partner" in seen:  # blocked opening the FIFO
                break
            time.sleep(0.01)
        if seen <= {"0"}:  # not Linux, or a kernel that hides where processes wait
            proc.kill()
            pytest.skip("needs Linux's /proc/PID/wchan to see the command wait")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    assert stderr.decode() == "error[cancelled]: interrupted by SIGINT\n" and stdout == b""
    assert not out.exists() or not list(out.iterdir())


def test_a_newline_or_tab_in_a_file_name_keeps_one_result_per_line(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A newline in a file name split its result line in two (scripts read one result per
    line); the name is now quoted as bash's $'...' reads it back, and so is a tab, a byte that
    is not UTF-8, and the name in an error line."""
    folder = env / "album"
    folder.mkdir()
    for name in ("a\nb.jpg", "c\td.jpg", os.fsdecode(b"e\xff.jpg"), "f -> g.jpg",
                 "plain name (1).jpg"):
        shutil.copy(shared_path("testdata", "photos", "04.jpg"), folder / name)
    (folder / "x\ny.jpg").write_bytes(b"not an image")
    assert main(["enhance-faces", "album", "-o", "out", "--model", "gfpgan"]) == 1
    out, err = capsys.readouterr()
    assert [line.rsplit(" (", 1)[0] for line in out.splitlines()] == [
        "$'album/a\\nb.jpg' -> $'out/a\\nb_enhanced.png'",
        "$'album/c\\td.jpg' -> $'out/c\\td_enhanced.png'",
        "$'album/e\\xff.jpg' -> $'out/e\\xff_enhanced.png'",
        "$'album/f -> g.jpg' -> $'out/f -> g_enhanced.png'",
        "album/plain name (1).jpg -> out/plain name (1)_enhanced.png"], out
    assert "error[unsupported_format]: $'album/x\\ny.jpg': " in err.splitlines()[0], err
    assert main(["restore-photo", "album/a\nb.jpg", "-o", "out2", "--no-face-enhancement"]) == 0
    assert capsys.readouterr().out.startswith("$'album/a\\nb.jpg' -> $'out2/a\\nb_restored.jpg' (")
    assert main(["enhance-faces", "album/no\nsuch.jpg"]) == 1
    assert one_error_line(capsys.readouterr().err).startswith(
        "error[file_not_found]: album/no\\nsuch.jpg does not exist")
    bash = shutil.which("bash")
    if bash:  # the quoted name is the file's name to a shell
        quoted = out.splitlines()[0].split(" -> ")[0]
        assert subprocess.run([bash, "-c", f"test -f {quoted}"], cwd=env).returncode == 0


def test_a_bad_serve_option_names_the_option_not_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`restora serve --port 99999` said "RESTORA_PORT: ..." although the user typed --port;
    the variable is named only when the value came from it. An empty --host (an unset shell
    variable) listened on every interface; it is refused, as an empty RESTORA_HOST is."""
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESTORA_PORT", raising=False)
    monkeypatch.delenv("RESTORA_HOST", raising=False)
    for port in ("99999", "-1"):
        assert main(["serve", "--port", port]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith("error[usage]: Invalid value for '--port': ") and \
            "RESTORA_PORT" not in line, line
    monkeypatch.setenv("RESTORA_PORT", "99999")
    assert main(["serve"]) == 1
    assert one_error_line(capsys.readouterr().err).startswith(
        "error[invalid_settings]: RESTORA_PORT: ")
    assert main(["worker", "--health-port", "70000"]) == 2
    assert "'--health-port'" in one_error_line(capsys.readouterr().err)
    for queue in ("", "q" * 101):  # '' consumed the default queue without a word
        assert main(["worker", "--queue", queue]) == 1
        assert one_error_line(capsys.readouterr().err).startswith(
            f"error[invalid_parameter]: --queue {queue!r}: String should have at ")
    monkeypatch.delenv("RESTORA_PORT")
    assert main(["serve", "--host", ""]) == 1
    assert one_error_line(capsys.readouterr().err).startswith(
        "error[invalid_parameter]: --host is empty: it would listen on every interface")
    monkeypatch.setenv("RESTORA_HOST", " ")
    assert main(["serve"]) == 1
    assert one_error_line(capsys.readouterr().err).startswith(
        "error[invalid_settings]: RESTORA_HOST is empty")


@pytest.mark.parametrize("command", ["enhance-faces", "restore-photo"])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
        env: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`-o ''` (`-o "$OUT"` with OUT unset) silently wrote into the current folder, and an
    empty INPUT searched the whole current folder; both are one invalid_parameter line now,
    and so is an empty --reference or --mask."""
    src = photo(env)
    before = sorted(p.name for p in env.iterdir())
    extra = ["--reference", ""] if command == "enhance-faces" else ["--mask", ""]
    flag = extra[0]
    for args, name in (([str(src), "-o", ""], "-o"), (["", "-o", "out"], "an INPUT"),
                       ([str(src), "-o", "out", *extra], flag)):
        assert main([command, *args]) == 1
        captured = capsys.readouterr()
        assert one_error_line(captured.err).startswith(
            f"error[invalid_parameter]: {name} is empty; give "), captured.err
        assert captured.out == ""
    assert sorted(p.name for p in env.iterdir()) == before  # nothing written anywhere


@pytest.mark.parametrize(("command", "suffix"), [("enhance-faces", "_enhanced.png"),
                                                 ("restore-photo", "_restored.jpg")])
def test_skip_existing_resumes_a_batch_without_redoing_it(
        env: Path, command: str, suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A re-run replaced every earlier result without a word, and an interrupted batch of
    thousands of photos could only start again from the first. The summary now counts the
    results replaced, and --skip-existing leaves an image whose result is there (not an empty
    one, nor the temporary file of a write that was cut), counting it as skipped."""
    from restora.io.files import temp_name

    folder = env / "album"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(shared_path("testdata", "photos", "04.jpg"), folder / name)
    out = env / "out"
    args = [command, "album", "-o", "out"] + (
        ["--no-face-enhancement"] if command == "restore-photo" else ["--model", "gfpgan"])
    assert main(args) == 0
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"{command}: 3 done, 0 failed, 0 skipped (of 3) in ")
    assert main(args) == 0  # by default a re-run replaces, and says so
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"{command}: 3 done, 0 failed, 0 skipped (of 3) in ") and \
        err.endswith(" s; 3 existing results replaced"), err
    results = sorted(out.iterdir())
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in results}

    assert main([*args, "--skip-existing"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"album/{n}.jpg -> out/{n}{suffix} (exists, skipped)" for n in "abc"], captured.out
    assert captured.err.splitlines()[-1].startswith(
        f"{command}: 0 done, 0 failed, 3 skipped (of 3) in "), captured.err
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.iterdir())} == \
        before  # no work, nothing rewritten

    (out / f"a{suffix}").write_bytes(b"")  # an empty file is no result
    (out / f"b{suffix}").unlink()
    temp_name(out / f"b{suffix}").write_bytes(b"partial")  # a write that was cut off
    assert main([*args, "--skip-existing", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["input"], r.get("skipped"), r["replaced"] if "replaced" in r else None)
            for r in records] == [("album/a.jpg", None, True), ("album/b.jpg", None, False),
                                  ("album/c.jpg", "exists", None)]
    assert records[2]["output"] == f"out/c{suffix}"
    assert (out / f"a{suffix}").stat().st_size > 0 and (out / f"b{suffix}").stat().st_size > 0
    assert (out / f"c{suffix}").stat().st_mtime_ns == before[f"c{suffix}"][0]


def test_a_bracket_in_a_file_name_is_shown_in_the_progress_bar_as_it_is(env: Path) -> None:
    """With stderr on a terminal (the progress bar), "IMG [b].jpg" was shown as a bold
    "IMG .jpg" and "scan [red].png" as a red "scan .png": the bar read the name as markup."""
    import pty
    import threading

    folder = env / "album"
    folder.mkdir()
    for name in ("scan [red].jpg", "IMG [b].jpg"):
        shutil.copy(shared_path("testdata", "photos", "04.jpg"), folder / name)
    master, slave = pty.openpty()
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end was closed
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "restora", "enhance-faces", "album", "-o",
                               "out", "--model", "gfpgan"], stdout=subprocess.PIPE,
                              stderr=slave, cwd=env, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src"),
                                   "COLUMNS": "200"})
    finally:
        os.close(slave)
        reader.join(timeout=60)
        os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "IMG [b].jpg" in text and "scan [red].jpg" in text, text[-400:]  # names as they are
    assert [line.split(" -> ")[0] for line in proc.stdout.decode().splitlines()] == [
        "album/IMG [b].jpg", "album/scan [red].jpg"]


@pytest.mark.parametrize(("args", "flag"), [
    (["enhance-faces", "--strength", "nan"], "--strength"),
    (["enhance-faces", "--identity-model", ""], "--identity-model"),
    (["restore-photo", "--denoise-strength", "200"], "--denoise-strength"),
    (["restore-photo", "--mask-mode", "bogus"], "--mask-mode"),
])
def test_a_bad_option_value_names_the_flag_typed(env: Path, args: list[str], flag: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`--denoise-strength 200` said "Invalid value for 'denoiseStrength'" (the HTTP field);
    the line now names the flag the user typed."""
    assert main([*args, str(photo(env)), "-o", "out"]) == 1
    assert one_error_line(capsys.readouterr().err).startswith(
        f"error[invalid_parameter]: Invalid value for '{flag}': ")


def test_serve_on_a_port_in_use_is_one_line_before_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A port already in use (or a host name that does not resolve) printed "serving on
    http://..." and then uvicorn's own error, exit 3; now one invalid_parameter line, naming
    where the value came from, and nothing starts."""
    import socket

    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESTORA_HOST", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
        assert one_error_line(capsys.readouterr().err) == (
            f"error[invalid_parameter]: port {port} (--port) is in use on 127.0.0.1; stop what "
            "listens there or give another --port")
        monkeypatch.setenv("RESTORA_PORT", str(port))
        assert main(["serve"]) == 1
        assert f"port {port} (RESTORA_PORT) is in use" in one_error_line(capsys.readouterr().err)
    assert main(["serve", "--host", "no-such-host.invalid", "--port", "0"]) == 1
    assert one_error_line(capsys.readouterr().err).startswith(
        "error[invalid_parameter]: cannot listen on 'no-such-host.invalid' (--host): ")


def test_dot_slash_dash_is_the_file_named_dash_not_standard_input(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`./-`, the usual way to name a file called "-", was standard input (pathlib drops the
    ./), so `restora enhance-faces ./-` waited on stdin and `-o ./-` wrote to stdout."""
    photo(env)
    shutil.copy(env / "04.jpg", env / "-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["enhance-faces", "./-", "-o", "out", "--model", "gfpgan"]) == 0
    assert capsys.readouterr().out.startswith(f"{env / '-'} -> out/-_enhanced.png (")
    (env / "-").unlink()
    assert main(["enhance-faces", "04.jpg", "-o", "./-", "--model", "gfpgan"]) == 0
    assert capsys.readouterr().out.startswith(f"04.jpg -> {env / '-' / '04_enhanced.png'} (")
    assert (env / "-" / "04_enhanced.png").is_file()


def test_ctrl_c_stops_serve_quietly_once_it_is_running(tmp_path: Path) -> None:
    """uvicorn re-raises Ctrl+C after its graceful shutdown; that normal stop must not end with
    the 'interrupted' error line that Ctrl+C while a command starts prints."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "RESTORA_HOME": str(tmp_path / "h")}
    with subprocess.Popen([sys.executable, "-m", "restora", "serve", "--port", str(port)],
                          stderr=subprocess.PIPE, env=env,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert "Application shutdown complete" in err.decode() and "error[" not in err.decode()
