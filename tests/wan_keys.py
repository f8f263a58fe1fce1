"""Key tables from the shared layout docs, turned into rename functions (never retyped by hand)."""

from __future__ import annotations

import re
from pathlib import Path

KEYS_DIR = Path(__file__).parent / "data" / "keys"


def _rows(name: str) -> list[list[str]]:
    lines = (KEYS_DIR / name).read_text().splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


def original_to_diffusers_rules() -> dict[str, str]:
    """Rename rules with the block index replaced by a placeholder."""
    rules = {}
    for src, dst in _rows("wan_original_to_diffusers.tsv"):
        rules[re.sub(r"^blocks\.\d+\.", "blocks.{}.", src)] = re.sub(r"^blocks\.\d+\.", "blocks.{}.", dst.strip())
    return rules


def to_diffusers(state: dict) -> dict:
    """Wan-original state dict (our layout) -> diffusers WanTransformer3DModel names; FlashI2V modules dropped."""
    rules, out = original_to_diffusers_rules(), {}
    for key, value in state.items():
        if key.startswith(("fourier_embedding.", "learnable_proj.")):
            continue
        m = re.match(r"blocks\.(\d+)\.(.*)", key)
        out[rules["blocks.{}." + m.group(2)].format(m.group(1)) if m else rules[key]] = value
    return out


def original_keys_1_3b() -> dict[str, tuple[int, ...]]:
    """Every key -> shape of FlashI2V-1.3B in the Wan original layout (1x3x3 projection)."""
    return {k: tuple(int(n) for n in re.findall(r"\d+", shape)) for k, shape in _rows("wan_original_flashi2v_1.3b.tsv")}
