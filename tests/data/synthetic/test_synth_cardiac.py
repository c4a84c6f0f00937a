"""The cardiac cohort: planted ECG / echo / PPG / note properties measured from the data, label rule,
noise, missingness, splits, and the files on disk through the real readers and ManifestDataset."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import binary_closing, binary_fill_holes, label, maximum_filter1d, median_filter
from scipy.signal import butter, filtfilt, find_peaks

from medfusion.data.datasets import ManifestDataset
from medfusion.data.io import read_any, read_video, read_wfdb
from medfusion.data.synthetic.cardiac import (
    CARDIAC_MODALITIES, PPG_CHANNELS, CardiacCohort, generate_cardiac, write_cardiac_cohort,
)
from medfusion.data.synthetic.cardiac_notes import CardiacFacts, generate_cardiac_notes
from medfusion.data.synthetic.ecg import LEADS, TERRITORIES, TERRITORY_LEADS, render_ecg
from medfusion.data.synthetic.echo import render_echo
from medfusion.data.synthetic.files import load_masks
from medfusion.data.synthetic.waveforms import sample_beats

N = 900
FS = 250.0
AF_WORDS = re.compile(r"(?<!\? )(known AF|paroxysmal AF)")
MI_WORDS = re.compile(r"\b(anterior|inferior|lateral)\b (MI|STEMI)")


@pytest.fixture(scope="module")
def cohort() -> CardiacCohort:
    return generate_cardiac(N, seed=0)


# -- measurements from the signals ------------------------------------------------------------


def bandpass(x: np.ndarray, low: float, high: float, fs: float = FS) -> np.ndarray:
    b, a = butter(2, [low / (fs / 2), high / (fs / 2)], btype="band")
    return filtfilt(b, a, x, axis=-1)


def r_peaks(ecg: np.ndarray, fs: float = FS) -> np.ndarray:
    """Sample indices of QRS complexes: peaks of the smoothed 8-30 Hz energy summed over leads."""
    energy = (bandpass(ecg, 8, 30, fs) ** 2).sum(axis=0)
    k = int(0.05 * fs)
    energy = np.convolve(energy, np.ones(k) / k, mode="same")
    peaks, _ = find_peaks(energy, distance=int(0.28 * fs), height=0.2 * np.percentile(energy, 99))
    return peaks


def pulse_peaks(ppg: np.ndarray, fs: float = FS) -> np.ndarray:
    clean = bandpass(ppg, 0.5, 8, fs)
    peaks, _ = find_peaks(clean, distance=int(0.28 * fs), prominence=0.3 * np.ptp(clean))
    return peaks


def interval_cv(peaks: np.ndarray) -> float:
    rr = np.diff(peaks)
    return float(rr.std() / rr.mean())


def median_beat(ecg: np.ndarray, peaks: np.ndarray, pre: float = 0.3, post: float = 0.45) -> np.ndarray:
    """(L, W) median of the beats around ``peaks``, the peak at sample round(pre * FS)."""
    a, b = int(pre * FS), int(post * FS)
    peaks = peaks[(peaks >= a) & (peaks < ecg.shape[-1] - b)]
    return np.median(np.stack([ecg[:, p - a:p + b] for p in peaks]), axis=0)


def qrs_width_ms(ecg: np.ndarray) -> float:
    """Width of the run of high spatial velocity (sum of |slope| over leads) around the QRS."""
    beat = median_beat(bandpass(ecg, 0.5, 40), r_peaks(ecg))
    speed = maximum_filter1d(np.abs(np.diff(beat, axis=1)).sum(axis=0), 5)
    above = binary_closing(speed > 0.2 * speed.max(), np.ones(7, bool))
    lo = hi = int(np.argmax(speed))
    while lo > 0 and above[lo - 1]:
        lo -= 1
    while hi < len(above) - 1 and above[hi + 1]:
        hi += 1
    return (hi - lo + 1 - 4) * 1000 / FS  # less the maximum filter's spread


def st_levels(ecg: np.ndarray) -> np.ndarray:
    """(L,) ST level 100 ms after the R peak minus the PR baseline 60 ms before it, in mV."""
    beat, a = median_beat(ecg, r_peaks(ecg)), int(0.3 * FS)
    return beat[:, a + int(0.1 * FS)] - beat[:, a - int(0.06 * FS)]


def p_wave_amplitude(ecg: np.ndarray) -> float:
    """Lead II: peak of the median beat 220-100 ms before the R peak over the PR baseline."""
    lead = LEADS.index("II")
    beat, a = median_beat(bandpass(ecg[[lead]], 0.5, 40), r_peaks(ecg)), int(0.3 * FS)
    return float(beat[0, a - int(0.22 * FS):a - int(0.1 * FS)].max() - beat[0, a - int(0.06 * FS)])


def territory_st(ecg: np.ndarray) -> np.ndarray:
    """(3,) mean ST level over each territory's leads."""
    levels = st_levels(ecg)
    return np.array([levels[[LEADS.index(x) for x in TERRITORY_LEADS[t]]].mean() for t in TERRITORIES])


def ef_from_masks(masks: np.ndarray) -> np.ndarray:
    """(N,) EF by the single-plane area-length method V = 8 A^2 / (3 pi L) over (N, F, H, W) masks."""
    area = masks.sum(axis=(-1, -2)).astype(float)
    length = masks.any(axis=-1).sum(axis=-1).astype(float)
    volume = 8 * area**2 / (3 * np.pi * np.maximum(length, 1))
    return 1 - volume.min(axis=1) / volume.max(axis=1)


def cavity_from_frames(clip: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """(F, H, W) dark region containing the image point (0.42 H, W / 2) of a (F, 1, H, W) clip in [0, 1]."""
    dark = median_filter(clip[:, 0], size=(1, 3, 3)) < threshold
    height, width = dark.shape[-2:]
    out = np.zeros_like(dark)
    for k, frame in enumerate(dark):
        labels, _ = label(frame)
        seed = labels[int(0.42 * height), width // 2]
        if seed:
            out[k] = binary_fill_holes(labels == seed)
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    pos = labels == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 25) -> np.ndarray:
    x = np.c_[np.ones(len(x)), x]
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        w -= np.linalg.solve((x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w)), x.T @ (p - y) + l2 * w)
    return w


@pytest.fixture(scope="module")
def ecg_features(cohort) -> dict[str, np.ndarray]:
    """Per patient with an ECG: RR coefficient of variation, QRS width (ms), ST by territory (mV)."""
    rows = np.flatnonzero(cohort.present["ecg"])
    cv = np.array([interval_cv(r_peaks(cohort.ecg[i])) for i in rows])
    width = np.array([qrs_width_ms(cohort.ecg[i]) for i in rows])
    st = np.stack([territory_st(cohort.ecg[i]) for i in rows])
    return {"rows": rows, "cv": cv, "qrs_ms": width, "st": st}


# -- cohort structure ---------------------------------------------------------------------------


def test_shapes_dtypes_and_ids(cohort):
    n = len(cohort)
    assert cohort.ecg.shape == (n, 12, 2500) and cohort.ecg.dtype == np.float32
    assert cohort.echo.shape == (n, 16, 1, 64, 64) and cohort.echo.dtype == np.uint8
    assert cohort.echo.max() > 180
    assert cohort.cavity.shape == (n, 16, 64, 64) and cohort.cavity.dtype == bool
    assert cohort.ppg.shape == (n, 2, 2500) and cohort.ppg_channels == PPG_CHANNELS
    assert cohort.ecg_leads == LEADS and cohort.sampling_rate == FS
    assert np.isfinite(cohort.ecg).all() and np.isfinite(cohort.ppg).all()
    assert cohort.hf_event.dtype == np.int64 and set(np.unique(cohort.hf_event)) == {0, 1}
    assert cohort.patient_id[0] == "SYN-000001" and len(set(cohort.patient_id.tolist())) == n
    assert all(re.fullmatch(r"SYN-\d{6}", p) for p in cohort.patient_id)
    assert ((cohort.ejection_fraction >= 15) & (cohort.ejection_fraction <= 75)).all()
    np.testing.assert_allclose(cohort.echo_fps, 16 * cohort.heart_rate / 60)
    frame = cohort.to_frame()
    assert len(frame) == n and {"patient_id", "split", "hf_event", "has_echo", "note"} <= set(frame)
    assert "prevalence" in cohort.ground_truth


def test_same_seed_identical_other_seed_differs():
    a, b, c = (generate_cardiac(30, seed=s) for s in (4, 4, 5))
    for name in ("ecg", "echo", "ppg", "cavity", "hf_event", "split", "ejection_fraction"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.notes == b.notes and a.ground_truth == b.ground_truth
    assert not np.array_equal(a.ecg, c.ecg) and not np.array_equal(a.echo, c.echo) and a.notes != c.notes


def test_noise_and_missingness_leave_the_other_draws_unchanged():
    a = generate_cardiac(40, seed=2)
    b = generate_cardiac(40, seed=2, missing={}, label_noise=0.0, noise={"ecg": 0.0, "ppg": 0.0})
    assert all(b.present[m].all() for m in CARDIAC_MODALITIES)
    np.testing.assert_array_equal(b.hf_event, b.hf_event_true)
    np.testing.assert_array_equal(a.hf_event_true, b.hf_event_true)
    both = a.present["echo"]
    np.testing.assert_array_equal(a.echo[both], b.echo[both])
    keep = a.present["ecg"]
    residual = (a.ecg[keep] - b.ecg[keep]).std()
    assert 0.015 < residual < 0.15  # only the noise differs: white, mains, wander
    single = generate_cardiac(40, seed=2, ecg_leads=("II",), noise={"ecg": 0.0}, missing={})
    assert single.ecg.shape == (40, 1, 2500)
    np.testing.assert_allclose(single.ecg[:, 0], b.ecg[:, LEADS.index("II")], atol=1e-5)


def test_label_is_the_documented_rule(cohort):
    c = cohort.components
    ef = cohort.ejection_fraction
    acute = c["st_elevation"] & ~(c["prior_mi"] & (c["st_territory"] == c["mi_territory"]))
    points = 2 * (ef < 40) + ((ef >= 40) & (ef < 50)) + c["af"] + acute + c["bbb"] + c["prior_mi"]
    np.testing.assert_array_equal(cohort.hf_event_true, (points >= 3).astype(np.int64))
    assert 0.14 < cohort.hf_event_true.mean() < 0.25
    assert cohort.hf_event_true[ef < 40].mean() > 0.45 and cohort.hf_event_true[ef >= 50].mean() < 0.1
    np.testing.assert_array_equal(c["agreement_case"], c["st_elevation"] & c["prior_mi"] & (points - acute == 2))
    np.testing.assert_array_equal(cohort.hf_event_true[c["agreement_case"]],
                                  c["territories_differ"][c["agreement_case"]])


def test_label_noise_rate(cohort):
    flipped = cohort.hf_event != cohort.hf_event_true
    np.testing.assert_array_equal(flipped, cohort.label_flipped)
    assert abs(flipped.mean() - 0.05) < 3 * np.sqrt(0.05 * 0.95 / N)


def test_missingness_rates_and_markers(cohort):
    for m, rate in {"ecg": 0.1, "echo": 0.15, "ppg": 0.2, "text": 0.05}.items():
        assert abs((~cohort.present[m]).mean() - rate) < 3 * np.sqrt(rate * (1 - rate) / N) + 0.003, m
    assert np.stack([cohort.present[m] for m in CARDIAC_MODALITIES]).any(axis=0).all()
    assert (cohort.ecg[~cohort.present["ecg"]] == 0).all() and (cohort.echo[~cohort.present["echo"]] == 0).all()
    assert (cohort.ppg[~cohort.present["ppg"]] == 0).all()
    assert all((t == "") != keep for t, keep in zip(cohort.notes, cohort.present["text"]))
    assert cohort.cavity[~cohort.present["echo"]].any(axis=(1, 2, 3)).all()  # ground truth stays


def test_splits_patient_level_and_stratified(cohort):
    ids = {s: set(cohort.patient_id[cohort.split == s].tolist()) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert sum(map(len, ids.values())) == len(cohort)
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = cohort.split == name
        assert abs(part.mean() - share) < 0.01
        assert abs(cohort.hf_event[part].mean() - cohort.hf_event.mean()) < 0.02


# -- planted properties, measured ----------------------------------------------------------------


def test_af_rr_irregularity_from_detected_r_peaks(cohort, ecg_features):
    af = cohort.components["af"][ecg_features["rows"]]
    cv = ecg_features["cv"]
    assert np.median(cv[af]) > 0.15 and np.percentile(cv[~af], 95) < 0.06
    assert auroc(cv, af.astype(int)) > 0.98


def test_af_has_no_p_waves():
    rng = np.random.default_rng(0)
    af = np.arange(60) < 30
    beats = sample_beats(rng, np.full(60, 75.0), af, 10.0)
    ecg = render_ecg(rng, beats, af=af, st_territory=np.full(60, -1), bbb=np.zeros(60, int),
                     resp_rate=np.full(60, 15.0))
    amplitude = np.array([p_wave_amplitude(e) for e in ecg])
    assert np.median(amplitude[~af]) > 0.08 and np.median(amplitude[af]) < 0.04
    assert amplitude[~af].min() > amplitude[af].max() - 0.05


def test_bundle_branch_block_widens_the_measured_qrs(cohort, ecg_features):
    bbb = cohort.components["bbb"][ecg_features["rows"]]
    width = ecg_features["qrs_ms"]
    assert bbb.sum() > 50
    assert (width[bbb] > 120).mean() > 0.97 and (width[~bbb] < 120).mean() > 0.97
    assert 80 <= np.median(width[~bbb]) <= 110 and np.median(width[bbb]) >= 135


def test_st_elevation_in_the_territory_leads(cohort, ecg_features):
    rows = ecg_features["rows"]
    territory, bbb = cohort.components["st_territory"][rows], cohort.components["bbb"][rows]
    st = ecg_features["st"]
    ste = (territory >= 0) & ~bbb
    assert ste.sum() > 60
    assert (st[ste, territory[ste]] > 0.1).mean() > 0.95
    assert (st[ste].argmax(axis=1) == territory[ste]).mean() > 0.9
    assert (st[(territory < 0) & ~bbb].max(axis=1) < 0.1).mean() > 0.95


def test_ejection_fraction_measured_from_the_echo(cohort):
    truth = cohort.ejection_fraction / 100
    assert np.abs(ef_from_masks(cohort.cavity) - truth).max() < 0.06
    rows = np.flatnonzero(cohort.present["echo"])[:120]
    measured = np.array([ef_from_masks(cavity_from_frames(cohort.echo[i] / 255)[None])[0] for i in rows])
    error = np.abs(measured - truth[rows])
    assert np.median(error) < 0.03 and np.percentile(error, 90) < 0.07
    volume_ratio = np.corrcoef(cohort.cavity.sum(axis=(2, 3)).max(axis=1), cohort.ejection_fraction)[0, 1]
    assert volume_ratio < -0.3  # reduced EF comes with a dilated ventricle


def test_echo_clean_and_noisy_share_the_shapes():
    ef = np.array([0.2, 0.6])
    clean = render_echo(np.random.default_rng(1), ef, noise=0.0)
    noisy = render_echo(np.random.default_rng(1), ef, noise=1.0)
    np.testing.assert_array_equal(clean.cavity, noisy.cavity)
    np.testing.assert_allclose(1 - clean.volume.min(axis=1) / clean.volume.max(axis=1), ef, atol=1e-9)
    assert ((clean.es_frame - clean.ed_frame) % 16 == 6).all()  # end-systole at 37.5% of the cycle
    cavity_mean = clean.frames[:, :, 0][clean.cavity].mean()
    assert cavity_mean < 0.1 * 255 and clean.frames.max() > 0.7 * 255


def test_ppg_pulse_rate_and_irregularity_follow_the_ecg(cohort):
    rows = np.flatnonzero(cohort.present["ppg"] & ~cohort.components["af"])[:150]
    rate = np.array([60 * FS / np.diff(pulse_peaks(cohort.ppg[i, 0])).mean() for i in rows])
    assert np.median(np.abs(rate - cohort.heart_rate[rows])) < 4
    af_rows = np.flatnonzero(cohort.present["ppg"] & cohort.components["af"])[:80]
    cv_af = np.array([interval_cv(pulse_peaks(cohort.ppg[i, 0])) for i in af_rows])
    cv_sinus = np.array([interval_cv(pulse_peaks(cohort.ppg[i, 0])) for i in rows])
    assert np.median(cv_af) > 0.12 and np.median(cv_sinus) < 0.05
    breaths = np.array([len(find_peaks(bandpass(cohort.ppg[i, 1], 0.05, 1.0), distance=int(1.5 * FS))[0])
                        for i in rows])
    expected = cohort.resp_rate[rows] * 10 / 60
    assert np.median(np.abs(breaths - expected)) <= 1.0


def test_notes_state_history_with_negation_and_uncertainty(cohort):
    c = cohort.components
    rows = np.flatnonzero(cohort.present["text"])
    for i in rows:
        text = cohort.notes[i]
        assert bool(AF_WORDS.search(text)) == c["af_documented"][i], text
        mi = MI_WORDS.search(text)
        assert bool(mi) == c["mi_documented"][i], text
        if mi:
            assert TERRITORIES.index(mi.group(1)) == c["mi_territory"][i]
        if "No prior MI." in text:
            assert not c["prior_mi"][i]
        if "? paroxysmal AF" in text:
            assert not c["af"][i] and c["af_query"][i]
        if " irregular," in text:
            assert c["af"][i]
    documented = c["af_documented"][rows][c["af"][rows]].mean()
    assert 0.85 < documented < 0.95  # 10% documentation gaps by default
    texts = [cohort.notes[i] for i in rows]
    assert any(re.search(r"\? mild|[Pp]ossible ", t) for t in texts) and any("Denies " in t for t in texts)
    assert sum("? paroxysmal AF" in t for t in texts) > 5


def test_note_omission_rate_is_configurable():
    facts = CardiacFacts(age=np.full(400, 60), male=np.ones(400, bool), htn=np.ones(400, bool),
                         dm=np.zeros(400, bool), prior_mi=np.ones(400, bool), mi_territory=np.zeros(400, int),
                         af=np.ones(400, bool), chf=np.zeros(400, bool), congestion=np.zeros(400, bool),
                         heart_rate=np.full(400, 80), systolic_bp=np.full(400, 120), diastolic_bp=np.full(400, 70))
    for omit in (0.0, 0.5):
        notes = generate_cardiac_notes(facts, np.random.default_rng(0), omit=omit)
        rate = 1 - notes.documented[:, [0, 2, 3]].mean()
        assert abs(rate - omit) < 0.05
        assert all(("old anterior MI" in t or "prior anterior MI" in t or "anterior STEMI" in t) == d
                   for t, d in zip(notes.texts, notes.documented[:, 2]))


def test_modalities_complement_and_af_is_redundant(cohort, ecg_features):
    """Echo (EF), ECG (AF, BBB, ST) and note (AF, MI) features: echo is the strongest alone,
    echo + ECG beats either, and AF read from the note agrees with AF measured in the ECG."""
    rows = ecg_features["rows"]
    keep = cohort.present["echo"][rows] & cohort.present["text"][rows]
    rows, y = rows[keep], cohort.hf_event_true[rows[keep]].astype(float)
    ef = ef_from_masks(cohort.cavity[rows])
    echo = np.c_[ef, ef < 0.4, (ef >= 0.4) & (ef < 0.5)]
    ecg = np.c_[ecg_features["cv"][keep] > 0.08, ecg_features["qrs_ms"][keep] > 120,
                ecg_features["st"][keep].max(axis=1) > 0.1]
    note = np.array([[bool(AF_WORDS.search(cohort.notes[i])), bool(MI_WORDS.search(cohort.notes[i]))]
                     for i in rows], dtype=float)
    train = cohort.split[rows] == "train"
    result = {}
    for name, x in (("echo", echo), ("ecg", ecg), ("note", note), ("echo+ecg", np.c_[echo, ecg])):
        x = x.astype(float)
        result[name] = auroc(np.c_[np.ones(len(x)), x][~train] @ fit_logistic(x[train], y[train]), y[~train])
    assert result["echo"] > max(result["ecg"], result["note"]), result
    assert result["echo+ecg"] > result["echo"] + 0.04, result
    af_ecg = ecg[:, 0]
    af_note = note[:, 0]
    assert (af_note[af_ecg == 1] == 1).mean() > 0.8 and (af_note[af_ecg == 0] == 1).mean() < 0.05


def test_agreement_cases_need_both_territories():
    """In the agreement subgroup the label is "ECG territory != note territory"; either alone is at chance."""
    small = generate_cardiac(6000, seed=1, sampling_rate=100, duration_s=2, echo_frames=8, echo_size=32)
    c = small.components
    case = c["agreement_case"]
    assert 0.015 < case.mean() < 0.035
    y = small.hf_event_true[case]
    assert 0.4 < y.mean() < 0.6
    for territory in (c["st_territory"][case], c["mi_territory"][case]):  # best guess from one territory
        best = sum(max((y[territory == k] == 1).sum(), (y[territory == k] == 0).sum()) for k in range(3))
        assert best / case.sum() < 0.68
    np.testing.assert_array_equal(y, c["st_territory"][case] != c["mi_territory"][case])


def test_agreement_cases_readable_from_ecg_and_note(cohort, ecg_features):
    c = cohort.components
    position = {row: k for k, row in enumerate(ecg_features["rows"])}
    rows = [i for i in np.flatnonzero(c["agreement_case"] & c["mi_documented"] & ~c["bbb"] & cohort.present["text"])
            if i in position]
    assert len(rows) >= 8
    ecg_territory = np.array([ecg_features["st"][position[i]].argmax() for i in rows])
    note_territory = np.array([TERRITORIES.index(MI_WORDS.search(cohort.notes[i]).group(1)) for i in rows])
    assert ((ecg_territory != note_territory) == cohort.hf_event_true[rows]).mean() > 0.85


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_patients": 0}, "n_patients"),
    ({"label_noise": 0.5}, "label_noise"),
    ({"missing": {"image": 0.1}}, r"unknown modality\(ies\) \['image'\] in missing"),
    ({"missing": {"ecg": 1.0}}, r"missing\['ecg'\]"),
    ({"noise": {"echo": 3}}, r"noise\['echo'\].*received 3"),
    ({"noise": {"text": 1.0}}, r"noise\['text'\]"),
    ({"ecg_leads": ("V7",)}, "ecg_leads"),
    ({"echo_frames": 12}, "echo_frames"),
    ({"echo_size": 63}, "echo_size"),
    ({"sampling_rate": 50}, "sampling_rate"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
])
def test_argument_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_cardiac(**{"n_patients": 5, **kwargs})


def test_helper_argument_validation():
    with pytest.raises(ValueError, match="ejection_fraction"):
        render_echo(np.random.default_rng(0), np.array([0.95]))
    with pytest.raises(ValueError, match="af of shape"):
        sample_beats(np.random.default_rng(0), np.full(3, 70.0), np.zeros(2, bool), 10.0)
    with pytest.raises(ValueError, match="cohort"):
        write_cardiac_cohort("not a cohort", "/tmp/never-written")


# -- on disk ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cohort = generate_cardiac(24, seed=7, missing={"ecg": 0.2, "echo": 0.2, "ppg": 0.2, "text": 0.1})
    out = tmp_path_factory.mktemp("cardiac")
    calls = []
    manifest = write_cardiac_cohort(cohort, out, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]
    return cohort, out, manifest


def test_manifest_and_description(written):
    cohort, out, manifest = written
    frame = pd.read_parquet(manifest)
    assert frame["patient_id"].tolist() == cohort.patient_id.tolist()
    assert frame["hf_event"].tolist() == cohort.hf_event.tolist()
    for m in CARDIAC_MODALITIES:
        assert (frame[m] != "").tolist() == cohort.present[m].tolist(), m
    np.testing.assert_allclose(frame["gt_ejection_fraction"], cohort.ejection_fraction)
    assert pd.read_csv(out / "manifest.csv", keep_default_na=False)["ecg"].tolist() == frame["ecg"].tolist()
    description = json.loads((out / "cohort.json").read_text())
    assert description["scenario"] == "cardiac" and description["ecg_leads"] == list(LEADS)
    assert description["ground_truth"] == cohort.ground_truth and description["settings"]["seed"] == 7


def test_files_round_trip_through_the_readers(written):
    cohort, out, manifest = written
    frame = pd.read_parquet(manifest)
    i = int(np.flatnonzero(cohort.present["ecg"])[0])
    ecg = read_wfdb(out / frame.loc[i, "ecg"])
    assert ecg.meta["channel_names"] == list(LEADS) and ecg.meta["units"] == ["mV"] * 12
    assert ecg.meta["sampling_rate"] == FS and ecg.array.shape == (12, 2500)
    np.testing.assert_allclose(ecg.array, cohort.ecg[i], atol=1e-3)
    j = int(np.flatnonzero(cohort.present["ppg"])[0])
    ppg = read_any(out / frame.loc[j, "ppg"])
    assert ppg.meta["channel_names"] == list(PPG_CHANNELS)
    np.testing.assert_allclose(ppg.array, cohort.ppg[j], atol=1e-3)
    k = int(np.flatnonzero(cohort.present["echo"])[0])
    video = read_video(out / frame.loc[k, "echo"], grayscale=True)
    assert video.array.shape == (16, 1, 64, 64)
    assert abs(video.meta["fps"] - cohort.echo_fps[k]) < 0.01
    assert np.abs(video.array - cohort.echo[k] / 255).mean() < 0.02
    measured = ef_from_masks(cavity_from_frames(video.array)[None])[0]
    assert abs(measured - cohort.ejection_fraction[k] / 100) < 0.08
    t = int(np.flatnonzero(cohort.present["text"])[0])
    assert (out / frame.loc[t, "text"]).read_text(encoding="utf-8") == cohort.notes[t]
    masks = load_masks(out)
    np.testing.assert_array_equal(masks["masks"][:, 0], cohort.cavity)
    assert masks["finding_names"].tolist() == ["lv_cavity"] and masks["boxes"].shape == (24, 1, 16, 4)


def test_manifest_dataset_loads_every_modality(written):
    cohort, out, manifest = written
    dataset = ManifestDataset(manifest, {"signal": "ecg", "video": "echo", "text": "text"}, "hf_event")
    ppg = ManifestDataset(manifest, {"signal": "ppg"}, "hf_event")
    assert len(dataset) == len(ppg) == len(cohort)
    for position in range(len(cohort)):
        sample = dataset[position]
        row = int(np.flatnonzero(cohort.patient_id == sample["patient_id"])[0])
        assert sample["label"] == cohort.hf_event[row]
        assert sample["present"] == {"signal": bool(cohort.present["ecg"][row]),
                                     "video": bool(cohort.present["echo"][row]),
                                     "text": bool(cohort.present["text"][row])}
        if sample["present"]["signal"]:
            assert sample["inputs"]["signal"].shape == (12, 2500)
        if sample["present"]["video"]:
            assert sample["inputs"]["video"].shape[0] == 16
        assert ppg[position]["present"]["signal"] == bool(cohort.present["ppg"][row])


def test_single_lead_cohort_on_disk(tmp_path):
    cohort = generate_cardiac(4, seed=1, ecg_leads=("II",), missing={})
    write_cardiac_cohort(cohort, tmp_path)
    record = read_wfdb(tmp_path / "ecg" / "SYN-000001.hea")
    assert record.meta["channel_names"] == ["II"] and record.array.shape == (1, 2500)
    assert json.loads((tmp_path / "cohort.json").read_text())["ecg_leads"] == ["II"]
