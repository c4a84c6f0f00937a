"""Vectorised synthetic echocardiography: an apical view of a beating left ventricle.

Each clip holds one cardiac cycle of the left ventricle (LV) seen from the apex, the
view in which the ejection fraction is measured:

- the **cavity** (blood, dark) is an ellipse with a vertical long axis hanging from a
  fixed apex near the top of the image; its semi-axes follow the cycle
  ``a(t) = a_ed + (a_es - a_ed) c(t)``, ``b(t)`` likewise, with the contraction
  ``c(t)`` rising from 0 at end-diastole (ED) to 1 at end-systole (ES, 37.5% of the cycle)
  and falling back (raised cosines). The base moves towards the apex in systole;
- the LV **volume** is that of the prolate spheroid ``V = 4/3 pi a^2 b`` — exactly what the
  clinical single-plane area-length method ``V = 8 A^2 / (3 pi L)`` gives from the cavity
  area ``A = pi a b`` and long-axis length ``L = 2 b``. The end-systolic axes are set so
  that ``1 - V_es / V_ed`` is the patient's ejection fraction (EF): the long axis
  shortens by ``6% + 12% * EF`` and the short axis by the rest;
- a reduced EF comes with a dilated ventricle (ED size up to 1.24x at EF 15%);
- the **myocardium** (bright) is a ring around the cavity that thickens in systole; the
  tissue around it is grey; outside the 76-degree ultrasound **sector** the image is black;
- **speckle**: the tissue intensity is multiplied by a fully developed speckle pattern
  (exponential distribution, a new one per frame) mixed with weight ``0.5 * noise``,
  plus white noise; ``noise=0`` gives clean shapes and the draws do not depend on it.

The cycle starts at a random frame, so ED and ES are sampled frames at random positions
(``ed_frame``, ``es_frame``). Ground-truth cavity masks (pixel coverage >= 0.5) come with
the frames. The frame rate that makes one clip one heartbeat is ``frames * HR / 60``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfusion.data.synthetic._fields import grid, image_size, smooth_noise
from medfusion.data.synthetic.waveforms import white_noise

#: Fraction of the cycle at which end-systole falls.
SYSTOLE_FRACTION = 0.375
#: Half-angle of the ultrasound sector (degrees).
SECTOR_HALF_ANGLE = 38.0
_CAVITY, _WALL, _TISSUE = 0.05, 0.75, 0.3
_CHUNK = 64


@dataclass
class EchoBatch:
    """Rendered echo clips.

    Attributes:
        frames: (N, T, 1, H, W) uint8, intensity in [0, 1] times 255 (what a video stores;
            a quarter of the memory of float32).
        cavity: (N, T, H, W) bool ground-truth LV cavity masks.
        volume: (N, T) float64 LV volume (pixel^3, prolate spheroid) per frame.
        ed_frame: (N,) int64 end-diastolic frame (largest volume).
        es_frame: (N,) int64 end-systolic frame (smallest volume).
    """

    frames: np.ndarray
    cavity: np.ndarray
    volume: np.ndarray
    ed_frame: np.ndarray
    es_frame: np.ndarray


def contraction(phase: np.ndarray) -> np.ndarray:
    """Contraction c in [0, 1] at cycle phase in [0, 1): 0 at end-diastole, 1 at end-systole."""
    phase = np.mod(phase, 1.0)
    systole = 0.5 * (1 - np.cos(np.pi * phase / SYSTOLE_FRACTION))
    diastole = 0.5 * (1 + np.cos(np.pi * (phase - SYSTOLE_FRACTION) / (1 - SYSTOLE_FRACTION)))
    return np.where(phase < SYSTOLE_FRACTION, systole, diastole)


def _coverage(u: np.ndarray, v: np.ndarray, cx, cy, a, b) -> np.ndarray:
    """Approximate pixel coverage (0..1) of ellipses centred (cx, cy) with semi-axes (a, b) in pixels.

    A ramp one pixel wide across the boundary, from ``1 - r^2 ~ 2 (1 - r)`` near r = 1.
    """
    cover = ((u - cx) / a) ** 2 + ((v - cy) / b) ** 2  # r^2, (m, T, H, W)
    np.subtract(1, cover, out=cover)
    cover *= np.minimum(a, b) / 2
    cover += 0.5
    return np.clip(cover, 0, 1, out=cover)


def render_echo(
    rng: np.random.Generator,
    ejection_fraction: np.ndarray,
    *,
    frames: int = 16,
    size: int | tuple[int, int] = 64,
    noise: float = 1.0,
) -> EchoBatch:
    """Render one apical LV clip per patient.

    Args:
        rng: the random generator.
        ejection_fraction: (N,) EF as a fraction, in [0.05, 0.85].
        frames: T frames per clip (one cardiac cycle), a multiple of 8 so that
            end-systole is a sampled frame.
        size: H = W, or (H, W), in pixels (>= 32).
        noise: speckle and noise scale in [0, 2] (0 = clean).

    Returns:
        :class:`EchoBatch`.

    Raises:
        ValueError: on an EF out of range, a bad frame count, size or noise scale.
    """
    ef = np.asarray(ejection_fraction, dtype=np.float64)
    if ef.ndim != 1 or not np.all((ef >= 0.05) & (ef <= 0.85)):
        raise ValueError(f"echo: expected ejection_fraction as (N,) fractions in [0.05, 0.85], received shape "
                         f"{ef.shape} with range {ef.min(initial=np.nan)}..{ef.max(initial=np.nan)}")
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 8 or frames % 8:
        raise ValueError(f"echo: expected frames as a multiple of 8 (>= 8), received {frames!r}")
    height, width = image_size(size)
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) or not 0 <= noise <= 2:
        raise ValueError(f"echo: expected noise in [0, 2], received {noise!r}")
    n = len(ef)
    # end-diastolic geometry in pixels, dilated at low EF; end-systolic axes from the EF
    dilation = 1 + 0.6 * np.clip(0.55 - ef, 0, 0.4)
    scale = dilation * np.exp(0.05 * rng.standard_normal(n))
    b_ed, a_ed = 0.27 * height * scale, 0.13 * width * scale
    shortening = 0.06 + 0.12 * ef
    b_es = b_ed * (1 - shortening)
    a_es = a_ed * np.sqrt((1 - ef) / (1 - shortening))
    start = rng.integers(0, frames, n)
    phase = (np.arange(frames)[None, :] - start[:, None]) / frames  # (N, T), ED where phase == 0 mod 1
    c = contraction(phase)
    a = a_ed[:, None] + (a_es - a_ed)[:, None] * c
    b = b_ed[:, None] + (b_es - b_ed)[:, None] * c
    wall = 0.065 * width + 0.5 * (a_ed[:, None] - a)
    apex = 0.1 * height + rng.normal(0, 0.01 * height, (n, 1))
    cx = width / 2 + rng.normal(0, 0.02 * width, (n, 1))
    cy = apex + wall + b
    volume = 4 / 3 * np.pi * a**2 * b
    u, v = grid(height, width)
    u, v = u[None] * width, v[None] * height  # pixel-centre coordinates (1, 1, 1, W), (1, 1, H, 1)
    angle = np.degrees(np.arctan2(u - width / 2, v))
    sector = (np.abs(angle) <= SECTOR_HALF_ANGLE) & (np.hypot(u - width / 2, v) <= 0.95 * height)
    out = np.empty((n, frames, 1, height, width), dtype=np.uint8)
    cavity = np.empty((n, frames, height, width), dtype=bool)
    knots = max(8, min(height, width) // 3)
    for lo in range(0, n, _CHUNK):
        part = slice(lo, min(lo + _CHUNK, n))
        m = len(range(*part.indices(n)))
        geometry = [x[part][..., None, None].astype(np.float32) for x in (cx, cy, a, b, wall)]
        x0, y0, ax, bx, w = geometry
        inner = _coverage(u, v, x0, y0, ax, bx)
        cavity[part] = inner >= 0.5
        image = _coverage(u, v, x0, y0 - 0.5 * w, ax + w, bx + 1.5 * w)  # myocardium's outer edge
        image *= _WALL - _TISSUE
        image += _TISSUE
        inner *= _CAVITY - _WALL
        image += inner
        shape = (m * frames, height, width)
        speckle = smooth_noise(rng, *shape, knots) ** 2
        speckle += smooth_noise(rng, *shape, knots) ** 2
        speckle *= 0.25 * noise  # mixing weight 0.5 * noise of a mean-1 speckle (z1^2 + z2^2) / 2
        speckle += 1 - 0.5 * noise
        image *= speckle.reshape(m, frames, height, width)
        image += noise * white_noise(rng, (m, frames, height, width), 0.03)
        np.clip(image, 0, 1, out=image)
        image *= sector * np.float32(255)
        out[part, :, 0] = np.rint(image)
    ed = np.argmax(volume, axis=1)
    es = np.argmin(volume, axis=1)
    return EchoBatch(frames=out, cavity=cavity, volume=volume, ed_frame=ed, es_frame=es)
