"""Array transforms on hand-computed arrays, their dictionary twins, seeding and Compose."""

from __future__ import annotations

import numpy as np
import pytest

from medfusion.data import transforms as T

RNG = np.random.default_rng(0)
IMAGE = RNG.normal(size=(1, 6, 6)).astype(np.float32)
SIGNAL = RNG.normal(size=(3, 200)).astype(np.float32)
VIDEO = RNG.normal(size=(10, 1, 4, 4)).astype(np.float32)


def test_zscore_and_minmax_formulas() -> None:
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    std = np.sqrt(1.25)  # population std of 1..4 around 2.5
    np.testing.assert_allclose(T.NormalizeIntensity()(x), [[-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std]], rtol=1e-6)
    np.testing.assert_allclose(T.NormalizeIntensity("minmax")(x), [[0, 1 / 3, 2 / 3, 1]], rtol=1e-6)
    np.testing.assert_allclose(T.NormalizeIntensity("minmax", out_range=(-1, 1))(x), [[-1, -1 / 3, 1 / 3, 1]],
                               rtol=1e-6)
    np.testing.assert_array_equal(T.NormalizeIntensity()(np.full((1, 3), 7.0)), 0.0)  # constant: no division by 0
    np.testing.assert_array_equal(T.NormalizeIntensity("minmax")(np.full((1, 3), 7.0)), 0.0)
    two = np.array([[0.0, 2.0], [10.0, 30.0]])
    np.testing.assert_allclose(T.NormalizeIntensity("minmax", channel_wise=True)(two), [[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="mode 'zscore' or 'minmax'"):
        T.NormalizeIntensity("robust")


def test_resize() -> None:
    x = np.array([[[1.0, 2.0], [3.0, 4.0]]], dtype=np.float32)
    np.testing.assert_array_equal(T.Resize((4, 4), mode="nearest")(x)[0], np.kron(x[0], np.ones((2, 2))))
    big = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_allclose(T.Resize((2, 2), mode="area")(big)[0], [[2.5, 4.5], [10.5, 12.5]])
    assert T.Resize((3, 5))(IMAGE).shape == (1, 3, 5)
    assert T.Resize((2, 3, 3))(np.zeros((1, 4, 6, 6), np.float32)).shape == (1, 2, 3, 3)
    assert T.Resize((8, 8))(VIDEO).shape == (10, 1, 8, 8)  # video frames: leading axes kept
    with pytest.raises(ValueError, match="spatial_size"):
        T.Resize((0, 4))


def test_affine_formulas() -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_allclose(T.Affine()(x), x, atol=1e-5)
    np.testing.assert_array_equal(T.Affine(rotate=90, order=0)(x)[0], np.rot90(x[0]))  # counter-clockwise
    shifted = T.Affine(translate=(1, 0), order=0)(x)[0]  # one row down, zeros enter at the top
    np.testing.assert_array_equal(shifted[1:], x[0, :-1])
    np.testing.assert_array_equal(shifted[0], 0)
    volume = RNG.normal(size=(1, 3, 4, 4))
    np.testing.assert_allclose(T.Affine(rotate=90, order=0, spatial_dims=3)(volume)[0],
                               np.rot90(volume[0], axes=(1, 2)))
    zoomed = T.Affine(scale=2.0, order=0)(np.pad(np.ones((1, 2, 2)), ((0, 0), (3, 3), (3, 3))))
    assert zoomed.sum() == 16  # a centred 2x2 square becomes 4x4
    identity = T.RandAffine(rotate_range=0, translate_range=0, scale_range=(1, 1))
    np.testing.assert_allclose(identity(x, rng=np.random.default_rng(0)), x, atol=1e-5)
    random = T.RandAffine()
    a = random(IMAGE, rng=np.random.default_rng(3))
    assert not np.allclose(a, IMAGE)
    np.testing.assert_array_equal(a, random(IMAGE, rng=np.random.default_rng(3)))


def test_flips_refuse_left_right_unless_allowed() -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    np.testing.assert_array_equal(T.Flip(spatial_axes=(-2,))(x), x[:, ::-1, :])
    for cls in (T.Flip, T.RandFlip):
        with pytest.raises(ValueError, match="left-right"):
            cls(spatial_axes=(-1,))
        with pytest.raises(ValueError, match="left-right"):
            cls(spatial_axes=(-2, -1))
    with pytest.raises(ValueError, match="left-right"):
        T.Flipd("image", spatial_axes=(-1,))
    np.testing.assert_array_equal(T.Flip(spatial_axes=(-1,), allow_left_right=True)(x), x[:, :, ::-1])
    # a volume stored with left-right on the depth axis
    np.testing.assert_array_equal(T.Flip(spatial_axes=(-1,), left_right_axis=-3)(x), x[:, :, ::-1])
    with pytest.raises(ValueError, match="spatial axes"):
        T.Flip(spatial_axes=(1,))
    always = T.RandFlip(spatial_axes=(-2,), prob=1.0)
    np.testing.assert_array_equal(always(x), x[:, ::-1, :])
    np.testing.assert_array_equal(T.RandFlip(spatial_axes=(-2,), prob=0.0)(x), x)


def test_gaussian_noise_is_seeded() -> None:
    noise = T.RandGaussianNoise(std=0.5)
    a = noise.set_random_state(1)(np.zeros((1, 100, 100), np.float32))
    b = noise.set_random_state(1)(np.zeros((1, 100, 100), np.float32))
    np.testing.assert_array_equal(a, b)
    assert abs(a.std() - 0.5) < 0.02 and a.dtype == np.float32
    assert not np.array_equal(a, noise(np.zeros((1, 100, 100), np.float32)))


def test_bandpass_keeps_10hz_and_removes_drift() -> None:
    fs = 250.0
    t = np.arange(int(20 * fs)) / fs
    sine = np.sin(2 * np.pi * 10 * t)
    x = np.stack([sine + 2.0 * np.sin(2 * np.pi * 0.1 * t), sine]).astype(np.float32)
    out = T.Bandpass(fs, low=0.5, high=40.0)(x)
    middle = slice(int(2 * fs), int(18 * fs))
    np.testing.assert_allclose(out[:, middle], np.stack([sine, sine])[:, middle], atol=0.03)
    drift_only = T.Bandpass(fs, low=0.5, high=40.0)(2.0 * np.sin(2 * np.pi * 0.1 * t)[None].astype(np.float32))
    assert np.abs(drift_only[:, middle]).max() < 0.05
    highpass = T.Bandpass(fs, low=0.5, high=None)(x)
    np.testing.assert_allclose(highpass[:, middle], np.stack([sine, sine])[:, middle], atol=0.03)
    with pytest.raises(ValueError, match="Nyquist"):
        T.Bandpass(fs, low=0.5, high=200.0)
    with pytest.raises(ValueError, match="low < high"):
        T.Bandpass(fs, low=40.0, high=10.0)
    with pytest.raises(ValueError, match="too short"):
        T.Bandpass(fs)(np.zeros((1, 10), np.float32))


def test_resample_length_and_content() -> None:
    assert T.Resample(500, 100)(np.zeros((12, 1000), np.float32)).shape == (12, 200)
    assert T.Resample(250, 500)(np.zeros((1, 1000), np.float32)).shape == (1, 2000)
    assert T.Resample(360, 250)(np.zeros((1, 720), np.float32)).shape == (1, 500)
    t = np.arange(1000) / 500
    down = T.Resample(500, 100)(np.sin(2 * np.pi * 5 * t)[None].astype(np.float32))
    np.testing.assert_allclose(down[0, 20:-20], np.sin(2 * np.pi * 5 * np.arange(200) / 100)[20:-20], atol=0.02)


def test_amplitude_baseline_shift_and_lead_dropout() -> None:
    np.testing.assert_allclose(T.ScaleAmplitude(2.0)(SIGNAL), 2 * SIGNAL)
    scaled = T.RandScaleAmplitude((0.5, 0.5))(SIGNAL)
    np.testing.assert_allclose(scaled, 0.5 * SIGNAL, rtol=1e-6)
    per_lead = T.RandScaleAmplitude((0.8, 1.2), per_channel=True)(np.ones((3, 5), np.float32), np.random.default_rng(0))
    assert len(set(per_lead[:, 0])) == 3 and ((per_lead >= 0.8) & (per_lead <= 1.2)).all()

    fs = 100.0
    wander = T.RandBaselineWander(fs, amplitude=0.5, frequency_range=(0.1, 0.3))
    drift = wander(np.zeros((2, 3000), np.float32), rng=np.random.default_rng(2))
    spectrum = np.abs(np.fft.rfft(drift[0]))
    peak = np.fft.rfftfreq(3000, 1 / fs)[spectrum.argmax()]
    assert 0.05 <= peak <= 0.35 and 0 < np.abs(drift).max() <= 0.5
    np.testing.assert_array_equal(T.RandBaselineWander(fs, amplitude=0.0)(SIGNAL), SIGNAL)

    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    np.testing.assert_array_equal(T.TimeShift(1)(x), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(T.TimeShift(-2)(x), [[3, 4, 0, 0]])
    np.testing.assert_array_equal(T.TimeShift(1, mode="roll")(x), [[4, 1, 2, 3]])
    shift = T.RandTimeShift(2)
    outs = {tuple(shift(x, rng=np.random.default_rng(s))[0]) for s in range(30)}
    assert len(outs) == 5  # shifts -2..2

    dropped = T.RandLeadDropout(p=1.0)(np.ones((12, 4), np.float32), rng=np.random.default_rng(0))
    assert (dropped.any(axis=1)).sum() == 1  # at least one lead kept
    np.testing.assert_array_equal(T.RandLeadDropout(p=0.0)(SIGNAL), SIGNAL)
    with pytest.raises(ValueError, match=r"\(C, T\)"):
        T.RandLeadDropout()(np.zeros(5))


def test_text_transforms() -> None:
    assert T.Lowercase()("CXR: RLL Opacity") == "cxr: rll opacity"
    expand = T.ExpandAbbreviations()
    assert expand("Pt c/o SOB and CP, h/o HTN, DM and CHF.") == (
        "Pt complains of shortness of breath and chest pain, history of hypertension, diabetes mellitus and "
        "congestive heart failure.")
    assert expand("CXR: RLL and LUL opacity w/o effusion; AFib w/ RVR") == (
        "chest x-ray: right lower lobe and left upper lobe opacity without effusion; atrial fibrillation with RVR")
    assert expand("ECG, EKG after MI") == "electrocardiogram, electrocardiogram after myocardial infarction"
    assert expand("sob since am") == "shortness of breath since am"  # case-insensitive by default
    assert expand("SOBER CPU AFIBRILLATOR") == "SOBER CPU AFIBRILLATOR"  # whole words only
    assert T.ExpandAbbreviations(ignore_case=False)("sob") == "sob"
    assert T.ExpandAbbreviations({"RA": "room air"})("SpO2 91% on RA") == "SpO2 91% on room air"

    words = "no fever possible right lower lobe consolidation"
    assert T.RandTokenDropout(p=0.0)(words) == words
    one = T.RandTokenDropout(p=1.0)(words, rng=np.random.default_rng(0))
    assert len(one.split()) == 1 and one in words.split()
    dropout = T.RandTokenDropout(p=0.5)
    a = dropout(words, rng=np.random.default_rng(7))
    assert a == dropout(words, rng=np.random.default_rng(7))
    assert set(a.split()) <= set(words.split()) and a != words
    with pytest.raises(ValueError, match="text"):
        T.Lowercase()(np.zeros(3))


def test_video_transforms() -> None:
    clip = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
    np.testing.assert_array_equal(T.CenterTemporalCrop(4)(clip)[:, 0, 0, 0], [3, 4, 5, 6])
    assert T.CenterTemporalCrop(20)(clip).shape[0] == 10  # shorter clips pass whole; the collate pads
    crop = T.RandTemporalCrop(4)(clip, rng=np.random.default_rng(0))[:, 0, 0, 0]
    np.testing.assert_array_equal(np.diff(crop), 1)
    starts = {T.RandTemporalCrop(4)(clip, rng=np.random.default_rng(s))[0, 0, 0, 0] for s in range(40)}
    assert starts == set(range(7))
    np.testing.assert_array_equal(T.UniformFrameSampling(4)(clip)[:, 0, 0, 0], [0, 3, 6, 9])
    np.testing.assert_array_equal(T.UniformFrameSampling(5)(clip[:3])[:, 0, 0, 0], [0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        T.UniformFrameSampling(4)(IMAGE)


def test_vitals_standardizer_uses_training_statistics() -> None:
    standardizer = T.VitalsStandardizer()
    with pytest.raises(ValueError, match="not fitted"):
        standardizer(np.zeros(3, np.float32))
    train = np.array([[36.0, 80.0, np.nan], [38.0, 100.0, np.nan], [37.0, np.nan, np.nan]])
    standardizer.fit(train)
    np.testing.assert_allclose(standardizer.mean, [37.0, 90.0, 0.0])
    np.testing.assert_allclose(standardizer.std, [1.0, np.sqrt(200.0), 1.0])  # ddof=1; never observed: 1
    out = standardizer(np.array([39.0, np.nan, 5.0], np.float32))
    np.testing.assert_allclose(out[[0, 2]], [2.0, 5.0])
    assert np.isnan(out[1])  # missing stays missing for the collate's observed mask
    restored = T.VitalsStandardizer.from_state_dict(standardizer.state_dict())
    np.testing.assert_array_equal(restored(train), standardizer(train))
    with pytest.raises(ValueError, match="F=3"):
        standardizer(np.zeros(4, np.float32))
    twin = T.VitalsStandardizerd("vitals", standardizer)
    sample = {"inputs": {"vitals": np.array([39.0, 90.0, np.nan], np.float32)}, "present": {"vitals": True}}
    np.testing.assert_allclose(twin(sample)["inputs"]["vitals"][:2], [2.0, 0.0])


TWINS = [
    (T.NormalizeIntensityd, T.NormalizeIntensity, "image", IMAGE, {"mode": "minmax"}),
    (T.Resized, T.Resize, "image", IMAGE, {"spatial_size": (3, 3)}),
    (T.RandAffined, T.RandAffine, "image", IMAGE, {}),
    (T.RandFlipd, T.RandFlip, "image", IMAGE, {"spatial_axes": (-2,)}),
    (T.RandGaussianNoised, T.RandGaussianNoise, "image", IMAGE, {}),
    (T.Bandpassd, T.Bandpass, "signal", SIGNAL, {"sampling_rate": 100.0, "low": 1.0, "high": 20.0}),
    (T.Resampled, T.Resample, "signal", SIGNAL, {"orig_rate": 100, "target_rate": 50}),
    (T.RandScaleAmplituded, T.RandScaleAmplitude, "signal", SIGNAL, {}),
    (T.RandBaselineWanderd, T.RandBaselineWander, "signal", SIGNAL, {"sampling_rate": 100.0}),
    (T.RandTimeShiftd, T.RandTimeShift, "signal", SIGNAL, {"max_shift": 10}),
    (T.RandLeadDropoutd, T.RandLeadDropout, "signal", SIGNAL, {"p": 0.5}),
    (T.ExpandAbbreviationsd, T.ExpandAbbreviations, "text", "c/o SOB", {}),
    (T.RandTokenDropoutd, T.RandTokenDropout, "text", "a b c d e f g", {"p": 0.5}),
    (T.RandTemporalCropd, T.RandTemporalCrop, "video", VIDEO, {"length": 4}),
    (T.UniformFrameSamplingd, T.UniformFrameSampling, "video", VIDEO, {"num_frames": 3}),
]


@pytest.mark.parametrize(("twin", "array", "key", "value", "kwargs"), TWINS, ids=[t[0].__name__ for t in TWINS])
def test_dict_twin_equals_array_transform(twin, array, key, value, kwargs) -> None:
    sample = {"patient_id": "p", "label": 1, "inputs": {key: value, "other": None},
              "present": {key: True, "other": False}}
    out = twin(key, **kwargs).set_random_state(11)(sample)
    expected = array(**kwargs).set_random_state(11)(value)
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(out["inputs"][key], expected)
    else:
        assert out["inputs"][key] == expected
    assert sample["inputs"][key] is value  # the input sample is not modified
    assert out["label"] == 1 and out["inputs"]["other"] is None
    # seeded at call time too
    again = twin(key, **kwargs)(sample, rng=np.random.default_rng(4))
    reference = array(**kwargs)(value, rng=np.random.default_rng(4))
    assert (np.array_equal(again["inputs"][key], reference) if isinstance(reference, np.ndarray)
            else again["inputs"][key] == reference)


def test_map_transform_skips_missing_modalities_and_checks_keys() -> None:
    sample = {"inputs": {"image": None, "text": "SOB"}, "present": {"image": False, "text": True}}
    assert T.NormalizeIntensityd("image")(sample)["inputs"]["image"] is None
    absent_text = {"inputs": {"text": "SOB"}, "present": {"text": False}}
    assert T.ExpandAbbreviationsd("text")(absent_text)["inputs"]["text"] == "SOB"
    with pytest.raises(ValueError, match=r"modality 'signal' not in the sample; it has \['image', 'text'\]"):
        T.Bandpassd("signal", sampling_rate=100.0)(sample)
    assert T.Bandpassd("signal", sampling_rate=100.0, allow_missing_keys=True)(sample)["inputs"]["text"] == "SOB"
    assert T.Lowercased(["text"])(sample)["inputs"]["text"] == "sob"


def test_compose_probabilities_and_seeding() -> None:
    x = np.zeros((1, 50), np.float32)
    never = T.Compose([T.ScaleAmplitude(2.0), T.RandGaussianNoise(1.0)], probabilities=[1.0, 0.0])
    np.testing.assert_array_equal(never(x + 1), 2 * (x + 1))
    sometimes = T.Compose([T.RandGaussianNoise(1.0)], probabilities=[0.5]).set_random_state(0)
    applied = [not np.array_equal(sometimes(x), x) for _ in range(200)]
    assert 70 < sum(applied) < 130
    pipeline = T.Compose([T.RandScaleAmplitude(), T.RandTimeShift(5), T.RandGaussianNoise(0.1)], [0.5, 0.5, 1.0])
    first = pipeline.set_random_state(9)(SIGNAL)
    np.testing.assert_array_equal(pipeline.set_random_state(9)(SIGNAL), first)
    assert not np.array_equal(pipeline.set_random_state(10)(SIGNAL), first)
    np.testing.assert_array_equal(pipeline(SIGNAL, rng=np.random.default_rng(1)),
                                  pipeline(SIGNAL, rng=np.random.default_rng(1)))
    with pytest.raises(ValueError, match="expected 2 probabilities"):
        T.Compose([T.Lowercase(), T.Lowercase()], [0.5])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        T.Compose([T.Lowercase()], [1.5])
