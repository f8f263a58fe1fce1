"""The bad-input corpus: ~240 broken inputs run through the CLI, each outcome classified.

    python scripts/bad_input_corpus.py                    # all cases, 2 at a time, JSON to outputs/bad_input_corpus.json
    python scripts/bad_input_corpus.py --only convert     # cases whose name contains 'convert'
    python scripts/bad_input_corpus.py --exec             # a fresh `python -m flashi2v.cli` per case (slower)

Every case builds its inputs in a temporary folder, runs one `flashi2v ...` command in its own process and
is classified (worst first):

- code executed: a pickle / YAML payload ran (its marker file exists);
- data loss: a file that existed before the command changed or vanished (hashes compared), other than
  the outputs the case allows;
- traceback: a Python traceback on stderr, a crash (exit status other than 0 and 2) or a timeout;
- accepted: exit 0 where an error was expected;
- messy error: exit 2, but the error is not one line, or not the last line of stderr;
- wrong result: a good-but-unusual input (16-bit PNG, EXIF rotation, ...) was accepted but the output
  check failed; refused: such an input was rejected;
- clean error (expected errors) / correct (expected successes): the pass outcomes.

A clean error is exit status 2 with the last stderr line starting "flashi2v: error: " (or argparse's
"flashi2v <command>: error: " for flags it rejects itself) and no traceback anywhere. Lines before it
(progress bars, the built-in model note, argparse's usage) are allowed. The script prints a table per
class, writes every case's outcome and last stderr line as JSON, and exits 1 unless every case passes.

By default each case runs in a process forked from this one after `flashi2v.cli` is imported (importing
torch once instead of ~240 times keeps the run to a few minutes on 2 cores); the child calls the same
`main(argv)` that `python -m flashi2v.cli` calls and prints an uncaught exception as the interpreter would.
`--exec` runs the real `python -m flashi2v.cli` instead. Add a case: append a `Case` to a `*_cases`
function (argv may use the workspace's {placeholders} and {d}, the case's own folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # cases run side by side; one thread each (before torch loads)
REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"  # --src replaces it, e.g. to measure an older checkout

CLASSES = ("security", "data loss", "damaged checkpoint", "malformed files", "bad options", "bad images",
           "wrong results")
PASS = ("clean error", "correct")
ERROR_LINE = re.compile(r"^flashi2v(?: [a-z-]+)*: error: \S")
MARKER = "PWNED"  # payloads create this file in the case folder; it must never appear


@dataclass
class Case:
    name: str
    klass: str
    argv: list[str]  # CLI arguments; "{key}" is a workspace path, "{d}" the case's own folder
    expect: str = "error"  # "error", or "ok" for good-but-unusual inputs whose result is checked
    setup: Callable[[Path, dict], None] | None = None  # builds case-local inputs in its folder
    check: Callable[[Path], str | None] | None = None  # "ok" cases: None, or what is wrong with the result
    may_change: tuple[str, ...] = ()  # names (relative to the case folder) the command may write
    timeout: float = 180.0


@dataclass
class Result:
    name: str
    klass: str
    outcome: str
    rc: int | None
    seconds: float
    last_line: str
    detail: str = ""
    argv: list[str] = field(default_factory=list)


# -- inputs --------------------------------------------------------------------------------------------


def _png(path: Path, width: int, height: int, rows: bytes | None = None, bit_depth: int = 8, colour_type: int = 0) -> Path:
    """A PNG written by hand: the header may claim any size (decompression bombs) or bit depth."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows or b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _photo(size: int = 128):
    import numpy as np

    y, x = np.mgrid[0:size, 0:size] / size
    return (np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], -1) * 255).astype(np.uint8)


def _evil_pickle(path: Path, marker: Path, form: str) -> None:
    """A torch/pickle file whose unpickling would run `touch marker` (os.system through __reduce__)."""
    import pickle

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    tensor = {"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}
    if form == "top":
        torch.save({"model": tensor, "args": Payload()}, path)
    elif form == "inside":
        torch.save({"model": {**tensor, "x": Payload()}}, path)
    elif form == "only":
        torch.save(Payload(), path)
    elif form == "legacy":
        torch.save({"model": tensor, "args": Payload()}, path, _use_new_zipfile_serialization=False)
    elif form == "raw":
        path.write_bytes(pickle.dumps({"ema_model": tensor, "evil": Payload()}))


def build_workspace(root: Path) -> dict:
    """Shared, read-only inputs of every case (built once, hashed before and after the whole run)."""
    import numpy as np
    import torch
    from PIL import Image

    from flashi2v import FlashI2VTransformer, preset
    from flashi2v.video import write_mp4

    ws = {"root": str(root)}
    Image.fromarray(_photo()).save(root / "photo.png")
    ws["img"] = str(root / "photo.png")
    torch.manual_seed(0)
    tiny = FlashI2VTransformer.from_config(preset("tiny"))
    tiny.save_pretrained(root / "tiny_ours")
    ws["tiny"] = str(root / "tiny_ours")
    shutil.copytree(SRC / "flashi2v" / "builtin_model", root / "model")
    ws["model"] = str(root / "model")
    clips = root / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for name, frames in (("a", 40), ("b", 40), ("short", 3)):
        write_mp4(rng.integers(0, 255, (frames, 32, 48, 3), dtype=np.uint8), clips / f"{name}.mp4", fps=16)
        (clips / f"{name}.txt").write_text(f"clip {name}")
    rows = [{"path": f"clips/{n}.mp4", "cap": f"clip {n}"} for n in ("a", "b", "short")]
    (root / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ws["index"] = str(root / "clips.jsonl")
    ws["clips"] = str(clips)
    return ws


def _copy_model(ws: dict, d: Path, name: str = "model") -> Path:
    dst = d / name
    shutil.copytree(ws["model"], dst)
    return dst


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    result = change(data)
    path.write_text(json.dumps(data if result is None else result))


# -- the cases, one function per class -----------------------------------------------------------------

def _gen(*extra: str, image: str = "{img}", model: str | None = None, steps: str = "1",
         out: str = "{d}/out.mp4") -> list[str]:
    """A generate command on the built-in model (or ``model``), a few steps on the CPU."""
    argv = ["generate", "--image", image, "--prompt", "a photo", "--steps", steps, "--out", out, "--device", "cpu",
            "--seed", "0", *extra]
    return argv + (["--model", model] if model else [])


def security_cases() -> list[Case]:
    cases = []
    for form in ("top", "inside", "only", "legacy", "raw"):
        def setup(d, ws, form=form):
            _evil_pickle(d / "evil.pt", d / MARKER, form)
        cases += [Case(f"convert pickle payload ({form})", "security", ["convert", "{d}/evil.pt", "{d}/out"], setup=setup),
                  Case(f"inspect pickle payload ({form})", "security", ["inspect", "{d}/evil.pt"], setup=setup)]

    def evil_folder(d, ws):
        (d / "iter_0000010").mkdir()
        _evil_pickle(d / "iter_0000010" / "model_state_dict.pt", d / MARKER, "top")
    cases.append(Case("convert GPU-branch folder with payload", "security", ["convert", "{d}/iter_0000010", "{d}/out"],
                      setup=evil_folder))

    def evil_yaml(d, ws):
        (d / "train.yaml").write_text(f'!!python/object/apply:os.system ["touch {d / MARKER}"]\n')
    cases.append(Case("train YAML with python tag", "security", ["train", "{d}/train.yaml", "--device", "cpu"],
                      setup=evil_yaml))

    def evil_yaml_nested(d, ws):
        (d / "train.yaml").write_text(f'model:\n  preset: !!python/object/apply:os.system ["touch {d / MARKER}"]\n')
    cases.append(Case("train YAML nested python tag", "security", ["train", "{d}/train.yaml", "--device", "cpu"],
                      setup=evil_yaml_nested))

    def traversal(d, ws):
        model = _copy_model(ws, d)
        index = model / "transformer" / "model.safetensors.index.json"
        _edit_json(index, lambda j: j["weight_map"].update({k: "../../../../etc/passwd" for k in list(j["weight_map"])[:1]}))
    cases += [Case("shard index path traversal (generate)", "security", _gen(model="{d}/model"), setup=traversal),
              Case("shard index path traversal (inspect)", "security", ["inspect", "{d}/model"], setup=traversal)]

    def absolute(d, ws):
        model = _copy_model(ws, d)
        index = model / "transformer" / "model.safetensors.index.json"
        _edit_json(index, lambda j: j["weight_map"].update({k: "/dev/zero" for k in list(j["weight_map"])[:1]}))
    cases.append(Case("shard index absolute path", "security", ["convert", "{d}/model", "{d}/out"], setup=absolute))

    def bomb(d, ws):
        _png(d / "bomb.png", 200_000, 200_000)
    cases.append(Case("decompression bomb 40 gigapixels", "security", _gen(image="{d}/bomb.png"), setup=bomb))

    def bomb2(d, ws):
        _png(d / "bomb.png", 12_000, 12_000)
    cases.append(Case("decompression bomb 144 megapixels", "security", _gen(image="{d}/bomb.png"), setup=bomb2))

    return cases


def data_loss_cases() -> list[Case]:
    cases = []

    def src_copy(d, ws):
        shutil.copytree(ws["tiny"], d / "src")

    for label, dst in (("DST is SRC", "{d}/src"), ("DST inside SRC", "{d}/src/converted"), ("SRC inside DST", "{d}"),
                       ("DST symlink to SRC", "{d}/link"), ("DST is SRC via ..", "{d}/src/../src")):
        def setup(d, ws):
            src_copy(d, ws)
            (d / "link").symlink_to(d / "src")
        for flag in ([], ["--overwrite"]):
            cases.append(Case(f"convert {label}{' --overwrite' if flag else ''}", "data loss",
                              ["convert", "{d}/src", dst, *flag], setup=setup))

    def pipeline_copy(d, ws):
        _copy_model(ws, d)
    for label, dst in (("onto itself", "{d}/model"), ("into its own transformer/", "{d}/model/transformer")):
        cases.append(Case(f"convert a pipeline folder {label}", "data loss", ["convert", "{d}/model", dst],
                          setup=pipeline_copy))

    def existing(d, ws):
        src_copy(d, ws)
        (d / "out").mkdir()
        (d / "out" / "notes.txt").write_text("my notes")
    cases.append(Case("convert into non-empty DST", "data loss", ["convert", "{d}/src", "{d}/out"], setup=existing))

    def existing_file(d, ws):
        src_copy(d, ws)
        (d / "out").write_text("a file")
    cases.append(Case("convert DST is a file", "data loss", ["convert", "{d}/src", "{d}/out"], setup=existing_file))

    def vae_in_dst(d, ws):
        src_copy(d, ws)
        (d / "out" / "vae").mkdir(parents=True)
        (d / "out" / "vae" / "config.json").write_text("{}")
    cases.append(Case("convert --vae inside DST", "data loss",
                      ["convert", "{d}/src", "{d}/out", "--vae", "{d}/out/vae", "--overwrite"], setup=vae_in_dst))

    def index_copy(d, ws):
        shutil.copytree(ws["clips"], d / "clips")
        shutil.copy(ws["index"], d / "clips.jsonl")
        (d / "link.jsonl").symlink_to(d / "clips.jsonl")
        os.link(d / "clips.jsonl", d / "hard.jsonl")
    filt = ["data", "filter", "{d}/clips.jsonl", "--min-pixels", "0", "--num-frames", "5"]
    for label, out in (("same path", "{d}/clips.jsonl"), ("via ./", "{d}/./clips.jsonl"),
                       ("via symlink", "{d}/link.jsonl"), ("via hard link", "{d}/hard.jsonl"),
                       ("via ..", "{d}/clips/../clips.jsonl")):
        for flag in ([], ["--overwrite"]):
            cases.append(Case(f"data filter --out is the index {label}{' --overwrite' if flag else ''}", "data loss",
                              [*filt, "--out", out, *flag], setup=index_copy))

    def out_exists(d, ws):
        index_copy(d, ws)
        (d / "kept.jsonl").write_text('{"path": "mine.mp4", "cap": "precious"}\n')
    cases.append(Case("data filter existing --out", "data loss", [*filt, "--out", "{d}/kept.jsonl"], setup=out_exists))
    cases.append(Case("data filter --out is a folder", "data loss", [*filt, "--out", "{d}/clips"], setup=index_copy))
    cache = ["data", "cache", "{d}/clips.jsonl", "--num-frames", "5", "--height", "16", "--width", "16",
             "--text-len", "8", "--device", "cpu"]
    cases.append(Case("data cache --out is the index", "data loss", [*cache, "--out", "{d}/clips.jsonl"], setup=index_copy))
    cases.append(Case("data cache --out is the video folder", "data loss", [*cache, "--out", "{d}/clips"], setup=index_copy))
    cases.append(Case("data cache --out holds the index", "data loss", [*cache, "--out", "{d}"], setup=index_copy))

    def cache_exists(d, ws):
        index_copy(d, ws)
        (d / "cache").mkdir()
        (d / "cache" / "index.json").write_text('{"samples": []}')
    cases.append(Case("data cache existing --out", "data loss", [*cache, "--out", "{d}/cache"], setup=cache_exists))

    def gen_exists(d, ws):
        (d / "out.mp4").write_bytes(b"an earlier video")
    cases.append(Case("generate over an existing --out", "data loss", _gen(), setup=gen_exists))

    def gen_dir(d, ws):
        (d / "out.mp4").mkdir()
        (d / "out.mp4" / "keep.txt").write_text("x")
    cases.append(Case("generate --out is a folder", "data loss", _gen(), setup=gen_dir))

    def eval_out_file(d, ws):
        (d / "report").write_text("keep")
    cases.append(Case("eval motion --out is a file", "data loss",
                      ["eval", "motion", "--out", "{d}/report", "--device", "cpu"], setup=eval_out_file))
    return cases


def damaged_checkpoint_cases() -> list[Case]:
    cases = []
    shard1, shard2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"

    def damage(fn):
        def setup(d, ws):
            fn(_copy_model(ws, d) / "transformer")
        return setup

    def truncate(name, keep):
        def fn(t):
            data = (t / name).read_bytes()
            (t / name).write_bytes(data[: int(len(data) * keep)])
        return fn

    damages = {
        "shard truncated to half": truncate(shard2, 0.5),
        "shard truncated to 8 bytes": truncate(shard1, 8 / 2e7),
        "shard empty": truncate(shard2, 0),
        "shard missing": lambda t: (t / shard2).unlink(),
        "shard random bytes": lambda t: (t / shard2).write_bytes(os.urandom(4096)),
        "shard header lies": lambda t: (t / shard2).write_bytes(struct.pack("<Q", 10**9) + b"{}"),
        "index missing": lambda t: (t / "model.safetensors.index.json").unlink(),
        "index truncated": lambda t: (t / "model.safetensors.index.json").write_text('{"weight_map": {'),
        "index names a missing shard": lambda t: _edit_json(t / "model.safetensors.index.json",
                                                            lambda j: j["weight_map"].update(extra="model-00003-of-00003.safetensors")),
        "index lists a tensor no shard holds": lambda t: _edit_json(t / "model.safetensors.index.json",
                                                                    lambda j: j["weight_map"].update({"blocks.99.x": shard1})),
        "index weight_map is a list": lambda t: (t / "model.safetensors.index.json").write_text('{"weight_map": []}'),
        "config.json missing": lambda t: (t / "config.json").unlink(),
        "tensor of the wrong shape": lambda t: _swap_tensor(t / shard2, "head.head.bias", (3,)),
        "tensor missing": lambda t: _swap_tensor(t / shard2, "head.head.bias", None),
        "transformer folder empty": lambda t: [p.unlink() for p in t.iterdir()],
    }
    for label, fn in damages.items():
        cases.append(Case(f"generate: {label}", "damaged checkpoint", _gen(model="{d}/model"), setup=damage(fn)))
        if label in ("shard truncated to half", "shard missing", "index truncated", "index names a missing shard",
                     "tensor of the wrong shape", "shard header lies"):
            if label == "tensor of the wrong shape":  # inspect's job is to show such problems: exit 0, named
                cases.append(Case(f"inspect: {label}", "damaged checkpoint", ["inspect", "{d}/model"], expect="ok",
                                  setup=damage(fn), check=_stdout_names("shape-mismatched: head.head.bias")))
            else:
                cases.append(Case(f"inspect: {label}", "damaged checkpoint", ["inspect", "{d}/model"], setup=damage(fn)))
            cases.append(Case(f"convert: {label}", "damaged checkpoint", ["convert", "{d}/model", "{d}/out"],
                              setup=damage(fn)))

    def no_transformer(d, ws):
        shutil.rmtree(_copy_model(ws, d) / "transformer")
    cases.append(Case("generate: pipeline folder without transformer/", "damaged checkpoint", _gen(model="{d}/model"),
                      setup=no_transformer))

    def vae_gone(d, ws):
        (_copy_model(ws, d) / "vae" / "codec.safetensors").unlink()
    cases.append(Case("generate: vae weights missing", "damaged checkpoint", _gen(model="{d}/model"), setup=vae_gone))

    def te_gone(d, ws):
        shutil.rmtree(_copy_model(ws, d) / "text_encoder")
    cases.append(Case("generate: text_encoder missing", "damaged checkpoint", _gen(model="{d}/model"), setup=te_gone))

    for label, data in (("empty .pt", b""), ("truncated zip .pt", b"PK\x03\x04" + b"\0" * 30),
                        ("text file .pt", b"hello"), ("random .safetensors", None)):
        def setup(d, ws, data=data):
            name = "w.safetensors" if data is None else "w.pt"
            (d / name).write_bytes(os.urandom(1000) if data is None else data)
        name = "w.safetensors" if data is None else "w.pt"
        cases += [Case(f"convert {label}", "damaged checkpoint", ["convert", f"{{d}}/{name}", "{d}/out"], setup=setup),
                  Case(f"inspect {label}", "damaged checkpoint", ["inspect", f"{{d}}/{name}"], setup=setup)]

    def unknown_ext(d, ws):
        (d / "w.onnx").write_bytes(b"\0" * 100)
    cases.append(Case("convert unknown extension", "damaged checkpoint", ["convert", "{d}/w.onnx", "{d}/out"],
                      setup=unknown_ext))
    cases.append(Case("convert missing source", "damaged checkpoint", ["convert", "{d}/nothing.pt", "{d}/out"]))
    cases.append(Case("generate --model missing folder", "damaged checkpoint", _gen(model="{d}/nothing")))
    cases.append(Case("train --resume from a missing step", "damaged checkpoint",
                      ["train", "tiny", "data.index={index}", "recipe.steps=1", "output.dir={d}/run", "--resume",
                       "{d}/run/step-5", "--device", "cpu"], may_change=("run",)))

    def bad_init(d, ws):
        (d / "init.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}")
    cases.append(Case("train model.init damaged", "damaged checkpoint",
                      ["train", "tiny", "data.index={index}", "model.init={d}/init.safetensors", "recipe.steps=1",
                       "output.dir={d}/run", "--device", "cpu"], setup=bad_init, may_change=("run",)))
    return cases


def _stdout_names(text: str) -> Callable[[Path], str | None]:
    def check(d: Path) -> str | None:
        return None if text in (d / "stdout.txt").read_text() else f"the report does not say {text!r}"
    return check


def _swap_tensor(path: Path, key: str, shape) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    if shape is None:
        state.pop(key)
    else:
        state[key] = torch.zeros(shape)
    save_file(state, str(path))


def malformed_file_cases() -> list[Case]:
    cases = []

    def config_edit(label, change, where="transformer/config.json"):
        def setup(d, ws):
            path = _copy_model(ws, d) / where
            if callable(change):
                _edit_json(path, change)
            else:
                path.write_bytes(change)
        return Case(f"{where}: {label}", "malformed files", _gen(model="{d}/model"), setup=setup)

    for label, change in (("invalid JSON", b'{"dim": 320,'), ("empty file", b""), ("not UTF-8", b'\xff\xfe{"dim": 320}'),
                          ("top-level list", b"[320]"), ("dim is text", lambda j: j.update(dim="320")),
                          ("dim zero", lambda j: j.update(dim=0)), ("num_layers negative", lambda j: j.update(num_layers=-6)),
                          ("patch_size a mapping", lambda j: j.update(patch_size={"t": 1})),
                          ("patch_size two values", lambda j: j.update(patch_size=[2, 2])),
                          ("eps text", lambda j: j.update(eps="tiny")), ("unknown key", lambda j: j.update(hidden=1)),
                          ("num_heads not dividing dim", lambda j: j.update(num_heads=7)),
                          ("text_len float", lambda j: j.update(text_len=32.5)),
                          ("cross_attn_norm text", lambda j: j.update(cross_attn_norm="yes"))):
        cases.append(config_edit(label, change))
    for label, change in (("invalid JSON", b'{"defaults": {'), ("top-level list", b"[]"),
                          ("defaults a list", lambda j: j.update(defaults=[12])),
                          ("steps text", lambda j: j["defaults"].update(steps="twelve")),
                          ("steps zero", lambda j: j["defaults"].update(steps=0)),
                          ("height not a multiple of 16", lambda j: j["defaults"].update(height=100)),
                          ("signed_fourier text", lambda j: j.update(signed_fourier="no"))):
        cases.append(config_edit(label, change, "pipeline.json"))
    for label, change in (("invalid JSON", b"{"), ("channels text", lambda j: j.update(channels="16"))):
        cases.append(config_edit(label, change, "vae/config.json"))
    cases.append(config_edit("invalid JSON", b"{", "text_encoder/source.json"))

    def hint(text):
        def setup(d, ws):
            shutil.copytree(ws["tiny"], d / "src")
            (d / "src" / "config.json").write_bytes(text)
        return setup
    for label, text in (("invalid JSON", b'{"num_heads": 4'), ("num_heads text", b'{"num_heads": "four"}'),
                        ("top-level list", b"[4]")):
        cases.append(Case(f"convert: config.json beside weights {label}", "malformed files",
                          ["convert", "{d}/src", "{d}/out"], setup=hint(text)))

    lines_cases = {
        "bad JSON line": '{"path": "clips/a.mp4", "cap": "a"}\n{"path": \n',
        "list on a line": '[{"path": "clips/a.mp4", "cap": "a"}]\n',
        "missing cap": '{"path": "clips/a.mp4"}\n',
        "missing path": '{"cap": "a"}\n',
        "path is a number": '{"path": 5, "cap": "a"}\n',
        "cap is a mapping": '{"path": "clips/a.mp4", "cap": {"en": "a"}}\n',
        "resolution a list": '{"path": "clips/a.mp4", "cap": "a", "resolution": [32, 48]}\n',
        "height zero": '{"path": "clips/a.mp4", "cap": "a", "resolution": {"height": 0, "width": 48}, "fps": 16, "num_frames": 40}\n',
        "fps zero": '{"path": "clips/a.mp4", "cap": "a", "resolution": {"height": 32, "width": 48}, "fps": 0, "num_frames": 40}\n',
        "fps text": '{"path": "clips/a.mp4", "cap": "a", "fps": "fast"}\n',
        "num_frames negative": '{"path": "clips/a.mp4", "cap": "a", "num_frames": -1}\n',
        "cut reversed": '{"path": "clips/a.mp4", "cap": "a", "cut": [9, 2]}\n',
        "cut of text": '{"path": "clips/a.mp4", "cap": "a", "cut": ["0", "9"]}\n',
        "a bare string line": '"clips/a.mp4"\n',
        "only blank lines": "\n\n",
    }
    json_cases = {"a mapping, not a list": '{"path": "clips/a.mp4", "cap": "a"}', "invalid JSON": '[{"path": ',
                  "a number": "5", "records of numbers": "[1, 2]"}
    for suffix, table in ((".jsonl", lines_cases), (".json", json_cases)):
        for label, text in table.items():
            def setup(d, ws, text=text, name=f"clips{suffix}"):
                shutil.copytree(ws["clips"], d / "clips")
                (d / name).write_text(text)
            cases.append(Case(f"data filter {suffix}: {label}", "malformed files",
                              ["data", "filter", f"{{d}}/clips{suffix}", "--out", "{d}/kept.jsonl"], setup=setup))

    def non_utf8(d, ws):
        (d / "clips.jsonl").write_bytes(b'{"path": "a.mp4", "cap": "caf\xe9"}\n')
    cases.append(Case("data filter index not UTF-8", "malformed files",
                      ["data", "filter", "{d}/clips.jsonl", "--out", "{d}/kept.jsonl"], setup=non_utf8))
    cases.append(Case("data cache index not UTF-8", "malformed files",
                      ["data", "cache", "{d}/clips.jsonl", "--out", "{d}/cache", "--device", "cpu"], setup=non_utf8))

    def csv_index(d, ws):
        (d / "clips.csv").write_text("path,cap\na.mp4,a\n")
    cases.append(Case("data filter index .csv", "malformed files",
                      ["data", "filter", "{d}/clips.csv", "--out", "{d}/kept.jsonl"], setup=csv_index))

    yaml_cases = {"invalid YAML": "model: [tiny\n", "top-level list": "- model\n", "unknown section": "modle:\n  preset: tiny\n",
                  "unknown key": "recipe:\n  stepz: 3\n", "steps text": "recipe:\n  steps: many\n",
                  "section a list": "recipe: [1, 2]\n", "not UTF-8": None}
    for label, text in yaml_cases.items():
        def setup(d, ws, text=text):
            if text is None:
                (d / "train.yaml").write_bytes(b"model:\n  preset: t\xe9ny\n")
            else:
                (d / "train.yaml").write_text(text)
        cases.append(Case(f"train config: {label}", "malformed files", ["train", "{d}/train.yaml", "--device", "cpu"],
                          setup=setup))

    def prompts_bin(d, ws):
        (d / "prompts.txt").write_bytes(b"caf\xe9\n")
    cases.append(Case("generate --prompts-file not UTF-8", "malformed files",
                      ["generate", "--image", "{img}", "--prompts-file", "{d}/prompts.txt", "--out", "{d}/o.mp4"],
                      setup=prompts_bin))

    def images_list(d, ws):
        (d / "images.txt").write_text(f"{ws['img']}\n{d / 'missing.png'}\n")
    cases.append(Case("generate --images-file names a missing image", "malformed files",
                      ["generate", "--images-file", "{d}/images.txt", "--prompt", "x", "--out", "{d}/o.mp4"],
                      setup=images_list))
    return cases


def bad_option_cases() -> list[Case]:
    cases = []
    for flags in (["--steps", "0"], ["--steps", "-3"], ["--steps", "ten"], ["--num-frames", "4"], ["--num-frames", "0"],
                  ["--height", "100"], ["--height", "0"], ["--width", "-16"], ["--guidance", "nan"],
                  ["--guidance", "-1"], ["--shift", "0"], ["--shift", "inf"], ["--cutoff", "1.5"], ["--cutoff", "-0.1"],
                  ["--fps", "0"], ["--fps", "-16"], ["--device", "tpu"], ["--device", "cuda:7"], ["--dtype", "int8"],
                  ["--step-cache", "-1"], ["--seed", "1.5"], ["--solver", "rk45"]):
        cases.append(Case(f"generate {' '.join(flags)}", "bad options", _gen(*flags)))
    cases.append(Case("generate --out not .mp4", "bad options", _gen(out="{d}/out.avi")))
    cases.append(Case("generate without --prompt", "bad options", ["generate", "--image", "{img}", "--out", "{d}/o.mp4"]))
    for flags in (["--max-shard-size", "lots"], ["--max-shard-size", "0"], ["--max-shard-size", "-1GB"],
                  ["--max-shard-size", "5XB"], ["--num-heads", "0"], ["--num-heads", "-4"], ["--num-heads", "3"],
                  ["--dtype", "int8"], ["--layout", "nope"], ["--proj-kernel", "5x5x5"]):
        cases.append(Case(f"convert {' '.join(flags)}", "bad options", ["convert", "{tiny}", "{d}/out", *flags]))
    cases.append(Case("inspect --num-heads 0", "bad options", ["inspect", "{tiny}", "--num-heads", "0"]))
    filt = ["data", "filter", "{index}", "--out", "{d}/kept.jsonl"]
    for flags in (["--num-frames", "0"], ["--fps", "0"], ["--fps", "nan"], ["--min-aspect", "3", "--max-aspect", "1"],
                  ["--min-pixels", "-1"], ["--min-aspect", "-1"]):
        cases.append(Case(f"data filter {' '.join(flags)}", "bad options", [*filt, *flags]))
    cache = ["data", "cache", "{index}", "--out", "{d}/cache", "--device", "cpu"]
    for flags in (["--shard-size", "0"], ["--text-len", "0"], ["--num-frames", "0"], ["--height", "0"],
                  ["--fps", "-1"], ["--components", "{d}/nothing"]):
        cases.append(Case(f"data cache {' '.join(flags)}", "bad options", [*cache, *flags]))
    train = ["train", "tiny", "data.index={index}", "output.dir={d}/run", "--device", "cpu"]
    for overrides in (["recipe.steps=-1"], ["recipe.nope=1"], ["nosection.x=1"], ["recipe.steps"], ["recipe.steps=ten"],
                      ["optim.lr=-1"], ["recipe.batch_size=0"], ["data.num_frames=0"]):
        cases.append(Case(f"train {' '.join(overrides)}", "bad options", [*train, *overrides], may_change=("run",)))
    cases.append(Case("train unknown preset", "bad options", ["train", "nonexistent", "--device", "cpu"]))
    cases.append(Case("train data.index missing", "bad options",
                      ["train", "tiny", "data.index={d}/none.jsonl", "output.dir={d}/run", "--device", "cpu"],
                      may_change=("run",)))
    cases.append(Case("eval motion --photos missing", "bad options",
                      ["eval", "motion", "--photos", "{d}/none", "--out", "{d}/e", "--device", "cpu"]))
    cases.append(Case("eval motion --model missing", "bad options",
                      ["eval", "motion", "--model", "{d}/none", "--out", "{d}/e", "--device", "cpu"]))
    cases.append(Case("eval motion --seed text", "bad options",
                      ["eval", "motion", "--seed", "abc", "--out", "{d}/e", "--device", "cpu"]))
    return cases


def bad_image_cases() -> list[Case]:
    cases = []

    def make(fn):
        def setup(d, ws):
            fn(d, Path(ws["img"]).read_bytes())
        return setup

    def video_as_image(d, ws):
        shutil.copy(Path(ws["clips"]) / "a.mp4", d / "x.png")

    images = {
        "truncated PNG": lambda d, png: (d / "x.png").write_bytes(png[: len(png) // 2]),
        "PNG cut after the header": lambda d, png: (d / "x.png").write_bytes(png[:60]),
        "garbage after a PNG signature": lambda d, png: (d / "x.png").write_bytes(png[:16] + os.urandom(2000)),
        "empty file": lambda d, png: (d / "x.png").write_bytes(b""),
        "text named .png": lambda d, png: (d / "x.png").write_text("not an image"),
        "PDF named .png": lambda d, png: (d / "x.png").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"),
        "SVG": lambda d, png: (d / "x.png").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>'),
        "1x1 image": lambda d, png: _pil_save(d / "x.png", "RGB", (1, 1)),
        "8x8 image": lambda d, png: _pil_save(d / "x.png", "RGB", (8, 8)),
        "1x4000 sliver": lambda d, png: _pil_save(d / "x.png", "RGB", (1, 4000)),
        "zero-size PNG header": lambda d, png: _png(d / "x.png", 0, 0),
        "CRC-broken PNG": lambda d, png: (d / "x.png").write_bytes(png[:29] + b"\0\0\0\0" + png[33:]),
    }
    for label, fn in images.items():
        cases.append(Case(f"generate image: {label}", "bad images", _gen(image="{d}/x.png"), setup=make(fn)))
    cases.append(Case("generate image: a video file", "bad images", _gen(image="{d}/x.png"), setup=video_as_image))
    cases.append(Case("generate image: a directory", "bad images", _gen(image="{d}")))
    cases.append(Case("generate image: missing", "bad images", _gen(image="{d}/missing.png")))
    cases.append(Case("generate image: broken symlink", "bad images", _gen(image="{d}/x.png"),
                      setup=lambda d, ws: (d / "x.png").symlink_to(d / "gone.png")))
    return cases


def _pil_save(path: Path, mode: str, size, colour=0, **kwargs) -> None:
    from PIL import Image

    Image.new(mode, size, colour).save(path, **kwargs)


def _first_frame(d: Path):
    from flashi2v.video import read_video_frames

    frames, _ = read_video_frames(d / "out.mp4")
    return frames[0].float().numpy()


def wrong_result_cases() -> list[Case]:
    import numpy as np

    cases = []
    ok_gen = _gen(image="{d}/x.png", steps="2")  # two steps: frame 0 already close to the image

    def with_image(fn):
        def setup(d, ws):
            fn(d / "x.png")
        return setup

    def grey16(path):
        from PIL import Image

        Image.fromarray(np.full((128, 128), 30000, np.uint16)).save(path)

    def check_mean(expected, tol=30):
        def check(d):
            mean = _first_frame(d).mean(axis=(0, 1))
            if np.abs(mean - np.array(expected)).max() > tol:
                return f"first frame mean {mean.round(1).tolist()}, expected about {expected}"
            return None
        return check

    cases.append(Case("16-bit grey PNG keeps its brightness", "wrong results", ok_gen,
                      expect="ok", setup=with_image(grey16), check=check_mean([117, 117, 117]), may_change=("out.mp4",)))

    def rgba_half(path):
        from PIL import Image

        rgba = np.zeros((128, 128, 4), np.uint8)
        rgba[:, :64] = (40, 40, 200, 255)  # opaque blue left half, transparent black right half
        Image.fromarray(rgba, "RGBA").save(path)

    def check_rgba(d):
        frame = _first_frame(d)
        right = frame[:, 80:].mean()
        return None if right > 180 else f"transparent half came out dark (mean {right:.0f}): alpha not composited on white"
    cases.append(Case("transparent PNG composited on white", "wrong results", ok_gen,
                      expect="ok", setup=with_image(rgba_half), check=check_rgba, may_change=("out.mp4",)))

    def exif_rotated(path):
        from PIL import Image

        array = np.zeros((128, 256, 3), np.uint8)
        array[:, :128] = 255  # stored landscape: white left half
        image = Image.fromarray(array)
        exif = image.getexif()
        exif[0x0112] = 6  # display rotated 90 degrees clockwise: white on top
        image.save(path.with_suffix(".jpg"), exif=exif.tobytes(), quality=95)
        path.with_suffix(".jpg").rename(path)

    def check_exif(d):
        frame = _first_frame(d)
        top, bottom = frame[:48].mean(), frame[80:].mean()
        return None if top > bottom + 80 else f"EXIF orientation ignored (top {top:.0f}, bottom {bottom:.0f})"
    cases.append(Case("EXIF-rotated JPEG is upright", "wrong results", ok_gen,
                      expect="ok", setup=with_image(exif_rotated), check=check_exif, may_change=("out.mp4",)))

    def flat(path):
        _pil_save(path, "RGB", (64, 64), (200, 30, 30))

    def check_flat(d):
        frame = _first_frame(d)
        problem = check_mean([200, 30, 30], 20)(d)
        spread = frame.std(axis=(0, 1)).max()
        return problem or (None if spread < 12 else f"flat image gave a patterned first frame (std {spread:.1f})")
    cases.append(Case("flat colour image gives a flat first frame", "wrong results",
                      ok_gen, expect="ok", setup=with_image(flat), check=check_flat,
                      may_change=("out.mp4",)))

    def cmyk(path):
        _pil_save(path.with_suffix(".jpg"), "CMYK", (64, 64), (0, 255, 255, 0), quality=95)  # red in CMYK
        path.with_suffix(".jpg").rename(path)
    cases.append(Case("CMYK JPEG keeps its colours", "wrong results", ok_gen,
                      expect="ok", setup=with_image(cmyk), check=check_mean([255, 0, 0], 45), may_change=("out.mp4",)))

    def check_filter(d):
        rows = [json.loads(line) for line in (d / "kept.jsonl").read_text().splitlines()]
        names = sorted(Path(r["path"]).name for r in rows)
        return None if names == ["a.mp4", "b.mp4"] else f"kept {names}, expected a.mp4 and b.mp4"

    def index_with_gone(d, ws):
        shutil.copytree(ws["clips"], d / "clips")
        rows = [{"path": f"clips/{n}.mp4", "cap": "caf\u00e9 \u6771\u4eac"} for n in ("a", "b", "short", "gone")]
        (d / "clips.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cases.append(Case("data filter keeps exactly the usable clips", "wrong results",
                      ["data", "filter", "{d}/clips.jsonl", "--out", "{d}/kept.jsonl", "--min-pixels", "0",
                       "--num-frames", "9"], expect="ok", setup=index_with_gone, check=check_filter,
                      may_change=("kept.jsonl",)))

    def check_convert(d):
        from safetensors.torch import load_file

        ours = load_file(str(d / "out" / "transformer" / "model.safetensors"))
        source = load_file(str(d / "src" / "model.safetensors"))
        same = set(ours) == set(source) and all(bool((ours[k] == source[k]).all()) for k in ours)
        return None if same else "converted tensors differ from the source"
    cases.append(Case("convert keeps every tensor bit-exact", "wrong results", ["convert", "{d}/src", "{d}/out"],
                      expect="ok", setup=lambda d, ws: shutil.copytree(ws["tiny"], d / "src"), check=check_convert,
                      may_change=("out",)))
    return cases


CASE_FUNCTIONS = (security_cases, data_loss_cases, damaged_checkpoint_cases, malformed_file_cases, bad_option_cases,
                  bad_image_cases, wrong_result_cases)


def all_cases() -> list[Case]:
    return [case for fn in CASE_FUNCTIONS for case in fn()]


# -- running -------------------------------------------------------------------------------------------


def _hash_tree(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _fill(argv: list[str], ws: dict, d: Path) -> list[str]:
    return [a.format(d=d, **ws) for a in argv]


def _start_forked(argv: list[str], d: Path) -> int:
    """Fork; the child runs the CLI's main(argv) in ``d`` with stdout/stderr in files, as `python -m` would."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.chdir(d)
        os.setpgid(0, 0)
        for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
            target = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = ["flashi2v", *argv]
        from flashi2v.cli import main

        try:
            code = main(argv)
        except SystemExit as err:  # argparse
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
            if isinstance(err.code, str):
                print(err.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - printed exactly as the interpreter prints an uncaught exception
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _start_exec(argv: list[str], d: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "flashi2v.cli", *argv], cwd=d, env=env, start_new_session=True,
                            stdout=open(d / "stdout.txt", "wb"), stderr=open(d / "stderr.txt", "wb"))


def classify(case: Case, rc: int | None, stderr: str, timed_out: bool, lost: list[str], marker: bool,
             problem: str | None) -> tuple[str, str]:
    """(outcome, detail): the worst thing that happened, see the module docstring."""
    if marker:
        return "code executed", "the payload's marker file was created"
    if lost:
        return "data loss", f"changed or removed: {', '.join(lost[:3])}"
    if timed_out:
        return "traceback", f"timed out after {case.timeout:.0f} s"
    if "Traceback (most recent call last)" in stderr or rc not in (0, 2):
        return "traceback", f"exit status {rc}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if case.expect == "error":
        if rc == 0:
            return "accepted", "exit 0"
        errors = [i for i, line in enumerate(lines) if ERROR_LINE.match(line)]
        if len(errors) == 1 and errors[0] == len(lines) - 1:
            return "clean error", ""
        return "messy error", f"{len(errors)} error line(s) among {len(lines)} stderr lines"
    if rc != 0:
        return "refused", "a good input was rejected"
    return ("wrong result", problem) if problem else ("correct", "")


def run_all(cases: list[Case], root: Path, jobs: int, use_exec: bool) -> list[Result]:
    ws_root = root / "workspace"
    ws_root.mkdir()
    ws = build_workspace(ws_root)
    shared_before = _hash_tree(ws_root)
    pending = list(enumerate(cases))
    running: dict = {}  # key -> (index, case, dir, started, handle, before)
    finished: dict[int, tuple] = {}
    while pending or running:
        while pending and len(running) < jobs:
            i, case = pending.pop(0)
            d = root / "cases" / f"{i:03d}"
            d.mkdir(parents=True)
            try:
                if case.setup:
                    case.setup(d, ws)
            except Exception as err:  # noqa: BLE001 - a broken case is reported, not fatal to the corpus
                finished[i] = (case, d, None, False, 0.0, f"setup failed: {err!r}", {})
                continue
            before = _hash_tree(d)
            argv = _fill(case.argv, ws, d)
            handle = _start_exec(argv, d) if use_exec else _start_forked(argv, d)
            key = handle.pid if use_exec else handle
            running[key] = (i, case, d, time.monotonic(), handle, before)
        time.sleep(0.05)
        for key, (i, case, d, started, handle, before) in list(running.items()):
            if use_exec:
                rc = handle.poll()
                done = rc is not None
            else:
                pid, status = os.waitpid(key, os.WNOHANG)
                done = pid != 0
                rc = os.waitstatus_to_exitcode(status) if done else None
            elapsed = time.monotonic() - started
            timed_out = not done and elapsed > case.timeout
            if timed_out:
                os.killpg(key, signal.SIGKILL)
                if use_exec:
                    handle.wait()
                else:
                    os.waitpid(key, 0)
            if done or timed_out:
                del running[key]
                finished[i] = (case, d, rc, timed_out, elapsed, "", before)
    results = []
    for i in sorted(finished):
        case, d, rc, timed_out, elapsed, setup_error, before = finished[i]
        argv = _fill(case.argv, ws, d)
        if setup_error:
            results.append(Result(case.name, case.klass, "setup failed", None, 0.0, "", setup_error, argv))
            continue
        stderr = (d / "stderr.txt").read_text(errors="replace")
        after = _hash_tree(d)
        lost = [name for name, digest in before.items() if after.get(name) != digest
                and not any(name == m or name.startswith(m + "/") for m in case.may_change)]
        problem = None
        if case.expect == "ok" and rc == 0 and case.check:
            try:
                problem = case.check(d)
            except Exception as err:  # noqa: BLE001
                problem = f"check failed: {err!r}"
        outcome, detail = classify(case, rc, stderr, timed_out, lost, (d / MARKER).exists(), problem)
        last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
        results.append(Result(case.name, case.klass, outcome, rc, round(elapsed, 1), last[:300], detail, argv))
    if _hash_tree(ws_root) != shared_before:
        results.append(Result("shared workspace unchanged", "data loss", "data loss", None, 0.0, "",
                              "a case changed the shared inputs"))
    return results


def report(results: list[Result]) -> str:
    outcomes = sorted({r.outcome for r in results}, key=lambda o: (o not in PASS, o))
    width = max(len(c) for c in CLASSES) + 2
    head = f"{'class':<{width}}{'cases':>6}" + "".join(f"{o:>15}" for o in outcomes)
    rows = [head, "-" * len(head)]
    for klass in (*CLASSES, *sorted({r.klass for r in results} - set(CLASSES))):
        mine = [r for r in results if r.klass == klass]
        if not mine:
            continue
        counts = Counter(r.outcome for r in mine)
        rows.append(f"{klass:<{width}}{len(mine):>6}" + "".join(f"{counts.get(o, 0):>15}" for o in outcomes))
    counts = Counter(r.outcome for r in results)
    rows.append(f"{'all':<{width}}{len(results):>6}" + "".join(f"{counts.get(o, 0):>15}" for o in outcomes))
    failures = [r for r in results if r.outcome not in PASS]
    if failures:
        rows += ["", "not passing:"]
        rows += [f"  [{r.outcome}] {r.klass}: {r.name} -- {r.detail or r.last_line}" for r in failures]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="run only cases whose name or class contains this text")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default %(default)s)")
    parser.add_argument("--exec", action="store_true", dest="use_exec", help="a fresh `python -m flashi2v.cli` per case")
    parser.add_argument("--json", default="outputs/bad_input_corpus.json", help="where to write the results (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--src", default=None, help="the flashi2v source folder to test (default: this checkout's src/)")
    args = parser.parse_args()
    global SRC
    SRC = Path(args.src).resolve() if args.src else SRC
    sys.path.insert(0, str(SRC))
    cases = [c for c in all_cases() if not args.only or args.only in c.name or args.only in c.klass]
    if args.list:
        for c in cases:
            print(f"{c.klass:<20} {c.name}")
        print(f"{len(cases)} cases")
        return 0
    if not args.use_exec:
        import flashi2v.cli  # noqa: F401 - imported once here; every forked case reuses it
    root = Path(tempfile.mkdtemp(prefix="flashi2v-corpus-"))
    start = time.monotonic()
    try:
        results = run_all(cases, root, max(1, args.jobs), args.use_exec)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(report(results))
    print(f"\n{len(results)} cases against {SRC} in {time.monotonic() - start:.0f} s "
          f"({'python -m flashi2v.cli' if args.use_exec else 'forked main()'} per case, {args.jobs} at a time)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1, ensure_ascii=False) + "\n")
    print(f"results: {args.json}")
    return 0 if all(r.outcome in PASS for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
