"""The neuro cohort (EEG + note): determinism, planted EEG properties, label design, notes, files on disk."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.signal import welch

from medfusion.data.datasets import ManifestDataset
from medfusion.data.io import read_any, read_edf
from medfusion.data.synthetic.eeg import (
    EEG_CHANNELS, EVENT_KINDS, HEMISPHERE, SLOT_KIND, TEMPORAL, EEGSpec, render_eeg,
)
from medfusion.data.synthetic.neuro import NeuroCohort, generate_neuro, load_neuro_events, write_neuro_cohort

N = 1000
RATE = 128
RIGHT_WORDS = re.compile(r"\b(R|right|Right)\b")
LEFT_WORDS = re.compile(r"\b(L|left|Left)\b")
SEMIOLOGY = re.compile(r"\+tongue biting|GTC|[Uu]rinary incontinence|[Ss]taring spells|[Rr]hythmic jerking")
POSTICTAL = re.compile(r"Post-ictal confusion x|Confused and drowsy|\+post-ictal confusion")
O1, O2, FP1, FP2 = (EEG_CHANNELS.index(name) for name in ("O1", "O2", "Fp1", "Fp2"))


@pytest.fixture(scope="module")
def cohort() -> NeuroCohort:
    return generate_neuro(N, seed=0, label_noise=0.1, missing={"signal": 0.2, "text": 0.1})


def note_side(text: str) -> int:
    right, left = bool(RIGHT_WORDS.search(text)), bool(LEFT_WORDS.search(text))
    return 0 if right and not left else 1 if left and not right else -1


def band_power(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Welch band power over the last axis (nperseg 2 s: 0.5 Hz bins)."""
    f, p = welch(x, fs=RATE, nperseg=min(256, x.shape[-1]), axis=-1)
    return p[..., (f >= low) & (f <= high)].sum(axis=-1)


@pytest.fixture(scope="module")
def power3(cohort) -> np.ndarray:
    """(N, C) Welch 2.5-3.5 Hz power of every recording and channel."""
    return band_power(cohort.eeg, 2.5, 3.5)


@pytest.fixture(scope="module")
def eeg_side(power3) -> np.ndarray:
    """(N,) side read from the EEG alone: hemisphere with more 2.5-3.5 Hz power (0 right, 1 left)."""
    return (power3[:, HEMISPHERE[1]].mean(axis=1) > power3[:, HEMISPHERE[0]].mean(axis=1)).astype(int)


def test_shapes_dtypes_ids_and_frame(cohort):
    assert len(cohort) == N
    assert cohort.eeg.shape == (N, 19, 20 * RATE) and cohort.eeg.dtype == np.float32
    assert np.isfinite(cohort.eeg).all() and 5 < cohort.eeg.std() < 80
    assert cohort.sampling_rate == RATE and cohort.channel_names == EEG_CHANNELS and len(EEG_CHANNELS) == 19
    assert cohort.patient_id[0] == "SYN-000001" and len(set(cohort.patient_id.tolist())) == N
    assert all(re.fullmatch(r"SYN-\d{6}", p) for p in cohort.patient_id)
    assert cohort.seizure.dtype == np.int64 and set(np.unique(cohort.seizure)) == {0, 1}
    frame = cohort.to_frame()
    assert len(frame) == N and {"patient_id", "split", "seizure", "has_signal", "has_text", "note"} <= set(frame)
    assert "prevalence" in cohort.ground_truth
    masks = cohort.masks(slice(0, 5))
    assert masks.shape == (5, len(EVENT_KINDS), 19, 20 * RATE) and masks.dtype == bool
    short = generate_neuro(4, seed=1, sampling_rate=256, duration_s=12)
    assert short.eeg.shape == (4, 19, 12 * 256)


def test_same_seed_identical_other_seed_differs():
    a, b, c = (generate_neuro(40, seed=s, duration_s=10) for s in (5, 5, 6))
    for name in ("eeg", "seizure", "split", "patient_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.notes == b.notes and a.ground_truth == b.ground_truth
    assert a.events_frame().equals(b.events_frame())
    assert not np.array_equal(a.eeg, c.eeg) and a.notes != c.notes
    np.testing.assert_array_equal(generate_neuro(40, seed=5, duration_s=10, workers=1).eeg, a.eeg)


def test_changing_missingness_and_noise_leaves_content_unchanged():
    a = generate_neuro(80, seed=3, duration_s=10)
    b = generate_neuro(80, seed=3, duration_s=10, missing={}, label_noise=0.0)
    keep = a.present["signal"]
    np.testing.assert_array_equal(a.eeg[keep], b.eeg[keep])
    np.testing.assert_array_equal(a.seizure_true, b.seizure_true)
    np.testing.assert_array_equal(b.seizure, b.seizure_true)
    assert all(b.present[m].all() for m in b.present)


def test_label_is_the_documented_rule(cohort):
    c = cohort.components
    rule = c["discharge"] & (c["postictal"] | c["semiology"]) & (
        ~c["side_named"] | (c["discharge_side"] == 2) | (c["note_side"] == c["discharge_side"]))
    np.testing.assert_array_equal(cohort.seizure_true, rule.astype(np.int64))
    assert 0.19 < cohort.seizure_true.mean() < 0.29
    assert 0.11 < c["agreement_case"].mean() < 0.2
    assert 0.4 < cohort.seizure_true[c["agreement_case"]].mean() < 0.65
    assert 0.22 < c["generalised"][c["discharge"]].mean() < 0.38


def test_label_noise_missingness_and_markers(cohort):
    n = len(cohort)
    flipped = cohort.seizure != cohort.seizure_true
    np.testing.assert_array_equal(flipped, cohort.label_flipped)
    assert abs(flipped.mean() - 0.1) < 3 * np.sqrt(0.09 / n)
    assert abs((~cohort.present["signal"]).mean() - 0.2) < 3 * np.sqrt(0.16 / n)
    # text is forced present where the EEG is absent: P(absent) = 0.1 * 0.8
    assert abs((~cohort.present["text"]).mean() - 0.08) < 3 * np.sqrt(0.08 * 0.92 / n)
    assert (cohort.present["signal"] | cohort.present["text"]).all()
    assert (cohort.eeg[~cohort.present["signal"]] == 0).all()
    assert all((t == "") != keep for t, keep in zip(cohort.notes, cohort.present["text"]))


def test_splits_patient_level_and_stratified(cohort):
    ids = {name: set(cohort.patient_id[cohort.split == name].tolist()) for name in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == N
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = cohort.split == name
        assert abs(part.mean() - share) < 0.01
        assert abs(cohort.seizure[part].mean() - cohort.seizure.mean()) < 0.015


def test_three_hertz_power_is_in_the_discharge_channels_and_window(cohort, power3):
    """Welch 2.5-3.5 Hz power inside the planted window/channels vs the same channels outside it and vs the
    other channels (focal) during it; recordings without a discharge have no 3 Hz excess."""
    c, ev, x = cohort.components, cohort.events, cohort.eeg
    seen = cohort.present["signal"]
    inside_vs_outside, inside_vs_other = [], []
    for i in np.flatnonzero(c["discharge"] & seen):
        channels, start, end = ev.channels[i, 0], ev.onset[i, 0], ev.end[i, 0]
        side = c["discharge_side"][i]
        assert (channels == (HEMISPHERE[side] if side < 2 else True)).all()
        inside = band_power(x[i][channels, start:end], 2.5, 3.5).mean()
        outside = x[i][channels, :start] if start >= x.shape[-1] - end else x[i][channels, end:]
        inside_vs_outside.append(inside / band_power(outside[:, : end - start], 2.5, 3.5).mean())
        if not channels.all():
            inside_vs_other.append(inside / band_power(x[i][~channels, start:end], 2.5, 3.5).mean())
    assert np.median(inside_vs_outside) > 20 and np.percentile(inside_vs_outside, 5) > 3
    assert np.median(inside_vs_other) > 20 and np.percentile(inside_vs_other, 5) > 3
    whole = power3.mean(axis=1)
    assert np.median(whole[c["discharge"] & seen]) > 10 * np.median(whole[~c["discharge"] & seen])
    spike = c["spike_wave_hz"]
    assert np.isnan(spike[~c["discharge"]]).all()
    assert ((spike[c["discharge"]] >= 2.8) & (spike[c["discharge"]] <= 3.2)).all()


def test_discharge_masks_match_components(cohort):
    c = cohort.components
    rows = np.flatnonzero(c["discharge"])[:40]
    masks = cohort.masks(rows)[:, EVENT_KINDS.index("discharge")]
    for mask, i in zip(masks, rows):
        when = np.flatnonzero(mask.any(axis=0))
        assert abs(when[0] / RATE - c["discharge_onset_s"][i]) < 1e-6
        assert abs((when[-1] + 1 - when[0]) / RATE - c["discharge_duration_s"][i]) < 1e-6
        assert (mask[mask.any(axis=1)] == mask.any(axis=0)).all()  # one window on every discharge channel
    assert not cohort.masks(np.flatnonzero(~c["discharge"])[:10])[:, 0].any()


def test_alpha_is_posterior_and_postictal_slowing_shows(cohort):
    c = cohort.components
    calm = ~c["discharge"] & cohort.present["signal"]
    alpha = band_power(cohort.eeg[calm][:, [O1, O2, FP1, FP2]], 8, 12)
    assert np.median(alpha[:, :2].mean(1) / alpha[:, 2:].mean(1)) > 2.5
    post = c["postictal"][calm]
    occipital = alpha[:, :2].mean(1)
    assert np.median(occipital[post]) < 0.4 * np.median(occipital[~post])
    delta = band_power(cohort.eeg[calm], 0.75, 2.25).mean(axis=1)
    assert np.median(delta[post]) > 3 * np.median(delta[~post])


def test_artefacts_are_where_the_events_say(cohort):
    ev, x = cohort.events, cohort.eeg
    rows, slots = np.nonzero(ev.active & cohort.present["signal"][:, None])
    kinds = SLOT_KIND[slots]
    # blinks: Fp1/Fp2 rise at the blink's middle; O1 does not
    b = kinds == 1
    mid = (ev.onset[rows[b], slots[b]] + ev.end[rows[b], slots[b]]) // 2
    before = np.maximum(ev.onset[rows[b], slots[b]] - 1, 0)
    rise_fp = x[rows[b], FP1, mid] - x[rows[b], FP1, before]
    rise_o = x[rows[b], O1, mid] - x[rows[b], O1, before]
    assert np.median(rise_fp) > 50 and np.median(np.abs(rise_o)) < 30
    # muscle: 20-60 Hz power on the burst's temporal channels during the burst >> the opposite side
    ratios = []
    for i, k in zip(rows[kinds == 2], slots[kinds == 2]):
        chans = ev.channels[i, k]
        other = TEMPORAL[0] if (chans == TEMPORAL[1]).all() else TEMPORAL[1]
        if (ev.channels[i][SLOT_KIND == 2][:, other]).any() or ev.end[i, k] - ev.onset[i, k] < 96:
            continue  # the other side has a burst too, or too short for Welch
        seg = x[i][:, ev.onset[i, k]:ev.end[i, k]]
        ratios.append(band_power(seg[chans], 20, 60).mean() / band_power(seg[other], 20, 60).mean())
    assert len(ratios) > 50 and np.median(ratios) > 20
    # electrode pops: a step of >= 100 uV on the planted channel at its onset
    p = np.flatnonzero(kinds == 3)
    chan = ev.channels[rows[p], slots[p]].argmax(axis=1)
    on = ev.onset[rows[p], slots[p]]
    jump = np.abs(x[rows[p], chan, np.minimum(on + 1, x.shape[-1] - 1)] - x[rows[p], chan, np.maximum(on - 2, 0)])
    assert np.median(jump) > 100
    assert (ev.channels[rows[p], slots[p]].sum(axis=1) == 1).all()


def test_events_frame_matches_masks(cohort):
    frame = cohort.events_frame()
    assert set(frame["kind"]) == set(EVENT_KINDS)
    masks = cohort.masks(slice(0, 30))
    for row in frame[frame["patient_id"].isin(cohort.patient_id[:30])].itertuples():
        i = int(np.flatnonzero(cohort.patient_id == row.patient_id)[0])
        k = EVENT_KINDS.index(row.kind)
        chans = [EEG_CHANNELS.index(name) for name in row.channels.split()]
        assert masks[i, k][chans, row.onset_sample:row.end_sample].all()
        assert abs(row.onset_s * RATE - row.onset_sample) < 1e-6


def test_notes_state_the_planted_facts(cohort):
    c = cohort.components
    for i in np.flatnonzero(cohort.present["text"]):
        text = cohort.notes[i]
        assert note_side(text) == c["note_side"][i], text
        assert bool(POSTICTAL.search(text)) == bool(c["postictal"][i]), text
        assert bool(SEMIOLOGY.search(text)) == bool(c["semiology"][i]), text
        if re.search(r"No tongue biting|Denies tongue biting", text):
            assert not c["semiology"][i], text
    joined = " ".join(cohort.notes)
    for word in ("GTC", "LOC", "h/o", "EEG", "AED", "Possible", "No tongue biting", "No post-ictal confusion"):
        assert word in joined


def test_agreement_needs_both_modalities(cohort, eeg_side):
    c = cohort.components
    rows = np.flatnonzero(c["agreement_case"] & cohort.present["signal"] & cohort.present["text"])
    assert rows.size > 80
    text_side = np.array([note_side(cohort.notes[i]) for i in rows])
    truth = cohort.seizure_true[rows]
    assert (eeg_side[rows] == c["discharge_side"][rows]).mean() > 0.97
    assert ((eeg_side[rows] == text_side) == truth).mean() > 0.95
    for side in (eeg_side[rows], text_side):
        assert abs((side == truth).mean() - 0.5) < 0.1


def test_each_modality_carries_signal_and_they_complement(cohort, power3):
    """3 Hz power (EEG) and the note's semiology/post-ictal words each beat chance; together they beat each."""
    keep = cohort.present["signal"] & cohort.present["text"]
    y = cohort.seizure_true[keep]
    power = power3[keep].mean(axis=1)
    eeg = (power > np.median(power)).astype(float)
    text = np.array([bool(SEMIOLOGY.search(t)) or bool(POSTICTAL.search(t)) for t in np.asarray(cohort.notes)[keep]],
                    float)
    auc = {"eeg": _auroc(eeg, y), "text": _auroc(text, y), "both": _auroc(eeg + text, y)}
    assert auc["eeg"] > 0.75 and auc["text"] > 0.65, auc
    assert auc["both"] > max(auc["eeg"], auc["text"]) + 0.03, auc


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    pos = labels == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cohort = generate_neuro(24, seed=4, duration_s=10)
    out = tmp_path_factory.mktemp("neuro")
    calls = []
    return cohort, out, write_neuro_cohort(cohort, out, progress=lambda done, total: calls.append((done, total))), calls


def test_written_files_round_trip(written):
    cohort, out, manifest, calls = written
    frame = pd.read_parquet(manifest)
    assert frame["patient_id"].tolist() == cohort.patient_id.tolist()
    assert frame["seizure"].tolist() == cohort.seizure.tolist()
    assert (frame["signal"] != "").tolist() == cohort.present["signal"].tolist()
    assert (frame["text"] != "").tolist() == cohort.present["text"].tolist()
    assert {"gt_discharge", "gt_discharge_side", "gt_note_side", "gt_agreement_case"} <= set(frame)
    assert calls[-1][0] == calls[-1][1]
    i = int(np.flatnonzero(cohort.present["signal"])[0])
    record = read_edf(out / frame.loc[i, "signal"])
    assert record.meta["sampling_rate"] == RATE and record.meta["channel_names"] == list(EEG_CHANNELS)
    assert record.meta["units"] == ["uV"] * 19 and record.array.shape == cohort.eeg[i].shape
    step = (cohort.eeg[i].max(axis=1) - cohort.eeg[i].min(axis=1)) / 65535
    assert (np.abs(record.array - cohort.eeg[i]) <= 1.01 * step[:, None] + 1e-3).all()
    assert read_any(out / frame.loc[i, "signal"]).modality == "signal"
    j = int(np.flatnonzero(cohort.present["text"])[0])
    assert (out / frame.loc[j, "text"]).read_text(encoding="utf-8") == cohort.notes[j]
    events = load_neuro_events(out)
    pd.testing.assert_frame_equal(events, cohort.events_frame())
    description = json.loads((out / "cohort.json").read_text())
    assert description["scenario"] == "neuro" and description["ground_truth"] == cohort.ground_truth
    assert description["channel_names"] == list(EEG_CHANNELS)


def test_manifest_dataset_loads_the_cohort(written):
    cohort, out, manifest, _ = written
    dataset = ManifestDataset(manifest, {"signal": "signal", "text": "text"}, "seizure")
    assert len(dataset) == len(cohort)
    for k in range(len(dataset)):
        sample = dataset[k]
        i = int(np.flatnonzero(cohort.patient_id == sample["patient_id"])[0])
        assert sample["label"] == cohort.seizure[i]
        assert sample["present"]["signal"] == cohort.present["signal"][i]
        if cohort.present["signal"][i]:
            assert sample["inputs"]["signal"].shape == (19, 10 * RATE)
        if cohort.present["text"][i]:
            assert sample["inputs"]["text"] == cohort.notes[i]
    train = ManifestDataset(manifest, {"signal": "signal", "text": "text"}, "seizure", split="train")
    assert 0 < len(train) < len(cohort)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_patients"):
        generate_neuro(0)
    with pytest.raises(ValueError, match="seed"):
        generate_neuro(5, seed=-2)
    with pytest.raises(ValueError, match="label_noise"):
        generate_neuro(5, label_noise=0.5)
    with pytest.raises(ValueError, match=r"unknown modality\(ies\) \['image'\]"):
        generate_neuro(5, missing={"image": 0.1})
    with pytest.raises(ValueError, match=r"missing\['signal'\] in \[0, 1\.0\), received 1\.2"):
        generate_neuro(5, missing={"signal": 1.2})
    with pytest.raises(ValueError, match="split_fractions"):
        generate_neuro(5, split_fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="sampling_rate as an int >= 128 Hz, received 100"):
        generate_neuro(5, sampling_rate=100)
    with pytest.raises(ValueError, match="duration_s as a whole number of seconds >= 10 .*, received 5"):
        generate_neuro(5, duration_s=5)
    with pytest.raises(ValueError, match="received 12.5"):
        generate_neuro(5, duration_s=12.5)
    with pytest.raises(ValueError, match="workers"):
        generate_neuro(5, workers=0)
    with pytest.raises(ValueError, match="discharge_side in"):
        EEGSpec(np.array([3]), np.array([False]))
    with pytest.raises(ValueError, match="expected spec to be an EEGSpec"):
        render_eeg("spec", np.random.default_rng(0))
    with pytest.raises(ValueError, match="expected cohort to be a NeuroCohort, received str"):
        write_neuro_cohort("cohort", "/tmp/never-written")
