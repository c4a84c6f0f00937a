"""Paint one chunk of chest radiographs (the inner loop of :func:`.xray.render_xrays`).

Everything runs on whole (m, H, W) arrays. The full-size work arrays are allocated once
per render call (:class:`Workspace`) and reused chunk after chunk with in-place
arithmetic: fresh 16 MB temporaries per operation cost more in page faults than the
arithmetic itself.

Intensity model (additive, then exposure and noise, clipped to [0, 1]): background 0.04;
soft tissue +0.48 inside the body outline; lung air -0.36 (less behind the heart);
heart +0.06; vascular markings +0.085; ribs +0.1; clavicles +0.16; spine +0.05; trachea
-0.1; aortic knob +0.08; gastric bubble -0.12. Findings: consolidation up to +0.5,
infiltrates up to +0.28, effusion +0.36 (fluid replaces the lung air), nodule +0.3,
pneumothorax -0.07 with the markings removed and a +0.12 pleural line.
"""

from __future__ import annotations

import numpy as np

from medfusion.data.synthetic._fields import smooth_noise
from medfusion.data.synthetic._xray_geometry import (
    BOTH, CARDIOMEGALY, CONSOLIDATION, EFFUSION, F32, INFILTRATES, LEFT, NODULE, PNEUMOTHORAX, RIGHT, blob, col,
    ellipse_rho2, lung_fields, soften,
)


class Workspace:
    """Reusable full-size buffers for chunks of up to ``m`` patients of H x W pixels."""

    def __init__(self, m: int, height: int, width: int) -> None:
        shape = (m, height, width)
        self.lung_soft = np.empty((2, *shape), dtype=F32)
        self.lung_hard = np.empty((2, *shape), dtype=bool)
        self.rho2 = np.empty((2, *shape), dtype=F32)
        self.visible, self.heart, self.behind, self.markings, self.tmp, self.tmp2, self.noise = (
            np.empty(shape, dtype=F32) for _ in range(7)
        )
        self.flag = np.empty(shape, dtype=bool)

    def views(self, m: int) -> dict[str, np.ndarray]:
        """The buffers cut to the first ``m`` patients."""
        return {name: (a[:, :m] if name in ("lung_soft", "lung_hard", "rho2") else a[:m])
                for name, a in vars(self).items()}


def _rows_band(v: np.ndarray, low: np.ndarray, high: np.ndarray) -> slice:
    """Row slice covering v in [min(low), max(high)] for every patient of the chunk."""
    height = v.shape[1]
    start = int(np.clip(np.floor(low.min() * height), 0, height))
    stop = int(np.clip(np.ceil(high.max() * height) + 1, start, height))
    return slice(start, stop)


def _pick_side(k: np.ndarray, right: np.ndarray, left: np.ndarray) -> np.ndarray:
    return np.where(col(k == RIGHT), right, left)


def paint_chunk(rng, u, v, present, side, anat, place, masks: np.ndarray, img: np.ndarray, ws: Workspace) -> None:
    """Paint m patients into ``img`` (m, H, W) and their finding masks into ``masks`` (m, F, H, W).

    Args:
        rng: the random generator (textures, noise).
        u, v: the grid, (1, 1, W) and (1, H, 1).
        present, side: (m, F) finding flags and sides.
        anat: the chunk's :class:`~.xray.Anatomy`; place: its finding placements.
        masks: (m, F, H, W) bool, filled in place (all False on entry).
        img: (m, H, W) float32 output view.
        ws: work buffers for at least m patients.
    """
    m, height, width = img.shape
    b = ws.views(m)
    tmp, tmp2, heart, behind, visible = b["tmp"], b["tmp2"], b["heart"], b["behind"], b["visible"]
    lung_soft, lung_hard, lung_rho2 = b["lung_soft"], b["lung_hard"], b["rho2"]
    px = 1.0 / min(height, width)  # one pixel in normalised units
    s = col(anat.scale)
    dist = np.abs(u - col(anat.midline))  # (m, 1, W) distance from the midline

    # body outline: neck widening to the shoulders, then the torso
    half_body = 0.1 + (0.46 * s - 0.1) * np.sqrt(np.clip(v / 0.16, 0, 1))
    np.subtract(half_body, dist, out=tmp)
    np.multiply(soften(tmp, 2 * px), 0.48, out=img)
    img += 0.04

    # lungs (soft and hard), diaphragm below
    for k in (RIGHT, LEFT):
        rho2, below = lung_fields(anat, u, v, k, out_rho2=lung_rho2[k], out_below=tmp)
        np.less(rho2, 1, out=lung_hard[k])
        lung_hard[k] &= np.greater(below, 0, out=b["flag"])
        edge = 2.4 * px / float(anat.lung_ax[:, k].mean())
        np.multiply(rho2, -1 / edge, out=lung_soft[k])
        lung_soft[k] += 1 / edge + 0.5
        np.clip(lung_soft[k], 0, 1, out=lung_soft[k])
        lung_soft[k] *= soften(below, 1.5 * px)
    np.add(lung_soft[RIGHT], lung_soft[LEFT], out=visible)

    # heart; behind it the lung shows less
    ellipse_rho2(u, v, anat.heart_cx, anat.heart_cy, anat.heart_ax, anat.heart_ay, out=tmp)
    rows = np.flatnonzero(present[:, CARDIOMEGALY])
    masks[rows, CARDIOMEGALY] = tmp[rows] < 1
    edge = 2.4 * px / 0.17
    np.multiply(tmp, -1 / edge, out=heart)
    heart += 1 / edge + 0.5
    np.clip(heart, 0, 1, out=heart)
    np.multiply(heart, -0.85, out=behind)
    behind += 1
    visible *= behind  # lung air that shows

    # vascular markings: ridges of a smooth field, fading away from the hila
    markings = smooth_noise(rng, m, height, width, 22, out=b["markings"])
    markings *= markings
    markings *= F32(-1 / 0.08)
    np.exp(markings, out=markings)
    markings *= np.clip(1.25 - dist / 0.3, 0.15, 1.0)

    # pneumothorax: lucent apical-lateral rim without markings, visceral pleural line
    rows = np.flatnonzero(present[:, PNEUMOTHORAX])
    if rows.size:
        k = side[rows, PNEUMOTHORAX].astype(np.intp)
        soft = _pick_side(k, lung_soft[RIGHT][rows], lung_soft[LEFT][rows])
        x = (u - col(anat.lung_cx[rows, k])) / col(anat.lung_ax[rows, k])
        y = (v - col(anat.lung_cy[rows, k])) / col(anat.lung_ay[rows, k])
        phi = np.arctan2(np.where(col(k == RIGHT), -x, x), -y)  # 0 = apex, pi/2 = lateral chest wall
        t = (phi - col(place.ptx_angle[rows])) / F32(0.95)
        w = col(place.ptx_width[rows]) * np.clip(1 - t * t, 0, 1)
        collapse = np.sqrt(_pick_side(k, lung_rho2[RIGHT][rows], lung_rho2[LEFT][rows])) - (1 - w)
        hard = _pick_side(k, lung_hard[RIGHT][rows], lung_hard[LEFT][rows])
        masks[rows, PNEUMOTHORAX] = hard & (collapse > 0) & (w > 0.015)
        rim = soft * soften(collapse.copy(), 0.03) * (w > 0.015)
        markings[rows] *= 1 - rim
        line = soft * np.clip(1 - np.abs(collapse) / F32(0.02), 0, 1) * (w > 0.03)
        img[rows] += 0.12 * line - 0.07 * rim

    img -= np.multiply(visible, 0.36, out=tmp)
    img += np.multiply(heart, 0.06, out=tmp)
    markings *= visible
    markings *= 0.085
    img += markings

    # ribs: periodic curved bands hanging from the spine
    spacing = col(anat.rib_spacing)
    t = np.subtract(v / spacing, (col(anat.rib_start) + col(anat.rib_curve) * dist * dist) / spacing, out=tmp)
    np.clip(t, 0, 10, out=t)  # ten ribs; outside them t is a whole number, where the band is 0
    t -= np.floor(t, out=tmp2)
    t -= 0.5
    np.abs(t, out=t)
    t *= -3.3
    t += 1
    np.maximum(t, 0, out=t)
    t *= 0.1 * ((dist > 0.03) & (dist < 0.4 * s))
    img += t
    # clavicles: oblique bands from the manubrium up and out
    band = np.subtract(v, col(anat.rib_start + 0.025) - 0.22 * (dist - 0.03), out=tmp)
    np.abs(band, out=band)
    band *= -1 / 0.016
    band += 1
    np.maximum(band, 0, out=band)
    band *= 0.16 * ((dist > 0.03) & (dist < 0.31 * s))
    img += band
    # spine, trachea, aortic knob, gastric bubble (the small ones painted on their rows only)
    img += 0.05 * soften(0.035 - dist, 2 * px)
    top = _rows_band(v, np.zeros(1), np.full(1, 0.35))
    img[:, top] -= (0.1 * soften(0.016 - dist, px)) * soften(0.33 - v[:, top], 2 * px)
    cy, r = anat.apex[:, 1] + 0.17, 0.034 * anat.scale
    rows_knob = _rows_band(v, cy - r, cy + r)
    img[:, rows_knob] += blob(u, v[:, rows_knob], anat.midline + 0.06 * anat.scale, cy, r, r, 0.08)
    cy, ry = anat.dome[:, 1] + 0.06, 0.025 * anat.scale
    rows_bubble = _rows_band(v, cy - ry, cy + ry)
    img[:, rows_bubble] += blob(u, v[:, rows_bubble], anat.lung_cx[:, 1] + 0.02, cy, 0.045 * anat.scale, ry, -0.12)

    # consolidation: blotchy opacity inside one lung zone
    rows = np.flatnonzero(present[:, CONSOLIDATION])
    if rows.size:
        k = side[rows, CONSOLIDATION]
        rho2 = ellipse_rho2(u, v, place.cons_u[rows], place.cons_v[rows], place.cons_rx[rows], place.cons_ry[rows])
        blotch = np.clip(0.5 + 0.3 * smooth_noise(rng, rows.size, height, width, 10), 0, 1)
        density = np.clip(1 - rho2, 0, 1) * (0.45 + 0.55 * blotch)
        masks[rows, CONSOLIDATION] = _pick_side(k, lung_hard[RIGHT][rows], lung_hard[LEFT][rows]) & (density > 0.22)
        img[rows] += 0.5 * density * _pick_side(k, lung_soft[RIGHT][rows], lung_soft[LEFT][rows]) * behind[rows]

    # bilateral infiltrates: patchy opacities around both hila and towards the bases
    rows = np.flatnonzero(present[:, INFILTRATES])
    if rows.size:
        sub = anat.take(rows)
        base = np.zeros((rows.size, height, width), dtype=F32)
        for k, sign in ((RIGHT, 1.0), (LEFT, -1.0)):
            hilum_u = sub.lung_cx[:, k] + sign * 0.35 * sub.lung_ax[:, k]
            base = np.maximum(base, np.exp(-ellipse_rho2(u, v, hilum_u, sub.lung_cy[:, k] - 0.04, 0.15, 0.22)))
        base *= np.clip((v - col(sub.apex[:, 0])) / 0.45, 0.3, 1.0)
        blotch = np.clip(0.5 + 0.35 * smooth_noise(rng, rows.size, height, width, 14), 0, 1)
        density = base * (0.4 + 0.6 * blotch)
        masks[rows, INFILTRATES] = (lung_hard[RIGHT][rows] | lung_hard[LEFT][rows]) & (density > 0.3)
        img[rows] += 0.28 * density * visible[rows]

    # pleural effusion: fluid below a meniscus that climbs the lateral chest wall
    for k in (RIGHT, LEFT):
        rows = np.flatnonzero(present[:, EFFUSION] & np.isin(side[:, EFFUSION], [k, BOTH]))
        if not rows.size:
            continue
        cx, ax = anat.lung_cx[rows, k], anat.lung_ax[rows, k]
        lateral = np.clip((u - col(cx)) / col(ax) * (-1.0 if k == RIGHT else 1.0), 0, 1)
        meniscus = col(anat.costophrenic[rows, k] - place.eff_height[rows]) - 0.07 * lateral * lateral
        depth = v - meniscus
        masks[rows, EFFUSION] |= lung_hard[k][rows] & (depth > 0)
        img[rows] += 0.36 * lung_soft[k][rows] * behind[rows] * soften(depth, 0.025)

    # nodule: small round opacity
    rows = np.flatnonzero(present[:, NODULE])
    if rows.size:
        k = side[rows, NODULE]
        r = place.nod_r[rows]
        rho2 = ellipse_rho2(u, v, place.nod_u[rows], place.nod_v[rows], r, r)
        masks[rows, NODULE] = _pick_side(k, lung_hard[RIGHT][rows], lung_hard[LEFT][rows]) & (rho2 < 1)
        img[rows] += 0.3 * soften(1 - rho2, 2 * px / float(r.mean())) * (0.4 + 0.6 * behind[rows])

    # exposure and quantum noise (uniform, sd 0.012: cheaper to draw than normal)
    img *= col(anat.contrast)
    img += col(0.35 * (1 - anat.contrast) + anat.brightness)
    noise = rng.random(dtype=F32, out=b["noise"])
    noise -= 0.5
    noise *= F32(0.012 * np.sqrt(12))
    img += noise
    np.clip(img, 0.0, 1.0, out=img)
