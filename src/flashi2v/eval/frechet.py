"""Frechet distance between two sets of feature vectors, each summarised by a Gaussian (mean, covariance).

    d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

(Frechet / Wasserstein-2 distance of two Gaussians, as in FID and FVD.) The trace of the matrix square root
is computed as the sum of square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), which is symmetric
positive semi-definite, so it needs only ``eigh`` (no complex ``sqrtm``) and stays real on singular
covariances (fewer samples than dimensions).
"""

from __future__ import annotations

import numpy as np

from flashi2v.errors import FlashI2VError

MIN_SAMPLES = 2  # a covariance needs at least two samples


def gaussian_stats(features, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of N x D features in float64; at least ``MIN_SAMPLES`` rows."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise FlashI2VError(f"{what} must be N x D, got shape {x.shape}")
    if len(x) < MIN_SAMPLES:
        raise FlashI2VError(
            f"{what}: {len(x)} video(s) is too few for a covariance; the Frechet distance needs at least "
            f"{MIN_SAMPLES} per set (more than the {x.shape[1]} feature dimensions for a stable estimate)"
        )
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues,
    rounding noise, are clipped to zero)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Squared Frechet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b); 0 for identical Gaussians."""
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != (len(mu_a), len(mu_a)):
        raise FlashI2VError(f"Gaussians of different dimension: {mu_a.shape}/{sigma_a.shape} vs {mu_b.shape}/{sigma_b.shape}")
    root_a = _psd_sqrt(sigma_a)
    cross = np.linalg.eigvalsh(root_a @ sigma_b @ root_a)
    trace_sqrt = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt)
    return max(distance, 0.0)  # rounding can leave -1e-12 for identical sets


def frechet_distance_of(features_a, features_b, what: str = "features") -> float:
    """Frechet distance of the Gaussians fitted to two N x D feature sets (rows: videos or chunks)."""
    return frechet_distance(*gaussian_stats(features_a, f"generated {what}"), *gaussian_stats(features_b, f"reference {what}"))
