"""Vectorised H&E-like histology patches with findings placed in named regions, and their masks.

A patch of H x W pixels (default 128 x 128) is split into a 3 x 3 grid of regions named
:data:`REGION_NAMES` ("upper left", "upper middle", ..., "center", ..., "lower right";
row 0 is the top, column 0 the image left). Each region holds one kind of tissue
(:class:`HistologySpec`): stroma, tumour, necrosis, lymphocytes or a normal gland, and
any number of mitotic figures. Everything is drawn on whole (m, H, W) arrays and flat
nucleus lists (no per-pixel or per-patch Python loop).

**Colour model.** Beer-Lambert with two stains: per pixel a haematoxylin amount h and
an eosin amount e give the optical density ``h * HAEMATOXYLIN + e * EOSIN`` and the RGB
value ``exp(-OD)``. Haematoxylin (nuclei) is purple-blue, eosin (cytoplasm, collagen)
pink; where both are 0 the glass is white (gland lumens). Overlapping ordinary nuclei
darken towards h = 1.6; mitotic figures reach h of about 3 (unmixing the colour and
thresholding h > 2 counts them).

| tissue / finding | appearance | mask |
|---|---|---|
| stroma (background) | pink collagen with fibre streaks, sparse elongated fibroblast nuclei | - |
| tumour | irregular area of dense, large pleomorphic nuclei (size, shape, angle and darkness vary), paler cytoplasm | the tumour area |
| mitosis | small, very dark irregular clumps (4 chromatin lumps each), spread around the core of their region's shape (inside the tumour) | discs of radius 3 px (at 128) around each figure |
| necrosis | pale eosinophilic granular debris, no nuclei | the necrotic area |
| lymphocytes | dense aggregate of small, round, dark nuclei | the aggregate |
| gland | a ring of basal nuclei around a white lumen, pale epithelial cytoplasm | lumen + epithelium |

Shapes are sized to stay inside their region: every mask lies inside the region the
spec names. Lengths scale with ``min(H, W) / 128``. About 2-4 ms per 128 x 128 patch on
one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfusion.data.synthetic._fields import _gauss_matrix, image_size, masks_to_boxes, smooth_noise

#: Findings, in mask-channel order.
HISTOLOGY_FINDINGS: tuple[str, ...] = ("tumour", "mitosis", "necrosis", "lymphocytes", "gland")
TUMOUR, MITOSIS, NECROSIS, LYMPHOCYTES, GLAND = range(len(HISTOLOGY_FINDINGS))
#: Tissue codes of a region (:attr:`HistologySpec.tissue`).
STROMA, TUMOUR_TISSUE, NECROSIS_TISSUE, LYMPHOID_TISSUE, GLAND_TISSUE = range(5)
#: Finding shown by each tissue code (stroma shows none).
TISSUE_FINDING = {TUMOUR_TISSUE: TUMOUR, NECROSIS_TISSUE: NECROSIS, LYMPHOID_TISSUE: LYMPHOCYTES,
                  GLAND_TISSUE: GLAND}
#: Grid of regions (rows x columns) and their names, row-major.
GRID = 3
REGION_NAMES: tuple[str, ...] = ("upper left", "upper middle", "upper right", "middle left", "center",
                                 "middle right", "lower left", "lower middle", "lower right")
#: Largest number of mitotic figures per region.
MAX_MITOSES = 8
#: Optical density per unit stain in (R, G, B).
HAEMATOXYLIN = np.array([0.95, 1.05, 0.45], dtype=np.float32)
EOSIN = np.array([0.10, 0.95, 0.45], dtype=np.float32)
#: Patches painted per vectorised chunk.
CHUNK = 128

_F32 = np.float32
# nucleus kinds: (candidates per region, semi-axes range px, haematoxylin range)
_TUMOUR_NUCLEI = (55, (1.6, 3.0), (0.7, 1.2))
_LYMPHOCYTES = (120, (1.3, 1.7), (1.5, 1.9))
_RING = 22  # gland nuclei per ring
_STROMA_NUCLEI = 45  # candidates per patch
_NUCLEAR_CEILING = 1.6  # haematoxylin that overlapping ordinary nuclei approach
_MITOSIS_CEILING = 3.4


@dataclass
class HistologySpec:
    """What to draw for each of N patches.

    Attributes:
        tissue: (N, 9) int8 tissue code per region (:data:`STROMA`, :data:`TUMOUR_TISSUE`,
            :data:`NECROSIS_TISSUE`, :data:`LYMPHOID_TISSUE`, :data:`GLAND_TISSUE`), regions
            in :data:`REGION_NAMES` order.
        mitoses: (N, 9) int8 number of mitotic figures per region, 0..:data:`MAX_MITOSES`;
            allowed only in stroma and tumour regions.

    Raises:
        ValueError: on wrong shapes, unknown tissue codes or mitosis counts out of range.
    """

    tissue: np.ndarray
    mitoses: np.ndarray

    def __post_init__(self) -> None:
        self.tissue = np.asarray(self.tissue)
        self.mitoses = np.asarray(self.mitoses)
        regions = GRID * GRID
        if self.tissue.ndim != 2 or self.tissue.shape[1] != regions:
            raise ValueError(f"histology spec: expected tissue of shape (N, {regions}), received {self.tissue.shape}")
        if self.mitoses.shape != self.tissue.shape:
            raise ValueError(f"histology spec: expected mitoses of shape {self.tissue.shape} like tissue, "
                             f"received {self.mitoses.shape}")
        if not np.isin(self.tissue, range(5)).all():
            raise ValueError(f"histology spec: expected tissue codes 0..4, received "
                             f"{sorted(set(np.unique(self.tissue).tolist()) - set(range(5)))}")
        if (self.mitoses < 0).any() or (self.mitoses > MAX_MITOSES).any():
            raise ValueError(f"histology spec: expected mitoses in [0, {MAX_MITOSES}], received range "
                             f"[{self.mitoses.min()}, {self.mitoses.max()}]")
        if ((self.mitoses > 0) & ~np.isin(self.tissue, (STROMA, TUMOUR_TISSUE))).any():
            raise ValueError("histology spec: expected mitoses only in stroma or tumour regions, received mitoses "
                             "in a necrosis, lymphoid or gland region")
        self.tissue = self.tissue.astype(np.int8)
        self.mitoses = self.mitoses.astype(np.int8)

    def __len__(self) -> int:
        return len(self.tissue)

    @property
    def present(self) -> np.ndarray:
        """(N, F) bool findings in :data:`HISTOLOGY_FINDINGS` order."""
        present = np.zeros((len(self), len(HISTOLOGY_FINDINGS)), dtype=bool)
        for code, finding in TISSUE_FINDING.items():
            present[:, finding] = (self.tissue == code).any(axis=1)
        present[:, MITOSIS] = self.mitoses.sum(axis=1) > 0
        return present

    @property
    def regions(self) -> np.ndarray:
        """(N, F, 9) bool: the regions each finding occupies."""
        out = np.zeros((len(self), len(HISTOLOGY_FINDINGS), GRID * GRID), dtype=bool)
        for code, finding in TISSUE_FINDING.items():
            out[:, finding] = self.tissue == code
        out[:, MITOSIS] = self.mitoses > 0
        return out


@dataclass
class HistologyBatch:
    """Rendered patches and their ground truth.

    Attributes:
        images: (N, 3, H, W) float32 RGB in [0, 1].
        masks: (N, F, H, W) bool per finding of :data:`HISTOLOGY_FINDINGS`.
        boxes: (N, F, 4) int32 ``(x0, y0, x1, y1)`` end-exclusive boxes of the masks, -1 where empty.
        mitosis_centres: (M, 3) float32 rows ``(patch, x, y)`` of every mitotic figure (pixels).
        spec: what was drawn.
    """

    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    mitosis_centres: np.ndarray
    spec: HistologySpec


def region_map(size: int | tuple[int, int] = 128) -> np.ndarray:
    """(H, W) intp: the index in :data:`REGION_NAMES` of the region each pixel belongs to."""
    height, width = image_size(size)
    rows = np.minimum(np.arange(height) * GRID // height, GRID - 1)
    cols = np.minimum(np.arange(width) * GRID // width, GRID - 1)
    return (rows[:, None] * GRID + cols[None, :]).astype(np.intp)


def region_masks(size: int | tuple[int, int] = 128) -> np.ndarray:
    """(9, H, W) bool: the pixels of each region of :data:`REGION_NAMES` (they tile the patch)."""
    return region_map(size)[None] == np.arange(GRID * GRID)[:, None, None]


def _fibres(rng: np.random.Generator, m: int, height: int, width: int) -> np.ndarray:
    """(m, H, W) collagen streaks: noise fine across and smooth along a per-patch direction (rows or columns)."""
    fine, smooth = 40, 6
    z = rng.standard_normal((m, fine, fine), dtype=_F32)
    fine_rows, smooth_cols = _gauss_matrix(height, fine) * 2.2, _gauss_matrix(width, smooth)
    smooth_rows, fine_cols = _gauss_matrix(height, smooth), _gauss_matrix(width, fine) * 2.2
    horizontal = np.matmul(fine_rows, np.matmul(z[:, :, :smooth], smooth_cols.T))
    vertical = np.matmul(smooth_rows, np.matmul(z[:, :smooth, :], fine_cols.T))
    mix = rng.uniform(0, 1, (m, 1, 1)).astype(_F32)
    return np.tanh(mix * horizontal + (1 - mix) * vertical)


def _splat(flat: np.ndarray, patch: np.ndarray, cx: np.ndarray, cy: np.ndarray, ax: np.ndarray, ay: np.ndarray,
           angle: np.ndarray, amount: np.ndarray, grain: np.ndarray | None, height: int, width: int) -> None:
    """Add soft-edged ellipses (one per row of the flat inputs) into ``flat`` (m * H * W,) with one bincount."""
    if len(cx) == 0:
        return
    reach = _reach(ax, ay)
    offsets = np.arange(-reach, reach + 1, dtype=_F32)
    x0, y0 = np.floor(cx), np.floor(cy)
    px = x0[:, None, None] + offsets[None, None, :]  # (K, 1, S)
    py = y0[:, None, None] + offsets[None, :, None]  # (K, S, 1)
    dx, dy = px + 0.5 - cx[:, None, None], py + 0.5 - cy[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (dx * cos + dy * sin) / ax[:, None, None]
    v = (dy * cos - dx * sin) / ay[:, None, None]
    value = np.clip((1 - (u * u + v * v)) * 2.5, 0, 1) * amount[:, None, None]
    if grain is not None:
        value = value * grain
    inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
    index = (patch[:, None, None] * height + np.clip(py, 0, height - 1)) * width + np.clip(px, 0, width - 1)
    flat += np.bincount(index.astype(np.int64).ravel(), weights=np.where(inside, value, 0).ravel(),
                        minlength=flat.size)


def _reach(ax: np.ndarray, ay: np.ndarray) -> int:
    """Half-width in pixels of a stencil holding every ellipse of semi-axes ``ax``, ``ay``."""
    return int(np.ceil(max(float(ax.max()), float(ay.max())) + 0.5))


def _nuclei(rng, flat: np.ndarray, height: int, width: int, patch, cx, cy, ax, ay, angle, amount) -> None:
    """Splat nuclei with a grainy chromatin texture into ``flat`` (m * H * W,)."""
    if len(cx) == 0:
        return
    args = [np.asarray(a, dtype=_F32) for a in (cx, cy, ax, ay, angle, amount)]
    size = 2 * _reach(args[2], args[3]) + 1
    grain = rng.random((len(cx), size, size), dtype=_F32) * _F32(0.4) + _F32(0.8)
    _splat(flat, np.asarray(patch), *args, grain, height, width)


def _uniform_in_ellipse(rng, shape, cx, cy, rx, ry, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform inside the ellipse scaled by ``limit``; per-row centres/axes broadcast over ``shape``."""
    radius = limit * np.sqrt(rng.random(shape))
    theta = rng.uniform(0, 2 * np.pi, shape)
    return cx + radius * rx * np.cos(theta), cy + radius * ry * np.sin(theta)


def _paint_chunk(rng: np.random.Generator, spec: HistologySpec, height: int, width: int,
                 images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Paint m patches into ``images`` (m, 3, H, W) and ``masks`` (m, F, H, W); return mitosis centres (M, 3)."""
    m, n_regions = spec.tissue.shape
    s = min(height, width) / 128.0
    cell_h, cell_w = height / GRID, width / GRID
    cell = region_map((height, width))  # (H, W)
    ys = (np.arange(height, dtype=_F32) + 0.5)[:, None]
    xs = (np.arange(width, dtype=_F32) + 0.5)[None, :]

    # one shape per region: centre, semi-axes (px), irregularity
    jitter = rng.uniform(-0.06, 0.06, (2, m, n_regions))
    region_cx = (((np.arange(n_regions) % GRID) + 0.5 + jitter[0]) * cell_w).astype(_F32)
    region_cy = (((np.arange(n_regions) // GRID) + 0.5 + jitter[1]) * cell_h).astype(_F32)
    rx = (rng.uniform(0.27, 0.34, (m, n_regions)) * cell_w).astype(_F32)
    ry = (rng.uniform(0.27, 0.34, (m, n_regions)) * cell_h).astype(_F32)
    irregular = np.where(spec.tissue == GLAND_TISSUE, 0.0, 0.3).astype(_F32)
    lumen = rng.uniform(0.38, 0.52, (m, n_regions)).astype(_F32)  # lumen radius / gland radius
    x = (xs - region_cx[:, cell]) / rx[:, cell]
    y = (ys - region_cy[:, cell]) / ry[:, cell]
    rho2 = x * x + y * y  # (m, H, W)
    rough = smooth_noise(rng, m, height, width, knots=12)
    area = (rho2 + irregular[:, cell] * rough < 1) & (rho2 < 1.3)
    kind = spec.tissue[:, cell]  # (m, H, W)
    for code, finding in TISSUE_FINDING.items():
        np.logical_and(area, kind == code, out=masks[:, finding])
    in_lumen = masks[:, GLAND] & (rho2 < lumen[:, cell] ** 2)

    # eosin: collagen fibres everywhere, then per tissue; haematoxylin: a faint background
    eosin = _fibres(rng, m, height, width)
    eosin *= _F32(0.13)
    eosin += _F32(0.5)
    grain = rng.random((m, height, width), dtype=_F32) * _F32(3.4) - _F32(1.7)  # uniform, sd about 1
    necrotic = masks[:, NECROSIS]
    for finding, value in ((TUMOUR, 0.34), (LYMPHOCYTES, 0.22), (GLAND, 0.3)):
        np.copyto(eosin, _F32(value), where=masks[:, finding])
    np.copyto(eosin, 0.36 + 0.1 * grain, where=necrotic)  # pale granular debris
    np.copyto(eosin, _F32(0), where=in_lumen)
    haem = np.full((m, height, width), 0.03, dtype=_F32)
    np.copyto(haem, 0.07 + 0.04 * np.abs(grain), where=necrotic)  # faint nuclear dust, no nuclei
    np.copyto(haem, _F32(0), where=in_lumen)
    flat = haem.reshape(-1)

    for code, (count, (a_lo, a_hi), (h_lo, h_hi)) in ((TUMOUR_TISSUE, _TUMOUR_NUCLEI),
                                                      (LYMPHOID_TISSUE, _LYMPHOCYTES)):
        p, r = np.nonzero(spec.tissue == code)
        p, r = np.repeat(p, count), np.repeat(r, count)
        k = len(p)
        cx, cy = _uniform_in_ellipse(rng, k, region_cx[p, r], region_cy[p, r], rx[p, r], ry[p, r], 1.15)
        keep = masks[p, TISSUE_FINDING[code], np.clip(cy.astype(int), 0, height - 1),
                     np.clip(cx.astype(int), 0, width - 1)]
        if code == TUMOUR_TISSUE:  # pleomorphic: size, elongation and darkness vary
            ax, ay = rng.uniform(a_lo, a_hi, (2, k)) * s
        else:  # round
            ax = rng.uniform(a_lo, a_hi, k) * s
            ay = ax * rng.uniform(0.9, 1.0, k)
        _nuclei(rng, flat, height, width, p[keep], cx[keep], cy[keep], ax[keep], ay[keep],
                rng.uniform(0, np.pi, k)[keep], rng.uniform(h_lo, h_hi, k)[keep])

    p, r = np.nonzero(spec.tissue == GLAND_TISSUE)  # basal nuclei on a ring around the lumen
    theta = (np.arange(_RING) / _RING * 2 * np.pi)[None, :] + rng.uniform(0, 2 * np.pi, (len(p), 1))
    ring = ((lumen[p, r] + 1) / 2)[:, None]
    cx = region_cx[p, r][:, None] + ring * rx[p, r][:, None] * np.cos(theta)
    cy = region_cy[p, r][:, None] + ring * ry[p, r][:, None] * np.sin(theta)
    k = cx.size
    _nuclei(rng, flat, height, width, np.repeat(p, _RING), cx.ravel(), cy.ravel(), np.full(k, 2.0 * s),
            np.full(k, 1.15 * s), theta.ravel(), rng.uniform(0.9, 1.15, k))

    k = m * _STROMA_NUCLEI  # sparse fibroblasts, elongated, outside every finding area
    p = np.repeat(np.arange(m), _STROMA_NUCLEI)
    cx, cy = rng.uniform(0, width, k), rng.uniform(0, height, k)
    xi, yi = cx.astype(int), cy.astype(int)
    keep = ~area[p, yi, xi] | (kind[p, yi, xi] == STROMA)
    _nuclei(rng, flat, height, width, p[keep], cx[keep], cy[keep], rng.uniform(2.4, 3.4, k)[keep] * s,
            rng.uniform(0.7, 1.0, k)[keep] * s, rng.uniform(0, np.pi, k)[keep], rng.uniform(0.6, 0.9, k)[keep])

    # overlapping nuclei darken towards a ceiling; mitotic figures sit above it
    np.multiply(np.tanh(flat / _NUCLEAR_CEILING), _NUCLEAR_CEILING, out=flat)

    # mitotic figures: 4 dark lumps each, spread around the core of their region's shape
    p, r = np.nonzero(spec.mitoses > 0)
    counts = spec.mitoses[p, r].astype(np.intp)
    rank = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # figure k of its region
    turn = 2 * np.pi / np.repeat(counts, counts)
    p, r = np.repeat(p, counts), np.repeat(r, counts)
    theta = rng.uniform(0, 2 * np.pi, len(p)) * (rank == 0)  # a random start per region, then even spacing
    theta = np.repeat(theta[rank == 0], counts) + turn * (rank + rng.uniform(-0.2, 0.2, len(p)))
    radius = rng.uniform(0.3, 0.62, len(p))
    fx = (region_cx[p, r] + radius * rx[p, r] * np.cos(theta)).astype(_F32)
    fy = (region_cy[p, r] + radius * ry[p, r] * np.sin(theta)).astype(_F32)
    centres = np.stack([p, fx, fy], axis=1).astype(_F32)
    if len(p):
        lumps = 4
        q = np.repeat(p, lumps)
        shift = (rng.uniform(-1.2, 1.2, (2, len(q))) * s).astype(_F32)
        lump_r = (rng.uniform(0.85, 1.15, len(q)) * s).astype(_F32)
        dark = np.zeros_like(flat)
        _splat(dark, q, np.repeat(fx, lumps) + shift[0], np.repeat(fy, lumps) + shift[1], lump_r, lump_r,
               np.zeros(len(q), _F32), rng.uniform(2.6, 3.2, len(q)).astype(_F32), None, height, width)
        np.maximum(flat, np.tanh(dark / _MITOSIS_CEILING) * _MITOSIS_CEILING, out=flat)
        disc = np.zeros_like(flat)
        ones = np.ones(len(p), _F32)
        _splat(disc, p, fx, fy, ones * _F32(3.0 * s), ones * _F32(3.0 * s), ones * 0, ones, None, height, width)
        masks[:, MITOSIS] = disc.reshape(m, height, width) > 0

    # Beer-Lambert colour, illumination and sensor noise
    light = smooth_noise(rng, m, height, width, knots=3)
    light *= _F32(0.03)
    light += _F32(1)
    noise = rng.random((m, height, width), dtype=_F32)  # luminance noise, uniform, sd 0.012
    noise -= _F32(0.5)
    noise *= _F32(0.042)
    for c in range(3):
        channel = images[:, c]
        np.multiply(haem, -HAEMATOXYLIN[c], out=channel)
        channel -= eosin * EOSIN[c]
        np.exp(channel, out=channel)
        channel *= light
        channel += noise
    np.clip(images, 0, 1, out=images)
    return centres

def render_histology(spec: HistologySpec, rng: np.random.Generator,
                     size: int | tuple[int, int] = 128) -> HistologyBatch:
    """Render N H&E-like patches with the tissue of ``spec``.

    Args:
        spec: tissue and mitoses per region (N rows).
        rng: the random generator (shapes, nuclei, textures, noise).
        size: H = W, or (H, W); at least 64.

    Returns:
        :class:`HistologyBatch` with images (N, 3, H, W) float32 in [0, 1], masks
        (N, F, H, W) bool and boxes (N, F, 4) int32.

    Raises:
        ValueError: on a bad spec or size.

    Examples::

        rng = np.random.default_rng(0)
        spec = HistologySpec(tissue=np.array([[1, 0, 0, 0, 3, 0, 0, 0, 4]]), mitoses=np.array([[4] + [0] * 8]))
        batch = render_histology(spec, rng)
        batch.images.shape  # (1, 3, 128, 128)
    """
    if not isinstance(spec, HistologySpec):
        raise ValueError(f"histology: expected spec to be a HistologySpec, received {type(spec).__name__}")
    height, width = image_size(size, minimum=64)
    n = len(spec)
    images = np.empty((n, 3, height, width), dtype=_F32)
    masks = np.zeros((n, len(HISTOLOGY_FINDINGS), height, width), dtype=bool)
    starts = range(0, n, CHUNK)
    centres = []
    for start, chunk_rng in zip(starts, rng.spawn(len(starts))):
        part = slice(start, min(n, start + CHUNK))
        found = _paint_chunk(chunk_rng, HistologySpec(spec.tissue[part], spec.mitoses[part]), height, width,
                             images[part], masks[part])
        found[:, 0] += start
        centres.append(found)
    return HistologyBatch(images=images, masks=masks, boxes=masks_to_boxes(masks),
                          mitosis_centres=np.concatenate(centres) if centres else np.zeros((0, 3), _F32), spec=spec)
