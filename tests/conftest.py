"""Shared fixtures: the repo root, the example image, and a tiny pipeline whose every weight is random.

``flashi2v.tiny.random_tiny_pipeline`` keeps Wan's initialisation, which zeroes the output head (and the
FlashI2V branches' last layers): its velocity is exactly 0 and its latents are the starting noise, so a test
built on it holds for any code. Tests that claim something about generation use ``tiny_pipeline`` below.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests import helpers_*.py as top-level modules

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
    from flashi2v.tiny import random_tiny_pipeline

    pipe = random_tiny_pipeline(seed=seed, proj_kernel=proj_kernel)
    randomize_zero_parameters(pipe.transformer, seed)
    return pipe


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def example_image() -> str:
    """Path of the bundled example photo (a str: what users pass)."""
    return str(EXAMPLE_IMAGE)


@pytest.fixture(scope="session")
def make_tiny_pipeline():
    """Factory: ``make_tiny_pipeline(seed=0, proj_kernel="1x3x3")`` builds a fresh fully random tiny pipeline
    (50 ms), so a test may change it without affecting others."""
    return fully_random_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_pipeline():
    """One fully random tiny pipeline shared by a module's tests (which must not change it)."""
    return fully_random_tiny_pipeline(seed=0)
