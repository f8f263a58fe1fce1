"""A tiny pipeline whose every weight is random, and the paths tests share (fixtures in conftest.py).

``flashi2v.random_components.random_tiny_pipeline`` keeps Wan's initialisation, which zeroes the output head (and the
FlashI2V branches' last layers): its velocity is exactly 0 and its latents are the starting noise, so a test
built on it holds for any code. Tests that claim something about generation use the pipeline below.
"""

from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGE = REPO_ROOT / "assets" / "examples" / "astronaut.jpg"


def randomize_zero_parameters(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every all-zero parameter (the output head, biases, phi's and the Fourier branch's last convs)
    random values: weights N(0, 1 / fan_in), biases N(0, 0.1^2). The other weights keep their random init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                std = p[0].numel() ** -0.5 if p.ndim > 1 else 0.1
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def fully_random_tiny_pipeline(seed: int = 0, proj_kernel: str = "1x3x3"):
    """``random_tiny_pipeline`` with no zero-initialised transformer parameter left."""
    from flashi2v.random_components import random_tiny_pipeline

    pipe = random_tiny_pipeline(seed=seed, proj_kernel=proj_kernel)
    randomize_zero_parameters(pipe.transformer, seed)
    return pipe
