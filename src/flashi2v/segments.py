"""Longer videos by chaining: N clips, each conditioned on the last frame of the one before.

Segment k+1 starts from segment k's last frame, so the joined video holds that frame once:
N segments of F frames give N (F - 1) + 1 frames. Each segment draws its noise from one generator
seeded once, so a seed gives the same video on any device and, with the counter-measures off, segment 1
equals a single generation with that seed.

Chaining drifts: every segment re-encodes a generated frame and the errors add up (colour, exposure,
sharpness). Three counter-measures, each measured by ``scripts/segments_drift.py`` (docs/usage.md,
"Longer videos", which also says why only motion-aligned colour matching is on by default):

- ``colour_match``: after each segment, grade its frames with a per-channel affine colour map, blended in over
  the segment (nothing at its first frame, ``colour_match`` at its last), so the joined video has no jump.
  ``colour_reference`` "aligned": the map takes the colour of the content the segment's last frame shares with
  the frame it started from back to that frame's (the camera motion aligns them, as ``colour_drift`` does), so
  each segment keeps its predecessor's colours and all keep the first's; "image": the map takes the whole last
  frame's mean and spread to the input image's (also undoes colour changes the camera motion brings);
- ``sharpen``: likewise an unsharp mask, ramped in, that brings each segment's last frame back to the input
  image's sharpness (``flashi2v.eval.clip_metrics.sharpness``), against the blur that re-encoding adds;
- ``cutoff_decay``: segment k uses the Fourier cutoff rho * cutoff_decay**(k-1): a lower rho keeps more of the
  condition's spectrum (docs/method.md section 5), against the loss of detail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import FlashI2VError
from .settings import (DEFAULT_COLOUR_MATCH, DEFAULT_COLOUR_REFERENCE, DEFAULT_CUTOFF_DECAY, DEFAULT_SHARPEN,
                       GenerationSettings, check_drift_options, check_seed, check_segments)
from .stopwatch import Stopwatch, add_times
from .video import image_to_tensor, to_uint8, write_mp4


@dataclass
class SegmentsOutput:
    """frames: the joined uint8 video, N (F - 1) + 1 x H x W x 3; segments: each segment's own output
    (``FlashI2VOutput``, its frames after colour matching); conditions: the uint8 H x W x 3 frame each segment
    was conditioned on (segment 1's: the input image at the generation size); timings: wall seconds per stage summed
    over the segments (``FlashI2VOutput.timings``), plus "grade": the colour and sharpness matching."""

    frames: torch.Tensor
    segments: list = field(default_factory=list)
    conditions: list = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | os.PathLike, fps: int = 16) -> Path:
        write_mp4(self.frames, path, fps=fps)
        return Path(path)


def join_segments(clips: list[torch.Tensor]) -> torch.Tensor:
    """Segments T x H x W x 3 -> one video; each segment after the first drops its frame 0, which stands for
    the previous segment's last frame (the frame it was conditioned on)."""
    return torch.cat([clips[0]] + [clip[1:] for clip in clips[1:]])


def colour_stats(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of a uint8 H x W x 3 frame, float64 (3,) each."""
    pixels = frame.reshape(-1, 3).double()
    return pixels.mean(0), pixels.std(0)


def aligned_colour_stats(clip: torch.Tensor, start: torch.Tensor) -> tuple[tuple, tuple]:
    """Colour statistics (``colour_stats``) of ``start`` (the frame the clip was conditioned on) and of the clip's
    last frame, over the content both show: the camera motion from the clip's frame 0 to its last frame
    (``flashi2v.eval.motion.end_to_end_motion``, as ``colour_drift`` aligns) maps ``start`` onto the last frame.
    Whole frames when less than a tenth of the content is shared."""
    from .eval.motion import end_to_end_motion, warp_by_motion

    frames = clip.numpy()
    warped, valid = warp_by_motion(start.numpy(), end_to_end_motion(frames[[0, -1]]))
    if valid.mean() <= 0.1:
        return colour_stats(start), colour_stats(clip[-1])
    first = torch.from_numpy(warped[valid])
    last = clip[-1].double()[torch.from_numpy(valid)]
    return colour_stats(first), colour_stats(last)


def match_colour(clip: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor], strength: float,
                 source: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Grade ``clip`` (uint8 T x H x W x 3) with the per-channel affine map that takes the ``source`` mean and
    spread (default: its last frame's) to the ``reference`` ones (Reinhard-style transfer, per RGB channel),
    ramped in over the clip: frame t gets the weight strength * t / (T - 1), so frame 0 (the shared frame with
    the previous segment) stays exactly as it was."""
    if strength == 0.0 or clip.shape[0] < 2:
        return clip
    mean, std = colour_stats(clip[-1]) if source is None else source
    ref_mean, ref_std = reference
    gain = ref_std / std.clamp_min(1.0)  # a flat last frame: no amplification of its noise
    x = clip.double()
    matched = (x - mean) * gain + ref_mean
    graded = (x + _ramp(clip, strength) * (matched - x)).round().clamp(0, 255).to(torch.uint8)
    graded[0] = clip[0]
    return graded


def segment_cutoffs(cutoff: float, segments: int, decay: float) -> list[float]:
    """The Fourier cutoff rho of each segment: rho * decay**k for segment k = 0, 1, ..."""
    return [cutoff * decay**k for k in range(segments)]


def _ramp(clip: torch.Tensor, strength: float) -> torch.Tensor:
    """Weights strength * t / (T - 1) for the frames of a T-frame clip, shaped T x 1 x 1 x 1 (float64)."""
    return torch.linspace(0.0, strength, clip.shape[0], dtype=torch.float64).view(-1, 1, 1, 1)


def frame_sharpness(frame: torch.Tensor) -> float:
    """``flashi2v.eval.clip_metrics.sharpness`` (mean luma gradient) of one uint8 or float H x W x 3 frame."""
    from .eval.clip_metrics import sharpness

    luma = frame.double() @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    return sharpness(luma[None].numpy())


def _detail(clip: torch.Tensor) -> torch.Tensor:
    """clip - Gaussian blur (sigma 1) of a float64 T x H x W x 3 clip: what an unsharp mask adds."""
    x = clip.permute(0, 3, 1, 2).reshape(-1, 1, *clip.shape[1:3])
    t = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-t**2 / 2)
    k = k / k.sum()
    blurred = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="replicate")
    blurred = torch.nn.functional.conv2d(blurred, k.view(1, 1, 1, -1))
    blurred = torch.nn.functional.conv2d(blurred, k.view(1, 1, -1, 1))
    return (x - blurred).reshape(clip.shape[0], 3, *clip.shape[1:3]).permute(0, 2, 3, 1)


def match_sharpness(clip: torch.Tensor, reference: float, strength: float) -> torch.Tensor:
    """Unsharp-mask ``clip`` (uint8 T x H x W x 3) so its last frame's ``frame_sharpness`` reaches ``reference``,
    ramped in over the clip like ``match_colour`` (frame 0 unchanged). Never blurs: a last frame as sharp as the
    reference or sharper is left alone. The mask's amount is found by a linear fit of sharpness between 0 and 1,
    at most 3."""
    if strength == 0.0 or clip.shape[0] < 2:
        return clip
    x = clip.double()
    detail = _detail(x)
    s0 = frame_sharpness(x[-1])
    s1 = frame_sharpness(x[-1] + detail[-1])
    if s0 >= reference or s1 <= s0:
        return clip
    amount = min(3.0, (reference - s0) / (s1 - s0))
    graded = (x + _ramp(clip, strength * amount) * detail).round().clamp(0, 255).to(torch.uint8)
    graded[0] = clip[0]
    return graded


def generate_segments(pipe, image, prompt: str | list[str], segments: int, seed: int | None = None,
                      generator: torch.Generator | None = None, colour_match: float = DEFAULT_COLOUR_MATCH,
                      colour_reference: str = DEFAULT_COLOUR_REFERENCE, cutoff_decay: float = DEFAULT_CUTOFF_DECAY,
                      sharpen: float = DEFAULT_SHARPEN, progress: bool = True, **kwargs) -> SegmentsOutput:
    """``segments`` clips with ``pipe`` (a FlashI2VPipeline), each conditioned on the last frame of the one before.

    ``prompt``: one for every segment, or a list of one per segment. ``kwargs`` go to ``pipe(...)`` (num_frames,
    height, width, steps, guidance, cutoff, ...) for every segment. One video, not a batch.
    """
    prompts = [prompt] * segments if isinstance(prompt, str) else list(prompt)
    check_segments(segments, None if isinstance(prompt, str) else prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise FlashI2VError("segment prompts must be strings: pass one prompt, or a list of one per segment")
    check_drift_options(colour_match, cutoff_decay, sharpen, colour_reference)
    check_seed(seed)
    if kwargs.get("output_type", "frames") != "frames":
        raise FlashI2VError("chained segments are joined as frames: leave output_type unset")
    names = set(GenerationSettings.names())
    settings = pipe.resolve_settings(GenerationSettings(**{k: v for k, v in kwargs.items() if k in names}))
    kwargs = {k: v for k, v in kwargs.items() if k not in names}
    if generator is None:
        generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
    condition = to_uint8(image_to_tensor(image, settings.height, settings.width).permute(1, 2, 0))
    reference, reference_sharpness = colour_stats(condition), frame_sharpness(condition)
    cutoffs = segment_cutoffs(settings.cutoff, segments, cutoff_decay)
    outputs, conditions, timings = [], [], []
    for k in range(segments):
        given = {**settings.given(), "cutoff": cutoffs[k]}
        # segment 1 takes the image itself (not its uint8 rounding): it is exactly the single generation
        out = pipe(image if k == 0 else condition, prompts[k], generator=generator, progress=progress, **given, **kwargs)
        grading = Stopwatch()  # the frames are on the CPU: no device to wait for
        if colour_match and colour_reference == "aligned":  # the content's colour as it was at the segment's start
            target, source = aligned_colour_stats(out.frames, condition)
            out.frames = match_colour(out.frames, target, colour_match, source)
        else:  # the input image's statistics, over the whole frame
            out.frames = match_colour(out.frames, reference, colour_match)
        out.frames = match_sharpness(out.frames, reference_sharpness, sharpen)
        grading.lap("grade")
        timings += [out.timings, grading.times]
        outputs.append(out)
        conditions.append(condition)
        condition = out.frames[-1]  # the next segment starts from this frame, as graded
    return SegmentsOutput(frames=join_segments([o.frames for o in outputs]), segments=outputs, conditions=conditions,
                          timings=add_times(*timings))
