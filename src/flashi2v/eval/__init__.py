"""Evaluation of generated videos: camera-motion and picture metrics on uint8 T x H x W x 3 frames.

Typical use::

    label, magnitude = classify_motion(frames)        # e.g. ("pan_left", 1.4) for "the camera pans left"
    drift = colour_drift(frames)                      # percent of the 0..255 range
"""

from flashi2v.eval.motion import (
    LABELS,
    ROLL_LABELS,
    classify_motion,
    colour_drift,
    end_to_end_motion,
    global_rotation,
    global_scale,
    global_translation,
    motion_magnitude,
    pair_motions,
    psnr,
    similarity,
    warp_by_motion,
)

__all__ = [
    "LABELS",
    "ROLL_LABELS",
    "classify_motion",
    "colour_drift",
    "end_to_end_motion",
    "global_rotation",
    "global_scale",
    "global_translation",
    "motion_magnitude",
    "pair_motions",
    "psnr",
    "similarity",
    "warp_by_motion",
]
