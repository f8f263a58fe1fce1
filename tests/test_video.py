"""Pixels in and out: images load or fail with one line, mp4 files round-trip, crops keep the aspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flashi2v.errors import FlashI2VError
from flashi2v.video import (
    center_crop_resize,
    image_to_tensor,
    load_image,
    read_video_frames,
    save_png_strip,
    to_uint8,
    write_mp4,
)


def gradient_video(frames=9, h=48, w=64) -> torch.Tensor:
    """A smooth moving colour gradient, uint8 T x H x W x 3 (what codecs reproduce well)."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    y = torch.linspace(0, 1, h)[None, :, None]
    x = torch.linspace(0, 1, w)[None, None, :]
    r = 40 + 170 * x + 4 * t + 0 * y
    g = 30 + 180 * y + 0 * x + 0 * t
    b = 200 - 120 * (x + y) / 2 + 3 * t
    return torch.stack([r, g, b], dim=-1).round().clamp(0, 255).to(torch.uint8)


def test_mp4_roundtrip(tmp_path):
    video = gradient_video()
    path = write_mp4(video, tmp_path / "sub" / "dir" / "clip.mp4", fps=16)
    assert path.is_file() and list(path.parent.iterdir()) == [path]
    frames, fps = read_video_frames(path)
    assert frames.shape == video.shape and frames.dtype == torch.uint8
    assert fps == pytest.approx(16)
    assert (frames.float() - video.float()).abs().mean() < 10


def test_mp4_numpy_input_and_mpeg4_fallback(tmp_path):
    video = gradient_video(frames=5).numpy()
    path = write_mp4(video, tmp_path / "clip.mp4", fps=8, codec="mpeg4")
    frames, fps = read_video_frames(path)
    assert frames.shape == video.shape and fps == pytest.approx(8)
    assert (frames.float() - torch.from_numpy(video).float()).abs().mean() < 10


def test_mp4_odd_size_is_edge_padded_to_even(tmp_path):
    video = gradient_video(frames=3, h=33, w=45)
    frames, _ = read_video_frames(write_mp4(video, tmp_path / "odd.mp4"))
    assert frames.shape == (3, 34, 46, 3)
    assert (frames[:, :33, :45].float() - video.float()).abs().mean() < 10


def test_mp4_overwrites_atomically(tmp_path):
    path = tmp_path / "clip.mp4"
    write_mp4(gradient_video(frames=3), path)
    write_mp4(gradient_video(frames=5), path)
    assert read_video_frames(path)[0].shape[0] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_mp4_rejects_bad_frames(tmp_path):
    with pytest.raises(FlashI2VError, match="uint8"):
        write_mp4(torch.zeros(3, 8, 8, 3), tmp_path / "x.mp4")
    with pytest.raises(FlashI2VError, match="T x H x W x 3"):
        write_mp4(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), tmp_path / "x.mp4")


def test_read_corrupt_or_missing_video_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(FlashI2VError, match="cannot read video"):
        read_video_frames(bad)
    with pytest.raises(FlashI2VError, match="no such file"):
        read_video_frames(tmp_path / "missing.mp4")


def test_png_strip(tmp_path):
    video = gradient_video(frames=9, h=10, w=12)
    path = save_png_strip(video, tmp_path / "strips" / "s.png", num=4)
    strip = np.asarray(Image.open(path))
    assert strip.shape == (10, 48, 3)
    np.testing.assert_array_equal(strip[:, :12], video[0].numpy())
    np.testing.assert_array_equal(strip[:, -12:], video[8].numpy())
    short = np.asarray(Image.open(save_png_strip(video[:2], tmp_path / "short.png", num=8)))
    assert short.shape == (10, 24, 3)


def test_load_image_and_errors(tmp_path):
    rgba = Image.new("RGBA", (7, 5), (10, 20, 30, 128))
    rgba.save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (7, 5)
    with pytest.raises(FlashI2VError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(FlashI2VError, match="directory"):
        load_image(tmp_path)
    (tmp_path / "x.txt").write_text("hello, not an image")
    with pytest.raises(FlashI2VError, match=r"cannot read image '.*x\.txt': not an image file"):
        load_image(tmp_path / "x.txt")


def test_image_to_tensor_range_and_inputs(tmp_path):
    array = (np.arange(20 * 30 * 3) % 256).astype(np.uint8).reshape(20, 30, 3)
    Image.fromarray(array).save(tmp_path / "img.png")
    from_path = image_to_tensor(tmp_path / "img.png", 20, 30)
    assert from_path.shape == (3, 20, 30) and from_path.dtype == torch.float32
    assert from_path.min() >= -1 and from_path.max() <= 1
    np.testing.assert_array_equal(to_uint8(from_path).permute(1, 2, 0).numpy(), array)
    torch.testing.assert_close(image_to_tensor(Image.fromarray(array), 20, 30), from_path)
    torch.testing.assert_close(image_to_tensor(torch.from_numpy(array), 20, 30), from_path)
    assert image_to_tensor(from_path, 16, 16).shape == (3, 16, 16)


def test_center_crop_keeps_aspect_on_non_square_input():
    """A wide image with a centred square block: after cropping to a square, the block stays square."""
    h, w = 40, 80
    image = torch.full((3, h, w), -1.0)
    image[:, 10:30, 30:50] = 1.0  # a 20 x 20 square in the middle
    out = center_crop_resize(image, 20, 20)  # scale 0.5, crop the central 20 x 20 of a 20 x 40 image
    bright = out[0] > 0
    rows, cols = bright.any(dim=1).nonzero(), bright.any(dim=0).nonzero()
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert height == width == 10
    # A stretch would make the block half as wide as it is tall; the left/right borders are cropped away.
    assert not bright[:, :5].any() and not bright[:, -5:].any()
