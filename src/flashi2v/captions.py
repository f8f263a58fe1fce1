"""Camera motions, their paces, and the captions that describe them.

One vocabulary for the synthetic training captions (flashi2v.data.synthetic) and the evaluation prompts
(flashi2v.eval.quality), so the model is asked in the words it was trained on. Film convention: content moves
opposite to the camera ("pans left" -> content moves right); see flashi2v.data.synthetic for every motion.
"""

from __future__ import annotations

from .errors import FlashI2VError

MOTIONS = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "roll_cw", "roll_ccw", "static")
PACES = ("slow", "normal", "fast")

# Per-frame speed of each pace. Pans/tilts: fraction of the shorter frame side per frame (at 128 px:
# 0.77, 1.54, 2.82 px/frame). Zooms: log scale per frame (x1.21, x1.42, x1.75 over 17 frames).
# Rolls: degrees per frame.
SPEEDS = {
    "pan": {"slow": 0.006, "normal": 0.012, "fast": 0.022},
    "zoom": {"slow": 0.012, "normal": 0.022, "fast": 0.035},
    "roll": {"slow": 0.6, "normal": 1.2, "fast": 2.0},
}

# Caption templates: {adv} is " slowly" / "" / " quickly", {adj} is "slow " / "" / "fast ".
CAPTION_TEMPLATES = {
    "pan_left": ("the camera pans left{adv}", "camera panning left{adv}", "a {adj}pan to the left"),
    "pan_right": ("the camera pans right{adv}", "camera panning right{adv}", "a {adj}pan to the right"),
    "tilt_up": ("the camera tilts up{adv}", "camera tilting up{adv}", "a {adj}tilt upward"),
    "tilt_down": ("the camera tilts down{adv}", "camera tilting down{adv}", "a {adj}tilt downward"),
    "zoom_in": ("the camera zooms in{adv}", "zoom in{adv}", "a {adj}zoom in toward the centre"),
    "zoom_out": ("the camera zooms out{adv}", "zoom out{adv}", "a {adj}zoom out from the centre"),
    "roll_cw": ("the camera rolls clockwise{adv}", "camera rotating clockwise{adv}", "a {adj}clockwise camera roll"),
    "roll_ccw": (
        "the camera rolls counterclockwise{adv}",
        "camera rotating counterclockwise{adv}",
        "a {adj}counterclockwise camera roll",
    ),
    "static": ("a still shot, the camera does not move", "static camera", "the camera stays still"),
}
_ADVERBS = {"slow": " slowly", "normal": "", "fast": " quickly"}
_ADJECTIVES = {"slow": "slow ", "normal": "", "fast": "fast "}


def _check_motion(motion: str) -> None:
    if motion not in MOTIONS:
        raise FlashI2VError(f"unknown camera motion {motion!r}; use one of {', '.join(MOTIONS)}")


def motion_kind(motion: str) -> str:
    """'pan' (pans and tilts), 'zoom', 'roll' or 'static': which unit the speed is in."""
    _check_motion(motion)
    return {"pan": "pan", "til": "pan", "zoo": "zoom", "rol": "roll"}.get(motion[:3], "static")


def motion_speed(motion: str, pace: str) -> float:
    """The per-frame speed of ``pace`` for ``motion``, in the motion's own unit (0 for static)."""
    if pace not in PACES:
        raise FlashI2VError(f"unknown pace {pace!r}; use one of {', '.join(PACES)}")
    kind = motion_kind(motion)
    return 0.0 if kind == "static" else SPEEDS[kind][pace]


def motion_caption(motion: str, pace: str = "normal", variant: int = 0) -> str:
    """Caption ``variant`` (0..2) of a motion at a pace: training captions and evaluation prompts alike."""
    _check_motion(motion)
    if pace not in PACES:
        raise FlashI2VError(f"unknown pace {pace!r}; use one of {', '.join(PACES)}")
    templates = CAPTION_TEMPLATES[motion]
    return templates[variant % len(templates)].format(adv=_ADVERBS[pace], adj=_ADJECTIVES[pace])


def all_captions() -> list[str]:
    """Every caption the synthetic set can use (for encoding prompts once, or for listing eval prompts)."""
    return sorted({motion_caption(m, p, v) for m in MOTIONS for p in PACES for v in range(3)})
