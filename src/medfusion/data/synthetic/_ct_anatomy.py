"""Chest CT geometry for :mod:`.ct`: per-patient anatomy and analytic lung lobes.

Everything is in normalised coordinates of the volume, ``z = (d + 0.5) / D`` (0 inferior,
1 superior), ``y = (h + 0.5) / H`` (0 posterior, 1 anterior), ``x = (w + 0.5) / W``
(0 patient's left, 1 patient's right): the RAS voxel order :func:`~medfusion.data.io.write_nifti`
expects. Side axes of size 2 are (patient's right, patient's left).

Each lung is an elliptic cylinder whose cross-section tapers to the apex and whose base is
domed by the hemidiaphragm (the right one higher); the heart, descending aorta, spine and
trachea are cut out of it. Lobes are plane cuts in lung-relative coordinates, with
``s`` = height above the lung base (0 base, 1 apex) and ``a`` = position front to back
(0 posterior, 1 anterior):

- the **major (oblique) fissure** ``s = m0 - k * a`` in each lung: posterior-inferior of it
  is the lower lobe (RLL / LLL);
- the **minor (horizontal) fissure** ``s = h`` in the right lung: the rest of the right
  lung below it is the middle lobe (RML), above it the upper lobe (RUL); in the left lung
  everything in front of the major fissure is the upper lobe (LUL, lingula included).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

#: Lobe codes: index into these tuples. -1 = not lung.
LOBES: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL")
LOBE_NAMES: tuple[str, ...] = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe",
                               "left lower lobe")
#: Side of each lobe: 0 = patient's right, 1 = left.
LOBE_SIDE = np.array([0, 0, 0, 1, 1], dtype=np.int8)
_F32 = np.float32


@dataclass
class CTAnatomy:
    """Per-patient chest geometry (normalised coordinates, see the module docstring).

    Attributes:
        body_ax, body_ay: (N,) semi-axes of the body ellipse (x, y), centred at (0.5, 0.5).
        lung_cx, lung_cy, lung_ax, lung_ay: (N, 2) ellipse of each lung's cross-section.
        lung_base: (N, 2) z of each lung's lowest (lateral) point; lung_apex: (N, 2) z of the apex.
        dome: (N, 2) height of each hemidiaphragm dome above the lung base (z units).
        heart_c, heart_r: (N, 3) centre and semi-axes (z, y, x) of the heart ellipsoid.
        aorta: (N, 3) descending aorta (x, y, radius).
        spine: (N, 3) vertebral body (x, y, radius).
        major_m0, major_k: (N, 2) major fissure ``s = m0 - k * a`` per lung.
        minor_h: (N,) minor fissure height ``s`` in the right lung.
    """

    body_ax: np.ndarray
    body_ay: np.ndarray
    lung_cx: np.ndarray
    lung_cy: np.ndarray
    lung_ax: np.ndarray
    lung_ay: np.ndarray
    lung_base: np.ndarray
    lung_apex: np.ndarray
    dome: np.ndarray
    heart_c: np.ndarray
    heart_r: np.ndarray
    aorta: np.ndarray
    spine: np.ndarray
    major_m0: np.ndarray
    major_k: np.ndarray
    minor_h: np.ndarray

    def __len__(self) -> int:
        return len(self.body_ax)

    def take(self, index) -> CTAnatomy:
        """The anatomy of a subset of patients."""
        return CTAnatomy(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def lobe_map(self, shape: tuple[int, int, int]) -> np.ndarray:
        """(N, D, H, W) int8 lobe code of every voxel centre (:data:`LOBES`; -1 outside the lungs)."""
        return lobe_index(self, *grid3(shape))


def random_ct_anatomy(rng: np.random.Generator, n: int) -> CTAnatomy:
    """N patients' anatomy with the variation of the module docstring."""
    u = lambda low, high, size=(n,): rng.uniform(low, high, size).astype(_F32)  # noqa: E731
    offset = u(0.16, 0.185, (n, 2))
    base = u(0.03, 0.07, (n, 2))
    base[:, 0] += 0.03  # the right hemidiaphragm sits higher
    heart_c = np.stack([u(0.2, 0.3), 0.5 + u(0.08, 0.12), 0.5 - u(0.03, 0.06)], axis=1)
    return CTAnatomy(
        body_ax=u(0.40, 0.46), body_ay=u(0.30, 0.34),
        lung_cx=np.stack([0.5 + offset[:, 0], 0.5 - offset[:, 1]], axis=1),
        lung_cy=0.5 + u(-0.01, 0.01, (n, 2)), lung_ax=u(0.12, 0.145, (n, 2)), lung_ay=u(0.21, 0.245, (n, 2)),
        lung_base=base, lung_apex=u(0.92, 0.98, (n, 2)), dome=u(0.12, 0.2, (n, 2)),
        heart_c=heart_c, heart_r=np.stack([u(0.18, 0.22), u(0.14, 0.17), u(0.15, 0.19)], axis=1),
        aorta=np.stack([u(0.43, 0.45), u(0.35, 0.37), u(0.03, 0.038)], axis=1),
        spine=np.stack([np.full(n, 0.5, _F32), u(0.29, 0.31), u(0.045, 0.055)], axis=1),
        major_m0=u(0.85, 0.95, (n, 2)), major_k=u(0.9, 1.0, (n, 2)), minor_h=u(0.45, 0.55),
    )


def grid3(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised voxel-centre coordinates z (1, D, 1, 1), y (1, 1, H, 1), x (1, 1, 1, W)."""
    d, h, w = shape
    return (((np.arange(d, dtype=_F32) + 0.5) / d).reshape(1, d, 1, 1),
            ((np.arange(h, dtype=_F32) + 0.5) / h).reshape(1, 1, h, 1),
            ((np.arange(w, dtype=_F32) + 0.5) / w).reshape(1, 1, 1, w))


def _p(value: np.ndarray, ndim: int) -> np.ndarray:
    """A per-patient (n,) parameter reshaped to broadcast against (n, ...) of ``ndim`` axes."""
    return value.reshape(value.shape[:1] + (1,) * (ndim - 1))


def lung_coordinates(anat: CTAnatomy, side: int, z, y, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lung-relative coordinates of points for one lung: (rho2, s, a).

    rho2 is the squared normalised radius in the lung's cross-section ellipse (shape of
    ``y, x``), s the height above its base (0 base, 1 apex; shape of ``z``), a the
    front-to-back position (0 posterior, 1 anterior; shape of ``y``). ``z, y, x`` broadcast
    to (n, ...) with the patient axis first.
    """
    ndim = max(np.ndim(z), np.ndim(y), np.ndim(x))
    cx, cy = _p(anat.lung_cx[:, side], ndim), _p(anat.lung_cy[:, side], ndim)
    ax, ay = _p(anat.lung_ax[:, side], ndim), _p(anat.lung_ay[:, side], ndim)
    base, apex = _p(anat.lung_base[:, side], ndim), _p(anat.lung_apex[:, side], ndim)
    rho2 = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
    s = (z - base) / (apex - base)
    a = (y - (cy - ay)) / (2 * ay)
    return rho2, s, a


def mediastinum(anat: CTAnatomy, z, y, x) -> np.ndarray:
    """Bool: inside the heart, descending aorta, vertebral body (with a margin) or trachea."""
    ndim = max(np.ndim(z), np.ndim(y), np.ndim(x))
    hc, hr = anat.heart_c, anat.heart_r
    heart = sum(((c - _p(hc[:, k], ndim)) / _p(hr[:, k], ndim)) ** 2 for k, c in enumerate((z, y, x))) < 1
    aorta = (x - _p(anat.aorta[:, 0], ndim)) ** 2 + (y - _p(anat.aorta[:, 1], ndim)) ** 2 \
        < _p(anat.aorta[:, 2], ndim) ** 2
    spine = (x - 0.5) ** 2 + (y - _p(anat.spine[:, 1], ndim)) ** 2 < (_p(anat.spine[:, 2], ndim) * 1.6) ** 2
    return heart | aorta | spine | trachea(z, y, x)


def trachea(z, y, x) -> np.ndarray:
    """Bool: inside the trachea (above the carina, z > 0.62)."""
    return ((x - 0.5) ** 2 + (y - 0.52) ** 2 < 0.025**2) & (z > 0.62)


@dataclass
class LungParts:
    """Both lungs evaluated at some points: per side (right, left) the membership and coordinates.

    Attributes:
        inside: two bool arrays, the point is in that lung.
        s: two arrays, height above the lung base (0 base, 1 apex).
        a: two arrays, front-to-back position (0 posterior, 1 anterior).
    """

    inside: tuple[np.ndarray, np.ndarray]
    s: tuple[np.ndarray, np.ndarray]
    a: tuple[np.ndarray, np.ndarray]


def lung_parts(anat: CTAnatomy, z, y, x) -> LungParts:
    """Evaluate both lungs at points ``z, y, x`` (broadcasting to (n, ...), patient axis first)."""
    blocked = mediastinum(anat, z, y, x)
    inside, ss, aa = [], [], []
    for side in (0, 1):
        rho2, s, a = lung_coordinates(anat, side, z, y, x)
        dome = _p(anat.dome[:, side] / (anat.lung_apex[:, side] - anat.lung_base[:, side]), s.ndim)
        taper = 1 - np.clip((s - 0.55) / 0.45, 0, 1) ** 2
        inside.append((rho2 < taper) & (s <= 1) & (s > dome * (1 - rho2)) & ~blocked)
        ss.append(s)
        aa.append(a)
    return LungParts(tuple(inside), tuple(ss), tuple(aa))


def lobes_from_parts(anat: CTAnatomy, parts: LungParts) -> np.ndarray:
    """int8 lobe codes (:data:`LOBES`, -1 outside the lungs) from :func:`lung_parts`."""
    s, a = parts.s, parts.a
    ndim = parts.inside[0].ndim
    lower_r = s[0] < _p(anat.major_m0[:, 0], ndim) - _p(anat.major_k[:, 0], ndim) * a[0]
    lower_l = s[1] < _p(anat.major_m0[:, 1], ndim) - _p(anat.major_k[:, 1], ndim) * a[1]
    right = np.where(lower_r, 2, np.where(s[0] < _p(anat.minor_h, ndim), 1, 0))
    left = np.where(lower_l, 4, 3)
    return np.where(parts.inside[0], right, np.where(parts.inside[1], left, -1)).astype(np.int8)


def lobe_index(anat: CTAnatomy, z, y, x) -> np.ndarray:
    """int8 lobe code (:data:`LOBES`) of points, -1 outside the lungs; inputs broadcast to (n, ...)."""
    return lobes_from_parts(anat, lung_parts(anat, z, y, x))


def effusion_from_parts(parts: LungParts, side: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Bool: the dependent (posterior-basal) part of lung ``side[i]`` that an effusion of ``depth[i]`` fills:
    inside that lung, ``a < depth`` and ``s < 0.5``.

    Args:
        parts: :func:`lung_parts` of n patients.
        side: (n,) int, -1 none, 0 right, 1 left.
        depth: (n,) fraction of the lung's front-to-back extent.
    """
    ndim = parts.inside[0].ndim
    out = np.zeros(parts.inside[0].shape, dtype=bool)
    for k in (0, 1):
        rows = side == k
        if rows.any():
            out |= _p(rows, ndim) & parts.inside[k] & (parts.a[k] < _p(depth, ndim)) & (parts.s[k] < 0.5)
    return out
