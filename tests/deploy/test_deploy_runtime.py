"""Model-level exports (signal, video, volume), the traced featurizers, and the runtime's input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factories import make_batch, model_config
from medfusion.deploy.export import export_spec, load_runtime, write_model
from medfusion.deploy.graph import TracedSignalFeaturizer, TracedVideoFeaturizer
from medfusion.deploy.runtime import OnnxClassifier, flatten_batch
from medfusion.fusion.featurizers import SignalFeaturizer, VideoFeaturizer
from medfusion.models import build_model
from medfusion.types import MultimodalBatch

CLASSES = ["a", "b", "c"]


def padded_batch(modalities, size: int, seed: int, steps: int = 64, frames: int = 3, present=None) -> MultimodalBatch:
    """A random batch whose signals and clips have valid prefixes of different lengths."""
    batch = make_batch(modalities, size, seed, present=present)
    g = torch.Generator().manual_seed(seed)
    if "signal" in modalities:
        batch.masks["signal"] = torch.arange(steps) < torch.randint(steps // 3, steps + 1, (size, 1), generator=g)
        batch.inputs["signal"] = torch.randn(size, 3, steps, generator=g) * batch.masks["signal"][:, None]
    if "video" in modalities:
        batch.masks["video"] = torch.arange(frames) < torch.randint(1, frames + 1, (size, 1), generator=g)
        batch.inputs["video"] = torch.randn(size, frames, 1, 32, 32, generator=g)
    return batch


def export_small(modalities, variant: str, format: str, path, encoders=None):
    """(model, runtime) of a small random-weight model exported to ``path``."""
    torch.manual_seed(0)
    model = build_model(model_config(variant, modalities, encoders)).eval()
    example = padded_batch(modalities, 4, 0)
    spec = export_spec(model, example, format, CLASSES, text_length=12)
    write_model(model, example, path, spec)
    return model, load_runtime(path, spec)


def test_traced_featurizers_match_the_prefix_pooling_of_the_originals() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([0, 1, 3, 7, 40, 64])
    mask = torch.arange(64) < lengths[:, None]
    signal = SignalFeaturizer(channels=2, length=8)
    x = torch.randn(6, 2, 64, generator=g) * mask[:, None]
    for m in (mask, None):
        assert torch.allclose(TracedSignalFeaturizer(signal)(x, m), signal(x, m), atol=1e-6)
    video = VideoFeaturizer(channels=1, frames=2, size=4)
    clips = torch.randn(6, 5, 1, 8, 8, generator=g)
    frames = torch.arange(5) < torch.tensor([0, 1, 2, 3, 5, 4])[:, None]
    for m in (frames, None):
        assert torch.allclose(TracedVideoFeaturizer(video)(clips, m), video(clips, m), atol=1e-6)


CASES = [
    (("signal", "text"), "early", None, "onnx"),
    (("signal", "text"), "intermediate", {"signal": "lstm"}, "onnx"),
    (("signal", "text"), "intermediate", {"signal": "lstm"}, "torchscript"),
    (("signal", "text"), "cross_attention-bidirectional", None, "onnx"),
    (("text", "video"), "early", None, "onnx"),
    (("text", "video"), "early", None, "torchscript"),
    (("text", "video"), "late-mlp", None, "onnx"),
    (("text", "volume"), "joint_embedding", None, "onnx"),
]


@pytest.mark.parametrize(("modalities", "variant", "encoders", "format"), CASES)
def test_signal_video_volume_models_match_pytorch_after_export(tmp_path, modalities, variant, encoders,
                                                                format) -> None:
    model, runtime = export_small(modalities, variant, format, tmp_path / "model", encoders)
    for seed, size, steps, frames in ((1, 5, 40, 3), (2, 1, 90, 1), (3, 7, 64, 2)):
        g = torch.Generator().manual_seed(seed)
        present = {m: torch.rand(size, generator=g) > 0.3 for m in modalities}
        present["text"] = present["text"] | ~present[modalities[0] if modalities[0] != "text" else modalities[1]]
        batch = padded_batch(modalities, size, seed, steps, frames, present)
        with torch.no_grad():
            expected = model(batch).logits.softmax(dim=-1).numpy()
        assert np.abs(runtime.predict_proba(batch) - expected).max() <= 1e-4, (seed, size, steps, frames)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """(model, runtime) of an intermediate-fusion image + text + vitals model in ONNX."""
    path = tmp_path_factory.mktemp("runtime") / "model.onnx"
    return export_small(("image", "text", "vitals"), "intermediate", "onnx", path)


def test_runtime_fills_left_out_modalities_and_default_masks(small_onnx) -> None:
    model, runtime = small_onnx
    batch = make_batch(("image", "text", "vitals"), 3, 5)
    only_vitals = MultimodalBatch(inputs={"vitals": batch.inputs["vitals"]})  # no mask: nothing missing
    only_text = MultimodalBatch(inputs={"text": batch.inputs["text"]})  # mask: ids != pad id
    with torch.no_grad():
        for case in (only_vitals, only_text):
            expected = model(case).logits.softmax(dim=-1).numpy()
            assert np.abs(runtime.predict_proba(case) - expected).max() <= 1e-4
    flat = flatten_batch(only_vitals)
    flat["vitals"] = np.where(batch.masks["vitals"].numpy(), flat["vitals"], np.nan)  # NaN marks a missing value
    masked = MultimodalBatch(inputs={"vitals": batch.inputs["vitals"]}, masks={"vitals": batch.masks["vitals"]})
    with torch.no_grad():
        expected = model(masked).logits.softmax(dim=-1).numpy()
    assert np.abs(runtime.predict_proba(flat) - expected).max() <= 1e-4


def test_runtime_rejects_bad_inputs_with_the_input_named(small_onnx) -> None:
    _, runtime = small_onnx
    flat = flatten_batch(make_batch(("image", "text", "vitals"), 3, 5))
    bad = {
        r"unknown input\(s\) \['audio'\]": {**flat, "audio": np.zeros(3)},
        "text: expected an integer dtype": {**flat, "text": flat["text"].astype(np.float32)},
        r"image: expected shape \(3, 1, 32, 32\)": {**flat, "image": np.zeros((3, 1, 16, 16), np.float32)},
        "image_present: expected a bool array": {**flat, "image_present": np.ones(3, dtype=np.int64)},
        "expected at most 12 tokens": {**flat, "text": np.ones((3, 20), np.int64),
                                       "text_mask": np.ones((3, 20), bool)},
        "sample\\(s\\) \\[1\\] have no modality present": {
            **flat, **{f"{m}_present": np.array([True, False, True]) for m in ("image", "text", "vitals")}},
        "batch has no inputs": {},
        r"received \['image_present'\] without the input": {"text": flat["text"],
                                                          "image_present": flat["image_present"]},
    }
    for message, inputs in bad.items():
        with pytest.raises(ValueError, match=message):
            runtime.predict_proba(inputs)
    image = flat["image"].copy()
    image[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"image: NaN or Inf in sample\(s\) \[1\]"):
        runtime.predict_proba({**flat, "image": image})
    absent = {**flat, "image": image, "image_present": np.array([True, False, True])}
    assert np.isfinite(runtime.predict_proba(absent)).all()  # an absent sample's values are never read


def test_runtime_without_a_sidecar_is_a_clear_error(small_onnx, tmp_path) -> None:
    _, runtime = small_onnx
    copy = tmp_path / "model.onnx"
    copy.write_bytes(runtime.path.read_bytes())
    with pytest.raises(ValueError, match="not an export, model.onnx.json is missing"):
        OnnxClassifier(copy)
