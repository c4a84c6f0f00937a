"""Vectorised synthetic chest X-rays (PA view) with anatomy, zoned findings and ground-truth masks.

A batch of N radiographs is drawn at once with numpy (no per-pixel or per-sample Python
loop): patients are painted in chunks of :data:`CHUNK` as whole (m, H, W) arrays, chunks on
a few threads (numpy releases the GIL), each chunk with its own random stream so the
result does not depend on the thread count. Intensities are a simple additive density
model in [0, 1] (see :mod:`._xray_paint`): dense structures (bone, heart, fluid) bright,
air (lungs, trachea, gastric bubble) dark. About 0.5 ms per 128 x 128 image on 2 cores.

**Orientation (radiological convention).** Images are shown as if the viewer faces the
patient: the patient's *right* is on the image *left* (small column index) and the
patient's *left* on the image right. Row 0 is the top (head). Everywhere in this package
``side`` means the *patient's* side: :data:`RIGHT` (0) = image left half, :data:`LEFT`
(1) = image right half. Side axes of size 2 (lungs) are ordered (right, left).

**Anatomy** (:class:`Anatomy`, varied per patient): body outline with neck and shoulder
slope; two lung fields (ellipses cut below by the diaphragm domes, so each lung's
lateral-inferior corner is a sharp costophrenic angle); heart (an ellipse sitting on the
left hemidiaphragm, two thirds of it left of the midline, its width set by the
cardiothoracic ratio (CTR) = maximal heart width / maximal thoracic width measured
between the outer lung borders); mediastinum and spine; trachea; aortic knob; posterior
ribs (curved periodic bands); clavicles; the right hemidiaphragm higher than the left;
gastric bubble; lung vascular markings fading towards the periphery.

**Zones.** Each lung is split at ``Anatomy.zone_split`` (half-way between its apex and
its costophrenic angle): :data:`UPPER` above, :data:`LOWER` below.

**Findings** (:data:`FINDINGS`, mask channel order), each with a boolean mask of where it
changes the image (inside the named region) and a box:

| finding | side | zone | appearance |
|---|---|---|---|
| consolidation | right / left | upper / lower | blotchy opacity inside that lung zone |
| infiltrates | both | - | patchy perihilar/basal opacities in both lungs |
| effusion | right / left / both | lower | fluid with a meniscus rising laterally; blunts the costophrenic angle |
| cardiomegaly | - | - | CTR > 0.5; the mask is the heart silhouette |
| pneumothorax | right / left | upper | apical-lateral lucent rim without lung markings, thin visceral pleural line |
| nodule | right / left | upper / lower | small round opacity (radius 2-4 px at 128) |
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

from medfusion.data.synthetic._fields import grid, image_size, masks_to_boxes
from medfusion.data.synthetic._xray_geometry import (  # noqa: F401  (codes re-exported)
    BOTH, CARDIOMEGALY, CONSOLIDATION, EFFUSION, FINDINGS, INFILTRATES, LEFT, LOWER, NO_SIDE, NO_ZONE, NODULE,
    PNEUMOTHORAX, RIGHT, SIDE_NAMES, UPPER, ZONE_NAMES, ellipse_rho2, lung_fields,
)
from medfusion.data.synthetic._xray_paint import Workspace, paint_chunk

#: Patients rendered per vectorised chunk.
CHUNK = 256

#: Allowed (sides, zones) of a present finding.
_ALLOWED = {
    CONSOLIDATION: ({RIGHT, LEFT}, {UPPER, LOWER}),
    INFILTRATES: ({BOTH}, {NO_ZONE}),
    EFFUSION: ({RIGHT, LEFT, BOTH}, {LOWER}),
    CARDIOMEGALY: ({NO_SIDE}, {NO_ZONE}),
    PNEUMOTHORAX: ({RIGHT, LEFT}, {UPPER}),
    NODULE: ({RIGHT, LEFT}, {UPPER, LOWER}),
}
_F32 = np.float32


@dataclass
class XraySpec:
    """What to draw for each of N patients.

    Attributes:
        present: (N, F) bool, finding f present (columns in :data:`FINDINGS` order).
        side: (N, F) int8 patient's side (:data:`RIGHT`, :data:`LEFT`, :data:`BOTH`), -1 where
            absent or not applicable.
        zone: (N, F) int8 (:data:`UPPER`, :data:`LOWER`), -1 where absent or not applicable.
        ctr: (N,) float32 cardiothoracic ratio; cardiomegaly must be present exactly where
            ``ctr > 0.5``.

    Raises:
        ValueError: on wrong shapes, a side/zone a finding cannot have, or cardiomegaly flags
            that disagree with ``ctr``.
    """

    present: np.ndarray
    side: np.ndarray
    zone: np.ndarray
    ctr: np.ndarray

    def __post_init__(self) -> None:
        self.present = np.asarray(self.present, dtype=bool)
        n, f = len(self.present), len(FINDINGS)
        if self.present.shape != (n, f):
            raise ValueError(f"xray spec: expected present of shape (N, {f}), received {self.present.shape}")
        self.ctr = np.asarray(self.ctr, dtype=_F32)
        for name in ("side", "zone"):
            value = np.asarray(getattr(self, name))
            if value.shape != (n, f):
                raise ValueError(f"xray spec: expected {name} of shape {(n, f)}, received {value.shape}")
            setattr(self, name, np.where(self.present, value, -1).astype(np.int8))
        if self.ctr.shape != (n,) or not np.all((self.ctr > 0.2) & (self.ctr < 0.8)):
            raise ValueError(f"xray spec: expected ctr of shape ({n},) with values in (0.2, 0.8), "
                             f"received shape {self.ctr.shape}")
        for finding, (sides, zones) in _ALLOWED.items():
            rows = self.present[:, finding]
            for name, allowed in (("side", sides), ("zone", zones)):
                bad = rows & ~np.isin(getattr(self, name)[:, finding], list(allowed))
                if bad.any():
                    i = int(np.argmax(bad))
                    raise ValueError(
                        f"xray spec: {FINDINGS[finding]} expects {name} in {sorted(allowed)}, "
                        f"received {int(getattr(self, name)[i, finding])} for patient {i}"
                    )
        enlarged = self.ctr > 0.5
        if np.any(enlarged != self.present[:, CARDIOMEGALY]):
            i = int(np.argmax(enlarged != self.present[:, CARDIOMEGALY]))
            raise ValueError(f"xray spec: expected cardiomegaly present exactly where ctr > 0.5, "
                             f"received ctr {self.ctr[i]:.3f} and cardiomegaly {bool(self.present[i, CARDIOMEGALY])} "
                             f"for patient {i}")

    def __len__(self) -> int:
        return len(self.present)

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, rates: dict[str, float] | None = None) -> XraySpec:
        """N patients with independent findings, for stand-alone use of the renderer.

        Args:
            rng: the random generator.
            n: number of patients.
            rates: {finding: prevalence}; defaults to 0.2 for each finding.

        Raises:
            ValueError: on an unknown finding name or a rate outside [0, 1].
        """
        rates = {name: 0.2 for name in FINDINGS} | dict(rates or {})
        unknown = sorted(set(rates) - set(FINDINGS))
        if unknown:
            raise ValueError(f"xray spec: unknown finding(s) {unknown}; expected names from {list(FINDINGS)}")
        for name, rate in rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"xray spec: expected the rate of {name} in [0, 1], received {rate!r}")
        present = rng.random((n, len(FINDINGS))) < np.array([rates[name] for name in FINDINGS])
        side = rng.integers(0, 2, (n, len(FINDINGS)), dtype=np.int8)
        zone = rng.integers(0, 2, (n, len(FINDINGS)), dtype=np.int8)
        side[:, INFILTRATES] = BOTH
        side[:, EFFUSION] = rng.choice(np.array([RIGHT, LEFT, BOTH], dtype=np.int8), n, p=[0.4, 0.4, 0.2])
        side[:, CARDIOMEGALY] = NO_SIDE
        zone[:, [INFILTRATES, CARDIOMEGALY]] = NO_ZONE
        zone[:, EFFUSION] = LOWER
        zone[:, PNEUMOTHORAX] = UPPER
        return cls(present, side, zone, sample_ctr(rng, present[:, CARDIOMEGALY]))


def sample_ctr(rng: np.random.Generator, enlarged: np.ndarray) -> np.ndarray:
    """(N,) float32 cardiothoracic ratios: U(0.38, 0.47) normal, U(0.54, 0.66) where ``enlarged``.

    The gaps around 0.5 keep the CTR measured on a 128-pixel mask on the right side of 0.5.
    """
    enlarged = np.asarray(enlarged, dtype=bool)
    normal = rng.uniform(0.38, 0.47, enlarged.shape)
    big = rng.uniform(0.54, 0.66, enlarged.shape)
    return np.where(enlarged, big, normal).astype(_F32)


@dataclass
class Anatomy:
    """Per-patient geometry in normalised coordinates u = x / W (right-wards), v = y / H (down-wards).

    Side axes of size 2 are (patient's right = image left, patient's left = image right).

    Attributes:
        midline: (N,) u of the spine.
        scale: (N,) body size factor.
        lung_cx, lung_ax: (N, 2) centre u and horizontal semi-axis of each lung ellipse.
        lung_cy, lung_ay: (N, 2) centre v and vertical semi-axis of each lung ellipse.
        apex: (N, 2) v of the lung apices.
        costophrenic: (N, 2) v of the costophrenic angles (lowest lateral lung point).
        dome: (N, 2) v of the hemidiaphragm domes (right higher than left).
        heart_cx, heart_cy, heart_ax, heart_ay: (N,) heart ellipse.
        ctr: (N,) cardiothoracic ratio = 2 * heart_ax / thoracic width.
        rib_start, rib_spacing, rib_curve: (N,) posterior rib pattern.
        contrast, brightness: (N,) exposure.
    """

    midline: np.ndarray
    scale: np.ndarray
    lung_cx: np.ndarray
    lung_ax: np.ndarray
    lung_cy: np.ndarray
    lung_ay: np.ndarray
    apex: np.ndarray
    costophrenic: np.ndarray
    dome: np.ndarray
    heart_cx: np.ndarray
    heart_cy: np.ndarray
    heart_ax: np.ndarray
    heart_ay: np.ndarray
    ctr: np.ndarray
    rib_start: np.ndarray
    rib_spacing: np.ndarray
    rib_curve: np.ndarray
    contrast: np.ndarray
    brightness: np.ndarray

    def __len__(self) -> int:
        return len(self.midline)

    def take(self, index: np.ndarray | slice) -> Anatomy:
        """The anatomy of a subset of patients."""
        return Anatomy(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def thoracic_width(self) -> np.ndarray:
        """(N,) maximal width between the outer lung borders (normalised)."""
        return (self.lung_cx[:, 1] + self.lung_ax[:, 1]) - (self.lung_cx[:, 0] - self.lung_ax[:, 0])

    @property
    def zone_split(self) -> np.ndarray:
        """(N, 2) v separating the upper and lower zone of each lung."""
        return 0.5 * (self.apex + self.costophrenic)

    def masks(self, size: int | tuple[int, int] = 128) -> tuple[np.ndarray, np.ndarray]:
        """Hard anatomy masks: lungs (N, 2, H, W) bool (right, left) and heart (N, H, W) bool."""
        height, width = image_size(size)
        u, v = grid(height, width)
        lungs = np.empty((len(self), 2, height, width), dtype=bool)
        heart = np.empty((len(self), height, width), dtype=bool)
        for start in range(0, len(self), CHUNK):
            part = self.take(slice(start, start + CHUNK))
            for k in (RIGHT, LEFT):
                rho2, below = lung_fields(part, u, v, k)
                lungs[start:start + CHUNK, k] = (rho2 < 1) & (below > 0)
            heart[start:start + CHUNK] = ellipse_rho2(u, v, part.heart_cx, part.heart_cy,
                                                       part.heart_ax, part.heart_ay) < 1
        return lungs, heart


def random_anatomy(rng: np.random.Generator, ctr: np.ndarray) -> Anatomy:
    """Draw per-patient anatomy whose heart width gives the cardiothoracic ratios ``ctr`` (N,)."""
    ctr = np.asarray(ctr, dtype=np.float64)
    n = len(ctr)
    scale = np.clip(rng.normal(1.0, 0.035, n), 0.9, 1.1)
    midline = 0.5 + rng.normal(0, 0.008, n)
    half_thorax = 0.37 * scale
    mediastinum = rng.normal(0.06, 0.005, n) * scale
    ax_right = (half_thorax - mediastinum) / 2
    ax_left = ax_right * rng.uniform(0.94, 1.0, n)
    lung_ax = np.stack([ax_right, ax_left], axis=1)
    lung_cx = np.stack([midline - mediastinum - ax_right, midline + mediastinum + ax_left], axis=1)
    apex = (0.13 + rng.normal(0, 0.01, n))[:, None] + rng.normal(0, 0.004, (n, 2))
    cp = 0.80 + rng.normal(0, 0.015, n)
    costophrenic = np.stack([cp - 0.01, cp + 0.005], axis=1)
    dome_right = cp - rng.uniform(0.09, 0.13, n)
    dome = np.stack([dome_right, dome_right + rng.uniform(0.01, 0.035, n)], axis=1)
    # ellipse through the apex whose half-width at the costophrenic level is 0.8 * ax
    lung_ay = (costophrenic - apex) / 1.6
    lung_cy = apex + lung_ay
    thoracic = (lung_cx[:, 1] + ax_left) - (lung_cx[:, 0] - ax_right)
    heart_ax = ctr * thoracic / 2
    heart_cx = midline + heart_ax / 3  # one third right of the midline, two thirds left
    heart_ay = (0.145 + 0.3 * (heart_ax - 0.16)) * scale
    heart_cy = dome[:, 1] - 0.065
    values = dict(
        midline=midline, scale=scale, lung_cx=lung_cx, lung_ax=lung_ax, lung_cy=lung_cy, lung_ay=lung_ay,
        apex=apex, costophrenic=costophrenic, dome=dome, heart_cx=heart_cx, heart_cy=heart_cy,
        heart_ax=heart_ax, heart_ay=heart_ay, ctr=ctr, rib_start=rng.normal(0.125, 0.008, n),
        rib_spacing=rng.uniform(0.062, 0.072, n), rib_curve=rng.uniform(0.7, 1.1, n),
        contrast=rng.uniform(0.9, 1.1, n), brightness=rng.normal(0, 0.025, n),
    )
    return Anatomy(**{k: np.asarray(a, dtype=_F32) for k, a in values.items()})


@dataclass
class XrayBatch:
    """Rendered radiographs and their ground truth.

    Attributes:
        images: (N, 1, H, W) float32 in [0, 1].
        masks: (N, F, H, W) bool, where each finding of :data:`FINDINGS` changes the image
            (all False where absent).
        boxes: (N, F, 4) int32 ``(x0, y0, x1, y1)`` pixel boxes of the masks, end-exclusive;
            -1 where absent.
        spec: what was drawn.
        anatomy: the per-patient geometry (``anatomy.masks(size)`` gives lung and heart masks).
    """

    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    spec: XraySpec
    anatomy: Anatomy


@dataclass
class _Placement:
    """Per-patient geometry of every finding (drawn for all patients, used where present)."""

    cons_u: np.ndarray
    cons_v: np.ndarray
    cons_rx: np.ndarray
    cons_ry: np.ndarray
    nod_u: np.ndarray
    nod_v: np.ndarray
    nod_r: np.ndarray
    eff_height: np.ndarray
    ptx_width: np.ndarray
    ptx_angle: np.ndarray

    def take(self, index: slice) -> _Placement:
        return _Placement(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def _zone_point(rng, anat: Anatomy, side: np.ndarray, zone: np.ndarray, margin: float) -> tuple[np.ndarray, ...]:
    """A point (u, v) inside lung ``side`` and zone ``zone``, kept ``margin`` from the zone limits."""
    n = len(anat)
    k = np.clip(side, 0, 1).astype(np.intp)
    rows = np.arange(n)
    ax, cx = anat.lung_ax[rows, k], anat.lung_cx[rows, k]
    lateral = rng.uniform(-0.2, 0.45, n) * ax  # positive = towards the chest wall
    u = cx + np.where(k == RIGHT, -lateral, lateral)
    split, apex = anat.zone_split[rows, k], anat.apex[rows, k]
    upper = rng.uniform(apex + 0.08 + margin, split - margin)
    lower = rng.uniform(split + margin, anat.dome[rows, k] - 0.02 - margin / 2)
    return u.astype(_F32), np.where(zone == LOWER, lower, upper).astype(_F32)


def _placements(rng: np.random.Generator, spec: XraySpec, anat: Anatomy, height: int, width: int) -> _Placement:
    n = len(spec)
    cons_u, cons_v = _zone_point(rng, anat, spec.side[:, CONSOLIDATION], spec.zone[:, CONSOLIDATION], 0.06)
    nod_u, nod_v = _zone_point(rng, anat, spec.side[:, NODULE], spec.zone[:, NODULE], 0.04)
    return _Placement(
        cons_u=cons_u, cons_v=cons_v,
        cons_rx=rng.uniform(0.065, 0.095, n).astype(_F32), cons_ry=rng.uniform(0.05, 0.075, n).astype(_F32),
        nod_u=nod_u, nod_v=nod_v,
        nod_r=np.maximum(rng.uniform(0.018, 0.03, n), 1.3 / min(height, width)).astype(_F32),
        eff_height=rng.uniform(0.05, 0.15, n).astype(_F32),
        ptx_width=rng.uniform(0.14, 0.28, n).astype(_F32), ptx_angle=rng.uniform(0.3, 0.7, n).astype(_F32),
    )


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return max(1, min(4, os.cpu_count() or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"xray: expected workers to be an int >= 1 or None, received {workers!r}")
    return workers


def render_xrays(
    spec: XraySpec,
    rng: np.random.Generator,
    size: int | tuple[int, int] = 128,
    *,
    anatomy: Anatomy | None = None,
    workers: int | None = None,
) -> XrayBatch:
    """Render N chest radiographs with the findings of ``spec``.

    Args:
        spec: findings per patient (N rows).
        rng: the random generator (anatomy, placement, textures, noise).
        size: H = W, or (H, W); at least 32.
        anatomy: fixed anatomy (its ``ctr`` must equal ``spec.ctr``); drawn when ``None``.
        workers: threads painting chunks in parallel (``None``: up to 4, one per CPU). The
            images do not depend on it: each chunk has its own random stream.

    Returns:
        :class:`XrayBatch` with images (N, 1, H, W) float32 in [0, 1], masks (N, F, H, W)
        bool and boxes (N, F, 4) int32.

    Raises:
        ValueError: on a bad size or workers, or an anatomy that does not match ``spec``.

    Examples::

        rng = np.random.default_rng(0)
        batch = render_xrays(XraySpec.random(rng, 8), rng)
        batch.images.shape  # (8, 1, 128, 128)
    """
    if not isinstance(spec, XraySpec):
        raise ValueError(f"xray: expected spec to be an XraySpec, received {type(spec).__name__}")
    height, width = image_size(size)
    workers = _check_workers(workers)
    n = len(spec)
    if anatomy is None:
        anatomy = random_anatomy(rng, spec.ctr)
    elif len(anatomy) != n or not np.allclose(anatomy.ctr, spec.ctr, atol=1e-6):
        raise ValueError(f"xray: expected an anatomy of {n} patients with ctr equal to spec.ctr, "
                         f"received {len(anatomy)} patients")
    place = _placements(rng, spec, anatomy, height, width)
    images = np.empty((n, 1, height, width), dtype=_F32)
    masks = np.zeros((n, len(FINDINGS), height, width), dtype=bool)
    u, v = grid(height, width)
    starts = range(0, n, CHUNK)
    chunk_rngs = rng.spawn(len(starts))  # one stream per chunk: the result does not depend on `workers`
    spare: queue.SimpleQueue[Workspace] = queue.SimpleQueue()

    def paint(i: int) -> None:
        part = slice(starts[i], min(n, starts[i] + CHUNK))
        try:
            workspace = spare.get_nowait()
        except queue.Empty:  # at most one workspace per thread
            workspace = Workspace(min(n, CHUNK), height, width)
        paint_chunk(chunk_rngs[i], u, v, spec.present[part], spec.side[part], anatomy.take(part), place.take(part),
                    masks[part], images[part, 0], workspace)
        spare.put(workspace)

    if workers == 1 or len(starts) == 1:
        for i in range(len(starts)):
            paint(i)
    else:
        with ThreadPoolExecutor(workers) as pool:  # numpy releases the GIL inside its array loops
            list(pool.map(paint, range(len(starts))))
    return XrayBatch(images=images, masks=masks, boxes=masks_to_boxes(masks), spec=spec, anatomy=anatomy)
