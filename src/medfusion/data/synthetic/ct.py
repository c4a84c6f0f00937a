"""Vectorised synthetic chest CT volumes in Hounsfield units, with lobes, nodules and ground-truth masks.

A batch of N volumes (default 32 x 64 x 64 voxels of 5 x 5 x 5 mm) is rendered with numpy
in chunks of :data:`CHUNK` patients as whole (m, D, H, W) arrays (no per-voxel or
per-patient Python loop), on a few threads, each chunk with its own random stream so the
result does not depend on the thread count. Axes are RAS voxel order, as
:func:`~medfusion.data.io.write_nifti` expects: D inferior -> superior, H posterior ->
anterior, W patient's left -> right (the right lung is at large W). Geometry and lobes:
:mod:`._ct_anatomy`.

Tissues (:data:`HU`): air -1000 outside the body and in the trachea; subcutaneous fat -100;
soft tissue / mediastinum / heart / aorta +40; vertebral body (cancellous +250 in a +700
cortical ring) with the spinal canal +10; lungs -850 (posterior +25, anterior -25: the
dependent gradient; smooth texture 15 HU) with pulmonary vessels branching from each hilum
(tubes of 3.5 -> 1 mm radius, up to about -300 HU, fading toward the periphery; 8 vessel
trees per cohort, one per patient). Gaussian noise (18 HU) over everything, floored at -1024.

Findings (:data:`CT_FINDINGS`, mask channel order):

| finding | where | appearance | mask |
|---|---|---|---|
| nodule | inside one lobe (centre and 48 points at radius + half a voxel diagonal inside it, clear of an effusion) | sphere of the given diameter (mm), solid +30 HU or ground-glass -550 HU, partial volume from 27 sub-samples per voxel; spiculated: 8 tapering radial spikes 0.8-1.4 radii long | sphere voxels at least half covered (+ the centre voxel) |
| emphysema | lungs, upper-lobe predominant | patches of -960 HU (about 15 % of the lung) | those voxels |
| effusion | posterior-basal part of one lung | fluid +10 HU | those voxels |
| granuloma | a lobe other than the nodule's | calcified sphere, 3-4.5 mm radius, +1000 HU (partial volume) | voxels at least half covered + the centre voxel |

The nodule's equivalent diameter ``(6 V / pi)^(1/3)``, with V the sum of its partial-volume
fractions times the voxel volume, is within 10 % (0.6 mm below 6 mm) of the planted diameter.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from medfusion.data.synthetic._ct_anatomy import (
    LOBE_NAMES, LOBE_SIDE, LOBES, CTAnatomy, effusion_from_parts, grid3, lobe_index, lung_parts, random_ct_anatomy,
    trachea,
)
from medfusion.data.synthetic._ct_lesions import place_lesions, render_lesions

#: Finding channels of the masks.
CT_FINDINGS: tuple[str, ...] = ("nodule", "emphysema", "effusion", "granuloma")
NODULE, EMPHYSEMA, EFFUSION, GRANULOMA = range(4)
#: Attenuation of each tissue (HU).
HU = MappingProxyType({
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "soft_tissue": 40.0, "bone_cortex": 700.0,
    "bone_cancellous": 250.0, "csf": 10.0, "fluid": 10.0, "solid_nodule": 30.0, "ground_glass": -550.0,
    "calcified": 1000.0, "emphysema": -960.0,
})
#: Patients rendered per vectorised chunk.
CHUNK = 16
_F32 = np.float32
_VESSEL_TEMPLATES = 8


@dataclass
class CTSpec:
    """What to draw for each of N patients.

    Attributes:
        nodule: (N,) bool.
        nodule_lobe: (N,) int8 lobe code (:data:`~._ct_anatomy.LOBES`), -1 where no nodule.
        nodule_diameter_mm: (N,) float32 in [3, 30] mm, NaN where no nodule.
        nodule_spiculated: (N,) bool (False where no nodule).
        nodule_solid: (N,) bool, solid (True) or ground-glass (False).
        emphysema: (N,) bool.
        effusion_side: (N,) int8: -1 none, 0 right, 1 left.
        granuloma: (N,) bool, a calcified granuloma in a lobe other than the nodule's.

    Raises:
        ValueError: on mismatched shapes or out-of-range codes and sizes.
    """

    nodule: np.ndarray
    nodule_lobe: np.ndarray
    nodule_diameter_mm: np.ndarray
    nodule_spiculated: np.ndarray
    nodule_solid: np.ndarray
    emphysema: np.ndarray
    effusion_side: np.ndarray
    granuloma: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.nodule))
        for name, dtype in (("nodule", bool), ("nodule_lobe", np.int8), ("nodule_diameter_mm", _F32),
                            ("nodule_spiculated", bool), ("nodule_solid", bool), ("emphysema", bool),
                            ("effusion_side", np.int8), ("granuloma", bool)):
            value = np.asarray(getattr(self, name))
            if value.shape != (n,):
                raise ValueError(f"ct spec: expected {name} of shape ({n},) like nodule, received {value.shape}")
            setattr(self, name, value.astype(dtype))
        has = self.nodule
        if not np.isin(self.nodule_lobe[has], range(len(LOBES))).all():
            raise ValueError(f"ct spec: expected nodule_lobe in 0..{len(LOBES) - 1} where nodule, received "
                             f"{sorted(set(self.nodule_lobe[has].tolist()))}")
        size = self.nodule_diameter_mm[has]
        if not ((size >= 3) & (size <= 30)).all():
            raise ValueError(f"ct spec: expected nodule_diameter_mm in [3, 30] where nodule, received values "
                             f"from {np.nanmin(size):.2f} to {np.nanmax(size):.2f}")
        if not np.isin(self.effusion_side, (-1, 0, 1)).all():
            raise ValueError(f"ct spec: expected effusion_side in {{-1, 0, 1}}, received "
                             f"{sorted(set(self.effusion_side.tolist()))}")
        self.nodule_lobe = np.where(has, self.nodule_lobe, -1).astype(np.int8)
        self.nodule_diameter_mm = np.where(has, self.nodule_diameter_mm, np.nan).astype(_F32)
        self.nodule_spiculated &= has
        self.nodule_solid &= has

    def __len__(self) -> int:
        return len(self.nodule)


@dataclass
class CTBatch:
    """Rendered volumes and their ground truth.

    Attributes:
        volumes: (N, 1, D, H, W) float32 HU.
        masks: (N, F, D, H, W) bool, channels in :data:`CT_FINDINGS` order.
        boxes: (N, F, 6) int32 ``(z0, y0, x0, z1, y1, x1)`` end-exclusive voxel boxes, -1 where empty.
        spec: what was asked for.
        anatomy: per-patient geometry (``anatomy.lobe_map(shape)`` gives the lobes).
        spacing: (slice, row, col) mm.
        nodule_center: (N, 3) float32 voxel coordinates (d, h, w) of the nodule centre, NaN where none.
        nodule_volume_fraction: (N,) float32 sum of the nodule sphere's partial-volume fractions, in
            voxels (0 where none): times the voxel volume, the nodule's rendered volume (spikes excluded).
        granuloma_lobe: (N,) int8 lobe of the granuloma, -1 where none.
        effusion_depth: (N,) float32 front-to-back share of the lung the effusion fills.
    """

    volumes: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    spec: CTSpec
    anatomy: CTAnatomy
    spacing: tuple[float, float, float]
    nodule_center: np.ndarray
    nodule_volume_fraction: np.ndarray
    granuloma_lobe: np.ndarray
    effusion_depth: np.ndarray


def check_volume_geometry(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """``shape`` as three ints >= 16 and ``spacing`` as three positive finite mm.

    Raises:
        ValueError: naming the argument and the received value.
    """
    if not isinstance(shape, (tuple, list)) or len(shape) != 3 or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 16 for s in shape):
        raise ValueError(f"ct: expected shape as three ints (D, H, W) >= 16, received {shape!r}")
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"ct: expected spacing as three positive mm (slice, row, col), received {spacing!r}")
    return (int(shape[0]), int(shape[1]), int(shape[2])), values


def boxes_3d(masks: np.ndarray) -> np.ndarray:
    """(..., 6) int32 end-exclusive boxes ``(z0, y0, x0, z1, y1, x1)`` of (..., D, H, W) masks; -1 where empty."""
    out = []
    for axes in ((-2, -1), (-3, -1), (-3, -2)):
        line = masks.any(axis=axes)
        out.append((line.argmax(axis=-1), line.shape[-1] - line[..., ::-1].argmax(axis=-1)))
    boxes = np.stack([out[0][0], out[1][0], out[2][0], out[0][1], out[1][1], out[2][1]], axis=-1).astype(np.int32)
    boxes[~masks.any(axis=(-3, -2, -1))] = -1
    return boxes


def _smooth_field(rng: np.random.Generator, m: int, shape, knots: int) -> np.ndarray:
    """(m, D, H, W) float32 smooth Gaussian random field of about unit variance.

    Unit-normal values on a ``knots``^3 lattice spread to voxels with separable Gaussian
    weights (three small matrix products).
    """
    mats = []
    for size in shape:
        centres = (np.arange(knots) + 0.5) / knots
        pos = (np.arange(size) + 0.5) / size
        w = np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / (0.75 / knots)) ** 2)
        mats.append((w / np.sqrt((w**2).sum(axis=1, keepdims=True))).astype(_F32))
    field = rng.standard_normal((m, knots, knots, knots), dtype=_F32)
    for mat in mats:  # tensordot puts the new axis last: (m, k, k, k) -> (m, k, k, D) -> ... -> (m, D, H, W)
        field = np.tensordot(field, mat, axes=([1], [1]))
    return np.ascontiguousarray(field)


def _vessel_templates(rng: np.random.Generator, shape, spacing) -> np.ndarray:
    """(M, D, H, W) float32 partial-volume fraction of branching vessel trees from both hila."""
    d, h, w = shape
    fov = np.array([d * spacing[0], h * spacing[1], w * spacing[2]], dtype=_F32)
    z, y, x = (c[0] for c in grid3(shape))
    zz, yy, xx = z * fov[0], y * fov[1], x * fov[2]  # (D, 1, 1), (1, H, 1), (1, 1, W) mm
    voxel = float(np.cbrt(np.prod(spacing)))
    out = np.zeros((_VESSEL_TEMPLATES, d, h, w), dtype=_F32)
    for t in range(_VESSEL_TEMPLATES):
        for sign in (1.0, -1.0):  # right hilum, then left
            hilum = np.array([0.55, 0.5, 0.5 + sign * 0.09]) * fov
            s, angle, rho = rng.uniform(0.1, 0.9, 10), rng.uniform(0, 2 * np.pi, 10), rng.uniform(0.5, 0.95, 10)
            ends = np.stack([0.05 + 0.9 * s, 0.5 + 0.22 * rho * np.sin(angle),
                             0.5 + sign * 0.175 + 0.13 * rho * np.cos(angle)], axis=1) * fov
            for end in ends.astype(_F32):
                seg = end - hilum
                rel = (zz - hilum[0], yy - hilum[1], xx - hilum[2])
                along = np.clip((rel[0] * seg[0] + rel[1] * seg[1] + rel[2] * seg[2]) / (seg @ seg), 0, 1)
                dist = np.sqrt(sum((r - along * g) ** 2 for r, g in zip(rel, seg)))
                radius = 3.5 - 2.5 * along
                np.maximum(out[t], np.clip(0.5 + (radius - dist) / voxel, 0, 1) * (1 - 0.5 * along), out=out[t])
    return out


def render_ct(
    spec: CTSpec,
    rng: np.random.Generator,
    *,
    shape: tuple[int, int, int] = (32, 64, 64),
    spacing: tuple[float, float, float] = (5.0, 5.0, 5.0),
    workers: int | None = None,
) -> CTBatch:
    """Render N chest CT volumes with the findings of ``spec`` (see the module docstring).

    Args:
        spec: findings per patient.
        rng: the random generator; the same state gives the same volumes.
        shape: (D, H, W) voxels, each >= 16.
        spacing: (slice, row, col) mm.
        workers: threads rendering chunks (default: CPU count, at most 4); the volumes do
            not depend on it.

    Returns:
        :class:`CTBatch`: volumes (N, 1, D, H, W) float32 HU, masks (N, 4, D, H, W) bool, boxes.

    Raises:
        ValueError: on a bad spec, shape, spacing or workers.

    Examples::

        spec = CTSpec(nodule=[True], nodule_lobe=[0], nodule_diameter_mm=[12.0], nodule_spiculated=[True],
                      nodule_solid=[True], emphysema=[False], effusion_side=[-1], granuloma=[False])
        batch = render_ct(spec, np.random.default_rng(0))
        batch.volumes.shape  # (1, 1, 32, 64, 64)
    """
    if not isinstance(spec, CTSpec):
        raise ValueError(f"ct: expected spec to be a CTSpec, received {type(spec).__name__}")
    shape, spacing = check_volume_geometry(shape, spacing)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"ct: expected workers as an int >= 1 or None, received {workers!r}")
    workers = workers or min(4, os.cpu_count() or 1)
    n = len(spec)
    anatomy = random_ct_anatomy(rng, n)
    effusion_depth = rng.uniform(0.15, 0.3, n).astype(_F32)
    lesions = place_lesions(spec, anatomy, effusion_depth, rng, shape, spacing)
    templates = _vessel_templates(rng, shape, spacing)
    template_of = rng.integers(0, _VESSEL_TEMPLATES, n)
    volumes = np.empty((n, 1, *shape), dtype=_F32)
    masks = np.zeros((n, len(CT_FINDINGS), *shape), dtype=bool)
    fraction = np.zeros(n, dtype=_F32)
    starts = range(0, n, CHUNK)
    chunk_rngs = rng.spawn(len(starts))

    def render(i: int) -> None:
        rows = slice(starts[i], min(starts[i] + CHUNK, n))
        volumes[rows, 0], masks[rows], fraction[rows] = _render_chunk(
            spec, anatomy, rows, effusion_depth[rows], lesions, templates[template_of[rows]], chunk_rngs[i],
            shape, spacing)

    with ThreadPoolExecutor(workers) as pool:  # numpy releases the GIL inside its array loops
        list(pool.map(render, range(len(starts))))
    return CTBatch(volumes=volumes, masks=masks, boxes=boxes_3d(masks), spec=spec, anatomy=anatomy,
                   spacing=spacing, nodule_center=lesions.nodule_center, nodule_volume_fraction=fraction,
                   granuloma_lobe=lesions.granuloma_lobe, effusion_depth=effusion_depth)


def _render_chunk(spec: CTSpec, anatomy: CTAnatomy, rows: slice, depth, lesions, vessels, rng, shape, spacing):
    """Volumes (m, D, H, W) HU, masks (m, F, D, H, W) and nodule partial-volume sums (m,) of one chunk."""
    anat = anatomy.take(rows)
    m = len(anat)
    hu_ = {name: _F32(value) for name, value in HU.items()}
    z, y, x = grid3(shape)
    # the body cross-section is the same on every slice: paint it in 2-D, then repeat it along D
    per = lambda v: v[:, None, None, None]  # noqa: E731
    body_r = ((x - 0.5) / per(anat.body_ax)) ** 2 + ((y - 0.5) / per(anat.body_ay)) ** 2  # (m, 1, H, W)
    section = np.where(body_r < 0.81, hu_["soft_tissue"], np.where(body_r < 1, hu_["fat"], hu_["air"]))
    sy, sr = per(anat.spine[:, 1]), per(anat.spine[:, 2])
    vertebra = (x - 0.5) ** 2 + (y - sy) ** 2
    section = np.where(vertebra < sr**2, np.where(vertebra < (0.75 * sr) ** 2, hu_["bone_cancellous"],
                                                  hu_["bone_cortex"]), section)
    section = np.where((x - 0.5) ** 2 + (y - (sy - 1.6 * sr)) ** 2 < (0.45 * sr) ** 2, hu_["csf"], section)
    hu = np.repeat(section.astype(_F32), shape[0], axis=1)
    hu[np.broadcast_to(trachea(z, y, x), hu.shape)] = hu_["air"]

    parts = lung_parts(anat, z, y, x)
    right, left = parts.inside
    lungs = right | left
    a = np.where(right, parts.a[0], parts.a[1])
    parenchyma = hu_["lung"] + 50 * (0.5 - a) + 15 * _smooth_field(rng, m, shape, 12) \
        + (hu_["soft_tissue"] - hu_["lung"]) * _F32(0.6) * vessels
    masks = np.zeros((m, len(CT_FINDINGS), *shape), dtype=bool)
    emph = np.flatnonzero(spec.emphysema[rows])  # upper-lobe predominant low-attenuation patches
    height = np.where(right, parts.s[0], parts.s[1])[emph]
    score = np.where(lungs[emph], _smooth_field(rng, len(emph), shape, 6) + 1.2 * (np.clip(height, 0, 1) - 0.5),
                     -np.inf)
    threshold = np.minimum(1.0, score.max(axis=(1, 2, 3), keepdims=True) - 0.5)  # never an empty patch set
    masks[emph, EMPHYSEMA] = score > threshold
    hu = np.where(lungs, np.where(masks[:, EMPHYSEMA], hu_["emphysema"], parenchyma), hu)
    masks[:, EFFUSION] = effusion_from_parts(parts, spec.effusion_side[rows], depth)
    hu[masks[:, EFFUSION]] = hu_["fluid"]
    fraction = render_lesions(hu, masks, spec, lesions, rows, spacing, NODULE, GRANULOMA, hu_["calcified"])
    masks[:, EMPHYSEMA] &= ~masks[:, NODULE]
    hu += 18.0 * rng.standard_normal(hu.shape, dtype=_F32)
    return np.maximum(hu, -1024.0), masks, fraction


__all__ = [
    "CHUNK", "CT_FINDINGS", "EFFUSION", "EMPHYSEMA", "GRANULOMA", "HU", "LOBES", "LOBE_NAMES", "LOBE_SIDE", "NODULE",
    "CTAnatomy", "CTBatch", "CTSpec", "boxes_3d", "check_volume_geometry", "lobe_index", "render_ct",
]
