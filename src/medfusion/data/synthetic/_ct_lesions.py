"""Placing and painting the focal CT lesions (nodules, granulomas) for :mod:`.ct`.

Placement is vectorised rejection sampling: for every patient still unplaced, 64 candidate
centres are drawn in the bounding box of the lesion's lung, and a candidate is accepted when
the centre and 48 points on a sphere of radius ``r + half the voxel diagonal`` around it all
lie in the wanted lobe (:func:`~._ct_anatomy.lobe_index`) and outside the effusion. After 40
rounds a patient still unplaced keeps its best candidate (most points inside).

Painting works on a fixed-size crop around each lesion (one fancy-indexed gather and scatter
for the whole chunk): each voxel is split into 3 x 3 x 3 sub-samples and its partial-volume
fraction is the share of sub-samples inside the sphere (or a spike), so the summed fraction
times the voxel volume is the lesion's volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfusion.data.synthetic._ct_anatomy import LOBE_SIDE, CTAnatomy, effusion_from_parts, lobes_from_parts, lung_parts

_F32 = np.float32
#: Spikes per spiculated nodule.
SPIKES = 8
_SUB = np.array([-1 / 3, 0.0, 1 / 3], dtype=_F32)


def _sphere_directions(k: int = 48) -> np.ndarray:
    """(k, 3) unit vectors spread over the sphere (Fibonacci lattice)."""
    i = np.arange(k) + 0.5
    polar = np.arccos(1 - 2 * i / k)
    azimuth = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], axis=1)


_DIRECTIONS = np.concatenate([np.zeros((1, 3)), _sphere_directions()])


@dataclass
class Lesions:
    """Where the focal lesions go (all (N, ...) arrays; voxel coordinates: voxel i's centre is i).

    Attributes:
        nodule_center: (N, 3) float32 (d, h, w), NaN where no nodule.
        nodule_hu: (N,) float32 attenuation of the nodule.
        spike_dirs: (N, SPIKES, 3) float32 unit vectors in mm space.
        spike_len: (N, SPIKES) float32 spike lengths beyond the surface (mm), 0 when not spiculated.
        granuloma_lobe: (N,) int8, -1 where none.
        granuloma_center: (N, 3) float32, NaN where none.
        granuloma_radius_mm: (N,) float32.
    """

    nodule_center: np.ndarray
    nodule_hu: np.ndarray
    spike_dirs: np.ndarray
    spike_len: np.ndarray
    granuloma_lobe: np.ndarray
    granuloma_center: np.ndarray
    granuloma_radius_mm: np.ndarray


def _place(anat: CTAnatomy, lobe, radius_mm, effusion_side, depth, rng, shape, spacing) -> np.ndarray:
    """(n, 3) float32 voxel centres of spheres of ``radius_mm`` inside lobe ``lobe[i]`` (NaN where lobe < 0)."""
    n = len(lobe)
    fov = np.asarray(shape, dtype=float) * np.asarray(spacing)
    margin = 0.5 * float(np.linalg.norm(spacing))
    centre = np.full((n, 3), np.nan)
    best = np.full(n, -1)
    todo = np.asarray(lobe) >= 0
    for _ in range(40):
        idx = np.flatnonzero(todo)
        if not idx.size:
            break
        sub = anat.take(idx)
        side = LOBE_SIDE[lobe[idx]]
        rows = np.arange(len(idx))
        low = np.stack([sub.lung_base[rows, side], sub.lung_cy[rows, side] - sub.lung_ay[rows, side],
                        sub.lung_cx[rows, side] - sub.lung_ax[rows, side]], axis=1)
        high = np.stack([sub.lung_apex[rows, side], sub.lung_cy[rows, side] + sub.lung_ay[rows, side],
                         sub.lung_cx[rows, side] + sub.lung_ax[rows, side]], axis=1)
        cand = low[:, None] + rng.random((len(idx), 64, 3)) * (high - low)[:, None]  # (k, 64, 3) normalised
        reach = (radius_mm[idx] + margin)[:, None, None, None] * _DIRECTIONS[None, None] / fov  # (k, 1, 49, 3)
        pts = cand[:, :, None, :] + reach
        z, y, x = pts[..., 0], pts[..., 1], pts[..., 2]
        parts = lung_parts(sub, z, y, x)
        inside = (lobes_from_parts(sub, parts) == lobe[idx][:, None, None]) & ~effusion_from_parts(
            parts, effusion_side[idx], depth[idx])
        score = inside.sum(axis=-1)  # (k, 64)
        pick = score.argmax(axis=1)
        top = score[rows, pick]
        better = top > best[idx]
        centre[idx[better]] = cand[better, pick[better]]
        best[idx[better]] = top[better]
        todo[idx[top == _DIRECTIONS.shape[0]]] = False
    return (centre * np.asarray(shape) - 0.5).astype(_F32)  # normalised -> voxel coordinates


def place_lesions(spec, anat: CTAnatomy, effusion_depth, rng: np.random.Generator, shape, spacing) -> Lesions:
    """Centres, spikes and attenuation of every patient's nodule and granuloma (see the module docstring)."""
    n = len(spec)
    radius = np.where(spec.nodule, np.nan_to_num(spec.nodule_diameter_mm) / 2, 0.0)
    directions = rng.standard_normal((n, SPIKES, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    spike_len = np.where(spec.nodule_spiculated[:, None], radius[:, None] * rng.uniform(0.8, 1.4, (n, SPIKES)), 0.0)
    nodule_hu = np.where(spec.nodule_solid, 30.0 + 10 * rng.standard_normal(n), -550.0 + 30 * rng.standard_normal(n))
    other = np.where(spec.nodule, (spec.nodule_lobe + rng.integers(1, 5, n)) % 5, rng.integers(0, 5, n))
    granuloma_lobe = np.where(spec.granuloma, other, -1).astype(np.int8)
    granuloma_radius = rng.uniform(3.0, 4.5, n)
    return Lesions(
        nodule_center=_place(anat, spec.nodule_lobe, radius, spec.effusion_side, effusion_depth, rng, shape, spacing),
        nodule_hu=nodule_hu.astype(_F32), spike_dirs=directions.astype(_F32), spike_len=spike_len.astype(_F32),
        granuloma_lobe=granuloma_lobe,
        granuloma_center=_place(anat, granuloma_lobe, granuloma_radius, spec.effusion_side, effusion_depth, rng,
                                shape, spacing),
        granuloma_radius_mm=granuloma_radius.astype(_F32),
    )


def _paint(hu, mask, center, radius, value, spike_dirs, spike_len, spacing) -> np.ndarray:
    """Blend spheres (with optional spikes) into ``hu`` (k, D, H, W) in place; set ``mask``; return (k,) sums
    of the sphere's partial-volume fractions."""
    k = len(hu)
    shape = hu.shape[1:]
    reach = float((radius + spike_len.max(axis=1)).max())
    size = [min(dim, 2 * int(np.ceil(reach / sp)) + 3) for dim, sp in zip(shape, spacing)]
    start = np.clip(np.round(center).astype(int) - np.array(size) // 2, 0, np.array(shape) - np.array(size))
    idx = [start[:, a, None] + np.arange(size[a]) for a in range(3)]  # (k, S_a)
    # (k, S_a, 3) mm offsets of the sub-samples from the centre, per axis
    off = [(((idx[a][:, :, None] + _SUB) - center[:, a, None, None]) * spacing[a]).astype(_F32) for a in range(3)]
    dz = off[0][:, :, None, None, :, None, None]
    dy = off[1][:, None, :, None, None, :, None]
    dx = off[2][:, None, None, :, None, None, :]
    rho2 = dz**2 + dy**2 + dx**2  # (k, Sz, Sy, Sx, 3, 3, 3)
    r = radius.reshape(k, 1, 1, 1, 1, 1, 1)
    core = rho2 < r**2
    solid = core.copy()
    spiky = np.flatnonzero((spike_len > 0).any(axis=1))
    for j in range(spike_len.shape[1] if spiky.size else 0):
        d = spike_dirs[spiky, j].reshape(-1, 1, 1, 1, 1, 1, 1, 3)
        along = dz[spiky] * d[..., 0] + dy[spiky] * d[..., 1] + dx[spiky] * d[..., 2]
        length = spike_len[spiky, j].reshape(-1, 1, 1, 1, 1, 1, 1)
        base, tip = 0.7 * r[spiky], r[spiky] + length
        width = (0.35 * r[spiky] + 0.5) * (tip - along) / np.maximum(tip - base, 1e-6)
        solid[spiky] |= (along >= base) & (along <= tip) & (rho2[spiky] - along**2 < width**2)
    fraction = solid.mean(axis=(4, 5, 6), dtype=_F32)
    core_fraction = core.mean(axis=(4, 5, 6), dtype=_F32)
    rows = np.arange(k)[:, None, None, None]
    zz, yy, xx = idx[0][:, :, None, None], idx[1][:, None, :, None], idx[2][:, None, None, :]
    crop = hu[rows, zz, yy, xx]
    hu[rows, zz, yy, xx] = crop * (1 - fraction) + value[:, None, None, None] * fraction
    centre_voxel = np.zeros(core_fraction.shape, dtype=bool)
    local = np.round(center).astype(int) - start
    centre_voxel[np.arange(k), local[:, 0], local[:, 1], local[:, 2]] = True
    mask[rows, zz, yy, xx] |= (core_fraction >= 0.5) | centre_voxel
    return core_fraction.sum(axis=(1, 2, 3))


def render_lesions(hu, masks, spec, lesions: Lesions, rows: slice, spacing, nodule_channel: int,
                   granuloma_channel: int, granuloma_hu: float) -> np.ndarray:
    """Paint the nodules and granulomas of patients ``rows`` into ``hu`` (m, D, H, W) and ``masks``
    (m, F, D, H, W) in place; return (m,) float32 nodule partial-volume sums (voxels)."""
    m = len(hu)
    out = np.zeros(m, dtype=_F32)
    has = np.flatnonzero(spec.nodule[rows])
    if has.size:
        g = has + rows.start
        view_hu, view_mask = hu[has], masks[has, nodule_channel]
        out[has] = _paint(view_hu, view_mask, lesions.nodule_center[g], np.nan_to_num(spec.nodule_diameter_mm[g]) / 2,
                          lesions.nodule_hu[g], lesions.spike_dirs[g], lesions.spike_len[g], spacing)
        hu[has], masks[has, nodule_channel] = view_hu, view_mask
    has = np.flatnonzero(spec.granuloma[rows])
    if has.size:
        g = has + rows.start
        view_hu, view_mask = hu[has], masks[has, granuloma_channel]
        _paint(view_hu, view_mask, lesions.granuloma_center[g], lesions.granuloma_radius_mm[g],
               np.full(len(g), granuloma_hu, _F32), lesions.spike_dirs[g], np.zeros((len(g), SPIKES), _F32), spacing)
        hu[has], masks[has, granuloma_channel] = view_hu, view_mask
    return out
