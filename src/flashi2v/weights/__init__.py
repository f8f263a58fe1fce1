"""Checkpoints: read every published FlashI2V / Wan2.1 layout, convert to our format, inspect.

See docs/usage.md ("The released weights") for the files to download and the commands.
"""

from .convert import (
    convert_checkpoint,
    export_state_dict,
    export_transformer,
    inspect_checkpoint,
    load_transformer_weights,
    transformer_candidates,
)
from .layouts import LAYOUTS, detect_layout
from .readers import load_pickle, read_weight_file
from .transformer import LoadReport, infer_config, load_transformer_state

__all__ = [
    "LAYOUTS",
    "LoadReport",
    "convert_checkpoint",
    "detect_layout",
    "export_state_dict",
    "export_transformer",
    "infer_config",
    "inspect_checkpoint",
    "load_pickle",
    "load_transformer_state",
    "load_transformer_weights",
    "read_weight_file",
    "transformer_candidates",
]
