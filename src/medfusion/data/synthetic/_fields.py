"""Shared vectorised helpers for the synthetic renderers: pixel grids, smooth noise, boxes.

Every function works on a whole batch at once (no per-pixel or per-sample Python loop).
"""

from __future__ import annotations

import numpy as np


def image_size(size: int | tuple[int, int], minimum: int = 32) -> tuple[int, int]:
    """(H, W) from an int or a pair.

    Raises:
        ValueError: if a side is not an int >= ``minimum``.
    """
    pair = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < minimum for s in pair)
    ):
        raise ValueError(f"synthetic image: expected size as an int or (H, W) of ints >= {minimum}, received {size!r}")
    return int(pair[0]), int(pair[1])


def grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates u (1, 1, W) = (x + 0.5) / W and v (1, H, 1) = (y + 0.5) / H."""
    u = ((np.arange(width, dtype=np.float32) + 0.5) / width).reshape(1, 1, width)
    v = ((np.arange(height, dtype=np.float32) + 0.5) / height).reshape(1, height, 1)
    return u, v


def _gauss_matrix(out_size: int, knots: int) -> np.ndarray:
    """(out_size, knots) row-normalised Gaussian weights mapping knot values to pixels."""
    centres = (np.arange(knots, dtype=np.float64) + 0.5) / knots
    pixels = (np.arange(out_size, dtype=np.float64) + 0.5) / out_size
    sigma = 0.75 / knots
    w = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) / sigma) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))  # unit variance for unit-variance knots
    return w.astype(np.float32)


def smooth_noise(
    rng: np.random.Generator, n: int, height: int, width: int, knots: int, out: np.ndarray | None = None
) -> np.ndarray:
    """(n, H, W) float32 smooth Gaussian random fields with about unit variance.

    Unit-normal values on a ``knots`` x ``knots`` lattice are spread to pixels with
    Gaussian weights (two small matrix products): the correlation length is about
    ``1 / knots`` of the image. Written into ``out`` when given.
    """
    z = rng.standard_normal((n, knots, knots), dtype=np.float32)
    rows, cols = _gauss_matrix(height, knots), _gauss_matrix(width, knots)
    return np.matmul(rows, np.matmul(z, cols.T), out=out)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Bounding boxes of boolean masks.

    Args:
        masks: (..., H, W) bool.

    Returns:
        (..., 4) int32 boxes ``(x0, y0, x1, y1)`` in pixels, end-exclusive (width = x1 - x0);
        ``-1`` in all four where a mask is empty.
    """
    rows = masks.any(axis=-1)  # (..., H)
    cols = masks.any(axis=-2)  # (..., W)
    height, width = masks.shape[-2:]
    y0 = rows.argmax(axis=-1)
    y1 = height - rows[..., ::-1].argmax(axis=-1)
    x0 = cols.argmax(axis=-1)
    x1 = width - cols[..., ::-1].argmax(axis=-1)
    boxes = np.stack([x0, y0, x1, y1], axis=-1).astype(np.int32)
    boxes[~rows.any(axis=-1)] = -1
    return boxes
