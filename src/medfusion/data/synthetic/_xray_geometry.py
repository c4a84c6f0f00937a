"""Codes and shape primitives shared by the X-ray anatomy and painter (see :mod:`.xray`).

Coordinates are normalised: u = (x + 0.5) / W to the image right, v = (y + 0.5) / H down.
Per-patient values (m,) broadcast against the grid as (m, 1, 1).
"""

from __future__ import annotations

import numpy as np

#: Findings, in mask-channel order.
FINDINGS: tuple[str, ...] = ("consolidation", "infiltrates", "effusion", "cardiomegaly", "pneumothorax", "nodule")
CONSOLIDATION, INFILTRATES, EFFUSION, CARDIOMEGALY, PNEUMOTHORAX, NODULE = range(len(FINDINGS))
#: Patient's side codes (patient's right = image left).
NO_SIDE, RIGHT, LEFT, BOTH = -1, 0, 1, 2
SIDE_NAMES = ("right", "left", "both")
#: Zone codes.
NO_ZONE, UPPER, LOWER = -1, 0, 1
ZONE_NAMES = ("upper", "lower")

F32 = np.float32


def col(a: np.ndarray | float) -> np.ndarray:
    """(m,) -> (m, 1, 1) so per-patient values broadcast over (m, H, W); scalars pass through."""
    a = np.asarray(a)
    return a[:, None, None] if a.ndim == 1 else a


def ellipse_rho2(u, v, cx, cy, ax, ay, out: np.ndarray | None = None) -> np.ndarray:
    """(m, H, W) squared normalised radius ((u - cx) / ax)^2 + ((v - cy) / ay)^2; < 1 inside."""
    x = (u - col(cx)) / col(ax)
    y = (v - col(cy)) / col(ay)
    return np.add(x * x, y * y, out=out)


def lung_fields(anat, u, v, k: int, out_rho2: np.ndarray | None = None, out_below: np.ndarray | None = None):
    """Squared normalised radius (m, H, W) of lung ``k``'s ellipse and height above its diaphragm (m, H, W).

    The diaphragm under lung k is the parabola v = dome + (costophrenic - dome) * ((u - cx) / (0.8 ax))^2,
    so it meets the ellipse at its costophrenic angle.
    """
    cx, ax = anat.lung_cx[:, k], anat.lung_ax[:, k]
    rho2 = ellipse_rho2(u, v, cx, anat.lung_cy[:, k], ax, anat.lung_ay[:, k], out=out_rho2)
    lateral = (u - col(cx)) / col(0.8 * ax)
    diaphragm = col(anat.dome[:, k]) + col(anat.costophrenic[:, k] - anat.dome[:, k]) * lateral * lateral
    return rho2, np.subtract(diaphragm, v, out=out_below)


def blob(u, v, cx, cy, ax, ay, amount: float) -> np.ndarray:
    """(m, H, W) separable rounded blob of height ``amount``: a product of two 1-D parabolic bumps."""
    x = (u - col(cx)) / col(ax)
    y = (v - col(cy)) / col(ay)
    return (np.clip(1 - x * x, 0, 1) * F32(amount)) * np.clip(1 - y * y, 0, 1)


def soften(signed: np.ndarray, edge: float) -> np.ndarray:
    """In place: anti-aliased indicator clip(0.5 + signed / edge, 0, 1) of ``signed > 0``."""
    signed *= F32(1.0 / edge)
    signed += F32(0.5)
    return np.clip(signed, 0.0, 1.0, out=signed)
