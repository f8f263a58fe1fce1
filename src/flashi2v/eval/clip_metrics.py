"""Weight-free metrics of one clip: optical-flow motion, VBench's dynamic-degree rule, flicker, SSIM, and
the per-chunk feature vector behind the chunk-wise Frechet distance.

Dense optical flow is OpenCV's Farneback (no learned weights), computed on luma at most ``FLOW_SIZE`` pixels
on the short side and reported in pixels of the original frame. All functions take uint8 T x H x W x 3.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from flashi2v.errors import FlashI2VError
from flashi2v.eval.motion import as_frames, colour_drift, psnr

FLOW_SIZE = 256  # short side the flow is computed at (VBench's thresholds are defined at 256 too)
TOP_SHARE = 0.05  # VBench: a pair's motion is the mean of its largest 5 % flow magnitudes
FEATURE_NAMES = (
    "mean_red", "mean_green", "mean_blue", "luma_contrast", "sharpness",
    "flow_mean", "flow_top5", "flicker",
)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise FlashI2VError("the video metrics need OpenCV: pip install 'flashi2v[eval]' (opencv-python-headless)") from None
    return cv2


def luma(frames: np.ndarray) -> np.ndarray:
    """T x H x W float32 luma (BT.601 weights, 0..255)."""
    return (frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))


@dataclass
class Flow:
    """Farneback flow of consecutive pairs: ``fields`` (T-1) x h x w x 2 at the working size, ``scale`` =
    original / working pixels, ``luma`` the working-size frames the flow was computed on."""

    fields: np.ndarray
    scale: float
    luma: np.ndarray

    def magnitudes(self) -> np.ndarray:
        """(T-1) x h x w flow magnitude in pixels of the original frame."""
        return np.hypot(self.fields[..., 0], self.fields[..., 1]) * self.scale


def dense_flow(frames) -> Flow:
    """Farneback optical flow from each frame to the next (content motion, +x right, +y down)."""
    cv2 = _cv2()
    frames = as_frames(frames)
    h, w = frames.shape[1:3]
    scale = max(1.0, min(h, w) / FLOW_SIZE)
    size = (max(8, round(w / scale)), max(8, round(h / scale)))
    gray = luma(frames)
    if scale > 1.0:
        gray = np.stack([cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in gray])
    gray8 = np.clip(gray.round(), 0, 255).astype(np.uint8)
    fields = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0) for a, b in itertools.pairwise(gray8)]
    empty = np.zeros((0, *gray.shape[1:], 2), np.float32)
    return Flow(np.stack(fields) if fields else empty, scale, gray)


def top_motion(flow: Flow) -> np.ndarray:
    """Per pair: mean of the largest ``TOP_SHARE`` of flow magnitudes (VBench's per-pair motion score)."""
    mags = flow.magnitudes().reshape(len(flow.fields), -1)
    k = max(1, int(mags.shape[1] * TOP_SHARE))
    return -np.sort(-mags, axis=1)[:, :k].mean(axis=1) if len(mags) else np.zeros(0)


def is_dynamic(frames, fps: float) -> bool:
    """VBench's "dynamic degree" rule on Farneback flow (a proxy: VBench uses RAFT, whose magnitudes differ).

    As in VBench's dynamic_degree.py: frames are taken every round(fps / 8) (about 8 fps); a pair moves when
    the mean of its top 5 % flow magnitudes exceeds 6 * max(1, 8 / fps) * min(H, W) / 256 pixels; the video is
    dynamic when at least round(4 * sampled frames / 16) pairs move.
    """
    frames = as_frames(frames)
    step = max(1, round(fps / 8)) if fps > 0 else 1
    sampled = frames[::step]
    threshold = max(1.0, 8.0 / fps if fps > 0 else 1.0) * 6.0 * min(frames.shape[1:3]) / 256.0
    needed = round(4 * len(sampled) / 16.0)
    moving = int((top_motion(dense_flow(sampled)) > threshold).sum())
    return moving >= needed


def warping_error(flow: Flow) -> np.ndarray:
    """Per pair: mean |luma of frame t - frame t+1 warped back along the flow| in 0..255 levels, over pixels
    whose flow stays in the frame. Motion the flow explains cancels; what remains is flicker (brightness or
    texture that changes without moving) and motion the flow cannot follow (e.g. jumps)."""
    cv2 = _cv2()
    if not len(flow.fields):
        return np.zeros(0)
    h, w = flow.luma.shape[1:]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t, field in enumerate(flow.fields):
        mx, my = gx + field[..., 0], gy + field[..., 1]
        back = cv2.remap(flow.luma[t + 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        diff = np.abs(back - flow.luma[t])
        out.append(float(diff[inside].mean()) if inside.any() else float(diff.mean()))
    return np.array(out)


def ssim(a, b) -> float:
    """Structural similarity (Wang et al. 2004) of two uint8 images on luma: 11 x 11 Gaussian window with
    sigma 1.5, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; 1.0 when identical."""
    cv2 = _cv2()
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise FlashI2VError(f"ssim needs images of one shape, got {a.shape} and {b.shape}")
    x, y = (luma(v[None])[0].astype(np.float64) if v.ndim == 3 else v.astype(np.float64) for v in (a, b))

    def blur(v):
        return cv2.GaussianBlur(v, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    score = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(score.mean())


def fidelity(frame, image) -> tuple[float, float]:
    """(PSNR dB, SSIM) of a frame against the condition image (same size; PSNR capped at 100 dB so a
    perfect match stays a finite JSON number)."""
    return min(psnr(frame, image), 100.0), ssim(frame, image)


def colour_offset(frame, image) -> float:
    """Largest difference of a channel's mean between a frame and the condition image, in % of 0..255: a colour
    cast of the first frame (0 for a faithful copy; PSNR mixes it with every other error)."""
    a = np.asarray(frame, np.float64).reshape(-1, 3).mean(0)
    b = np.asarray(image, np.float64).reshape(-1, 3).mean(0)
    return float(np.abs(a - b).max() / 255 * 100)


def sharpness(gray: np.ndarray) -> float:
    """Mean gradient magnitude of luma frames (levels per pixel): falls as a video blurs."""
    gy, gx = np.gradient(gray, axis=(1, 2))
    return float(np.hypot(gx, gy).mean())


def chunks(num_frames: int, size: int) -> list[slice]:
    """Consecutive chunks of ``size`` frames; a trailing partial chunk is dropped (chunks stay comparable)."""
    if size < 2:
        raise FlashI2VError(f"--chunk {size} is too short: a chunk needs at least 2 frames for motion")
    return [slice(s, s + size) for s in range(0, num_frames - size + 1, size)]


def chunk_metrics(frames, fps: float, chunk: int, image=None, drift: bool = True) -> list[dict]:
    """Per chunk: motion (mean and top-5 % flow, px/frame), VBench dynamic rule, flicker (warping error),
    colour drift from frame 0 to the chunk's last frame (percent, motion-aligned), fidelity of the chunk's first
    frame to ``image`` (default: frame 0), and the ``FEATURE_NAMES`` vector for the Frechet distance."""
    frames = as_frames(frames)
    image = frames[0] if image is None else image
    rows = []
    for part in chunks(len(frames), chunk):
        clip = frames[part]
        flow = dense_flow(clip)
        mags, top, warp = flow.magnitudes(), top_motion(flow), warping_error(flow)
        first_psnr, first_ssim = fidelity(clip[0], image)
        pixels = clip.reshape(-1, 3).astype(np.float64)
        features = [
            *(pixels.mean(axis=0) / 255.0 * 100.0),  # percent of the range, like colour drift
            float(flow.luma.std()),
            sharpness(flow.luma),
            float(mags.mean()),
            float(top.mean()),
            float(warp.mean()),
        ]
        rows.append({
            "start": part.start,
            "motion": float(mags.mean()),
            "motion_top5": float(top.mean()),
            "dynamic": bool(is_dynamic(clip, fps)),
            "flicker": float(warp.mean()),
            "colour_drift": float(colour_drift(frames[[0, part.stop - 1]])) if drift else None,
            "psnr_first": first_psnr,
            "ssim_first": first_ssim,
            "features": features,
        })
    return rows
