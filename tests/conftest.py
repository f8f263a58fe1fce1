"""Shared fixtures: the repo root, the example image, and a tiny pipeline whose every weight is random
(helpers_tiny.py says why the library's own tiny pipeline is not enough for generation tests)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import helpers_*.py as top-level modules

from helpers_tiny import EXAMPLE_IMAGE, REPO_ROOT, fully_random_tiny_pipeline


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
