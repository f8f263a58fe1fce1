"""`flashi2v` turns every expected failure into one line, `flashi2v: error: ...`, exit status 2, before any
work; nothing the user did not ask to replace is overwritten; a bug is one line naming a traceback file."""

import errno
import os
import re

import pytest

from flashi2v.cli import describe_error, main, report_error
from flashi2v.weights.cli import shard_size

EXAMPLE = "assets/examples/astronaut.jpg"
TINY = ["--steps", "1", "--num-frames", "1", "--height", "32", "--width", "32", "--seed", "0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def one_line_error(capsys, rc, match):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    last = err.splitlines()[-1]  # loading the model may print progress above it; the error is one line
    assert last.startswith("flashi2v: error:") and "Traceback" not in err, err
    assert re.search(match, last), last
    return last


def generate(out, *extra):
    return main(["generate", "--image", EXAMPLE, "--prompt", "the camera pans left", "--out", str(out), *extra])


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"my video")
    one_line_error(capsys, generate(out, *TINY), "already exists: pick a new file, or pass --overwrite")
    assert out.read_bytes() == b"my video"
    assert generate(out, *TINY, "--overwrite") == 0
    assert out.read_bytes() != b"my video" and out.stat().st_size > 100


def test_batch_checks_every_output_before_any_work(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a cat\na dog runs\n")
    (tmp_path / "v_001.mp4").write_bytes(b"keep")
    rc = main(["generate", "--image", EXAMPLE, "--prompts-file", str(tmp_path / "prompts.txt"),
               "--out", str(tmp_path / "v.mp4"), *TINY])
    one_line_error(capsys, rc, "v_001.mp4' already exists")
    assert not (tmp_path / "v_000.mp4").exists() and (tmp_path / "v_001.mp4").read_bytes() == b"keep"


def test_existing_strip_png_is_kept(tmp_path, capsys):
    (tmp_path / "v.png").write_bytes(b"strip")
    one_line_error(capsys, generate(tmp_path / "v.mp4", *TINY, "--strip"), "v.png' already exists")
    assert (tmp_path / "v.png").read_bytes() == b"strip"


def test_unwritable_outputs_fail_before_loading(tmp_path, capsys):
    (tmp_path / "dir.mp4").mkdir()
    one_line_error(capsys, generate(tmp_path / "dir.mp4", *TINY), "is a folder")
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, generate(tmp_path / "file" / "sub" / "v.mp4", *TINY), "'.*file' is a file, not a folder")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        one_line_error(capsys, generate(folder / "v.mp4", *TINY), "no permission to write in")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("flags,match", [
    (["--shift", "inf"], "argument --shift: 'inf' is not a finite number"),
    (["--guidance", "nan"], "argument --guidance: 'nan' is not a finite number"),
    (["--cutoff=-inf"], "argument --cutoff: '-inf' is not a finite number"),
    (["--step-cache", "inf"], "argument --step-cache: 'inf' is not a finite number"),
    (["--cutoff", "1"], "0 <= cutoff < 1"),
    (["--shift", "0"], "0 < shift"),
    (["--steps", "-2"], "steps -2 is out of range"),
    (["--guidance", "1e9"], "guidance 1000000000.0 is out of range"),
    (["--fps", "0"], "argument --fps: '0' must be > 0"),
    (["--seed", "-1"], "argument --seed: -1 is out of range"),
    (["--seed", str(2**63)], "argument --seed: 9223372036854775808 is out of range"),
    (["--num-frames", "ten"], "argument --num-frames: invalid int value"),
    (["--height", "136", "--width", "100"], "width 100 must be a multiple of 8 for this model"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_flags_are_one_line_before_loading(flags, match, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    one_line_error(capsys, generate(out, *flags), match)
    err = capsys.readouterr().err
    assert "built-in model" not in err and not out.exists()


def test_batch_seed_overflow(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a\nb\n")
    rc = main(["generate", "--image", EXAMPLE, "--prompts-file", str(tmp_path / "prompts.txt"), "--seed",
               str(2**63 - 1), "--out", str(tmp_path / "v.mp4")])
    one_line_error(capsys, rc, "seed 9223372036854775808 is out of range")


@pytest.mark.parametrize("size", [["--num-frames", "100001", "--height", "512", "--width", "512"],
                                  ["--height", "100000", "--width", "100000"]])
def test_sizes_that_cannot_fit_are_refused(size, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    one_line_error(capsys, generate(out, *size, "--device", "cpu"), "need at least [0-9,.]+ GiB")
    assert not out.exists()


def test_list_files_must_be_utf8_text(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_bytes(b"\xff\xfe\x00a prompt")
    rc = main(["generate", "--image", EXAMPLE, "--prompts-file", str(tmp_path / "prompts.txt"),
               "--out", str(tmp_path / "v.mp4")])
    one_line_error(capsys, rc, "is not UTF-8 text")


def test_float_options_of_other_commands_must_be_finite(tmp_path, capsys):
    rc = main(["data", "filter", "clips.jsonl", "--out", str(tmp_path / "o.jsonl"), "--min-aspect", "nan"])
    one_line_error(capsys, rc, "argument --min-aspect: 'nan' is not a finite number")
    rc = main(["data", "cache", "clips.jsonl", "--out", str(tmp_path / "c"), "--fps", "inf"])
    one_line_error(capsys, rc, "argument --fps: 'inf' is not a finite number")


def test_convert_max_shard_size_must_parse(tmp_path, capsys):
    assert shard_size("500mb") == 500 * 2**20 and shard_size(" 5 GB") == 5 * 2**30 and shard_size("1024") == 1024
    rc = main(["convert", "w.safetensors", str(tmp_path / "out"), "--max-shard-size", "5XB"])
    one_line_error(capsys, rc, "argument --max-shard-size: '5XB' is not a size")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "generate", "--prompt", "x", "--image", "missing.png", "--out", "outputs/never.mp4"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("flashi2v: error:")


def test_a_bug_is_one_line_with_a_traceback_file(capsys):
    try:
        raise KeyError("boom")
    except KeyError as err:
        assert report_error(err, debug=False) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("flashi2v: internal error: KeyError: 'boom'")
    path = re.search(r"traceback in (\S+);", err).group(1)
    try:
        assert "Traceback" in open(path).read()
    finally:
        os.unlink(path)


@pytest.mark.parametrize("error,match", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out.mp4"), "permission denied: '/data/out.mp4'"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out.mp4"), "no space left .* '/data/out.mp4'"),
    (MemoryError(), "out of memory .* --num-frames"),
])
def test_environment_errors_are_one_line(error, match):
    message = describe_error(error)
    assert message is not None and "\n" not in message and re.search(match, message), message


def test_torch_out_of_memory_is_one_line():
    import torch

    message = describe_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore"))
    assert message.startswith("out of memory (CUDA out of memory. Tried to allocate 20.00 GiB)")
