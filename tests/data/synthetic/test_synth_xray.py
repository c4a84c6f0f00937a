"""Synthetic chest X-ray renderer: shapes, determinism, findings inside their named regions."""

from __future__ import annotations

import numpy as np
import pytest

from medfusion.data.synthetic import (
    BOTH, FINDINGS, LEFT, LOWER, RIGHT, UPPER, XraySpec, masks_to_boxes, random_anatomy, render_xrays,
)

SIZE = 128
F = {name: j for j, name in enumerate(FINDINGS)}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(7)
    spec = XraySpec.random(rng, 320, {name: 0.35 for name in FINDINGS})
    return render_xrays(spec, rng, SIZE)


@pytest.fixture(scope="module")
def anatomy_masks(batch):
    return batch.anatomy.masks(SIZE)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def test_shapes_dtypes_ranges(batch):
    n = len(batch.spec)
    assert batch.images.shape == (n, 1, SIZE, SIZE) and batch.images.dtype == np.float32
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    assert batch.masks.shape == (n, len(FINDINGS), SIZE, SIZE) and batch.masks.dtype == bool
    assert batch.boxes.shape == (n, len(FINDINGS), 4) and batch.boxes.dtype == np.int32


def test_every_present_finding_has_a_mask_and_box(batch):
    nonempty = batch.masks.any(axis=(2, 3))
    np.testing.assert_array_equal(nonempty, batch.spec.present)
    np.testing.assert_array_equal(batch.boxes[~batch.spec.present], -1)
    np.testing.assert_array_equal(batch.boxes, masks_to_boxes(batch.masks))
    i, f = np.argwhere(batch.spec.present)[0]
    x0, y0, x1, y1 = batch.boxes[i, f]
    mask = batch.masks[i, f]
    assert mask[y0:y1, x0:x1].sum() == mask.sum() and mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()


def test_deterministic_for_a_seed():
    def render(seed):
        rng = np.random.default_rng(seed)
        return render_xrays(XraySpec.random(rng, 12), rng, 64)

    a, b, c = render(3), render(3), render(4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)


def test_threads_do_not_change_the_images():
    def render(workers):
        rng = np.random.default_rng(11)
        return render_xrays(XraySpec.random(rng, 600), rng, 48, workers=workers)

    one, three = render(1), render(3)
    np.testing.assert_array_equal(one.images, three.images)
    np.testing.assert_array_equal(one.masks, three.masks)
    with pytest.raises(ValueError, match="workers"):
        render(0)


@pytest.mark.parametrize("name", ["consolidation", "nodule"])
def test_zoned_findings_lie_in_their_side_and_zone(batch, anatomy_masks, name):
    lungs, _ = anatomy_masks
    f = F[name]
    rows = np.flatnonzero(batch.spec.present[:, f])
    assert rows.size > 50
    for i in rows:
        side, zone = batch.spec.side[i, f], batch.spec.zone[i, f]
        mask = batch.masks[i, f]
        assert not (mask & ~lungs[i, side]).any()  # inside the named lung
        x, y = centroid(mask)
        midline = batch.anatomy.midline[i] * SIZE
        # radiological convention: patient's right = image left
        assert (x < midline) if side == RIGHT else (x > midline)
        split = batch.anatomy.zone_split[i, side] * SIZE
        assert (y < split) if zone == UPPER else (y > split)


def test_right_lower_consolidation_is_image_left_lower_half(batch):
    f = F["consolidation"]
    rows = np.flatnonzero(batch.spec.present[:, f] & (batch.spec.side[:, f] == RIGHT) & (batch.spec.zone[:, f] == LOWER))
    assert rows.size > 10
    for i in rows:
        x, y = centroid(batch.masks[i, f])
        assert x < SIZE / 2 and y > SIZE / 2 - 8  # lower zone of the lung starts just above mid-image


def test_pneumothorax_is_apical_and_on_its_side(batch, anatomy_masks):
    lungs, _ = anatomy_masks
    f = F["pneumothorax"]
    for i in np.flatnonzero(batch.spec.present[:, f]):
        side = batch.spec.side[i, f]
        mask = batch.masks[i, f]
        assert not (mask & ~lungs[i, side]).any()
        x, y = centroid(mask)
        assert y < batch.anatomy.zone_split[i, side] * SIZE
        assert (x < batch.anatomy.midline[i] * SIZE) if side == RIGHT else (x > batch.anatomy.midline[i] * SIZE)


def test_effusion_blunts_the_costophrenic_angle(batch, anatomy_masks):
    lungs, _ = anatomy_masks
    f = F["effusion"]
    rows = np.flatnonzero(batch.spec.present[:, f])
    assert rows.size > 50
    for i in rows:
        mask = batch.masks[i, f]
        sides = (RIGHT, LEFT) if batch.spec.side[i, f] == BOTH else (batch.spec.side[i, f],)
        for k in (RIGHT, LEFT):
            part = mask & lungs[i, k]
            if k not in sides:
                assert not part.any()
                continue
            base_row = np.flatnonzero(lungs[i, k].any(axis=1)).max()  # lowest lung row: the costophrenic angle
            assert mask[base_row][lungs[i, k, base_row]].all()
            assert centroid(part)[1] > batch.anatomy.zone_split[i, k] * SIZE


def test_infiltrates_are_bilateral(batch, anatomy_masks):
    lungs, _ = anatomy_masks
    f = F["infiltrates"]
    for i in np.flatnonzero(batch.spec.present[:, f]):
        assert (batch.masks[i, f] & lungs[i, RIGHT]).any() and (batch.masks[i, f] & lungs[i, LEFT]).any()


def test_cardiothoracic_ratio_measured_on_masks(batch, anatomy_masks):
    lungs, heart = anatomy_masks
    heart_width = heart.sum(axis=2).max(axis=1)
    cols = (lungs[:, 0] | lungs[:, 1]).any(axis=1)  # (N, W)
    first = cols.argmax(axis=1)
    last = SIZE - 1 - cols[:, ::-1].argmax(axis=1)
    ctr = heart_width / (last - first + 1)
    enlarged = batch.spec.present[:, F["cardiomegaly"]]
    assert enlarged.any() and (~enlarged).any()
    assert (ctr[enlarged] > 0.5).all() and (ctr[~enlarged] < 0.5).all()
    np.testing.assert_allclose(ctr, batch.spec.ctr, atol=0.03)
    np.testing.assert_array_equal(batch.masks[enlarged, F["cardiomegaly"]], heart[enlarged])


def test_masks_mark_where_the_image_changes(batch):
    """Rendering the same anatomy without the findings: opacities darker, pneumothorax brighter."""
    rows = np.arange(120)
    spec = batch.spec
    only_heart = np.zeros_like(spec.present[rows])
    only_heart[:, F["cardiomegaly"]] = spec.present[rows, F["cardiomegaly"]]
    clear = XraySpec(only_heart, spec.side[rows], spec.zone[rows], spec.ctr[rows])
    base = render_xrays(clear, np.random.default_rng(0), SIZE, anatomy=batch.anatomy.take(rows)).images[:, 0]
    for name, sign in (("consolidation", 1), ("infiltrates", 1), ("effusion", 1), ("nodule", 1),
                       ("pneumothorax", -1)):
        f = F[name]
        diffs = [
            (batch.images[i, 0][batch.masks[i, f]] - base[i][batch.masks[i, f]]).mean()
            for i in rows if spec.present[i, f]
        ]
        assert len(diffs) > 10
        assert sign * np.median(diffs) > 0.015, name


def test_spec_validation():
    n = 3
    present = np.zeros((n, len(FINDINGS)), bool)
    side = np.full((n, len(FINDINGS)), -1)
    zone = np.full((n, len(FINDINGS)), -1)
    ctr = np.full(n, 0.45)
    present[0, F["consolidation"]] = True
    with pytest.raises(ValueError, match="consolidation expects side"):
        XraySpec(present, side, zone, ctr)
    side[0, F["consolidation"]], zone[0, F["consolidation"]] = RIGHT, LOWER
    XraySpec(present, side, zone, ctr)
    with pytest.raises(ValueError, match="cardiomegaly present exactly where ctr > 0.5"):
        XraySpec(present, side, zone, np.array([0.6, 0.45, 0.45]))
    with pytest.raises(ValueError, match="expected present of shape"):
        XraySpec(present[:, :3], side, zone, ctr)
    with pytest.raises(ValueError, match="unknown finding"):
        XraySpec.random(np.random.default_rng(0), 2, {"fracture": 0.1})
    with pytest.raises(ValueError, match="expected size"):
        render_xrays(XraySpec(present, side, zone, ctr), np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="anatomy"):
        rng = np.random.default_rng(0)
        render_xrays(XraySpec(present, side, zone, ctr), rng, 64, anatomy=random_anatomy(rng, np.full(2, 0.45)))
