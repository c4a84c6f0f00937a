"""Cost measurements: hand-computed MAC counts, parameter parts, timing sanity, a known allocation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from factories import FUSION_VARIANTS, make_batch, model_config
from medfusion.evaluate.cost import (
    count_macs,
    count_parameters,
    cost_report,
    measure_latency,
    measure_peak_memory,
    measure_throughput,
    measure_training_throughput,
)
from medfusion.models import build_model
from medfusion.types import MultimodalBatch

MODALITIES = ("text", "image")
MB = 1_000_000


class OnVitals(nn.Module):
    """Applies ``layer`` to the vitals of a MultimodalBatch: a bare-layer model wrapper."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, batch: MultimodalBatch) -> torch.Tensor:
        return self.layer(batch.inputs["vitals"])


class Allocates(nn.Module):
    """Creates float32 tensors of ``sizes_mb`` MB; ``keep`` holds them all alive at once."""

    def __init__(self, sizes_mb: list[int], keep: bool) -> None:
        super().__init__()
        self.sizes_mb, self.keep = sizes_mb, keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        held, total = [], x.sum()
        for size in self.sizes_mb:
            t = torch.ones(size * MB // 4)
            total = total + t[0]
            if self.keep:
                held.append(t)
            del t
        return total


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded: timings stay short on a busy machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(variant: str = "intermediate", **overrides) -> nn.Module:
    torch.manual_seed(0)
    return build_model(model_config(variant, MODALITIES, **overrides))


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()])


def assert_unchanged(model: nn.Module, before) -> None:
    state, flags = before
    after = model.state_dict()
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(value, after[key]), key
    assert [m.training for m in model.modules()] == flags


# --------------------------------------------------------------------------- MACs


def test_linear_macs_per_sample():
    model = OnVitals(nn.Linear(10, 20))
    batch = MultimodalBatch(inputs={"vitals": torch.randn(4, 10)})
    assert count_macs(model, batch) == 200


@pytest.mark.parametrize(
    ("conv", "shape", "expected"),
    [
        # every output value: C_in/groups * k*k MACs; out 8 x 16 x 16 (padding keeps size)
        (nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16), 8 * 16 * 16 * 3 * 3 * 3),
        # stride 2, no padding: (17 - 3) // 2 + 1 = 8; two groups of 2 input channels
        (nn.Conv2d(4, 8, 3, stride=2, groups=2), (4, 17, 17), 8 * 8 * 8 * 2 * 3 * 3),
        (nn.Conv1d(3, 5, 4), (3, 20), 5 * 17 * 3 * 4),
    ],
)
def test_conv_macs_hand_computed(conv, shape, expected):
    assert count_macs(conv, torch.randn(2, *shape)) == expected


def transformer_layer_macs(length: int, dim: int, ffn: int) -> int:
    # QKV 3·d², output projection d², FFN 2·d·f per token; QKᵀ and AV 2·L²·d per sequence
    return length * (4 * dim * dim + 2 * dim * ffn) + 2 * length * length * dim


@pytest.mark.parametrize("frozen", [False, True])
def test_transformer_layer_macs_with_and_without_fast_path(frozen):
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    layer.requires_grad_(not frozen)  # frozen: PyTorch takes the fused inference kernel
    assert count_macs(layer, torch.randn(3, 10, 16)) == transformer_layer_macs(10, 16, 32)


def test_cpu_attention_kernel_is_counted():
    class Attention(nn.Module):
        def forward(self, q):
            k = torch.ones(q.shape[0], 2, 12, 8)
            return F.scaled_dot_product_attention(q, k, k)

    # 2 heads x 10 queries x 12 keys x (8 for QKᵀ + 8 for AV)
    assert count_macs(Attention(), torch.randn(2, 2, 10, 8)) == 2 * 10 * 12 * (8 + 8)


def test_lstm_macs_hand_computed():
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 8, num_layers=2, batch_first=True, bidirectional=True)

        def forward(self, x):
            return self.lstm(x)[0]

    # per step and direction: W_ih (4h x in) + W_hh (4h x h); layer 2 reads 2h = 16 features
    per_step = 2 * (4 * 8 * 3 + 4 * 8 * 8) + 2 * (4 * 8 * 16 + 4 * 8 * 8)
    assert count_macs(Recurrent(), torch.randn(4, 20, 3)) == 20 * per_step


@pytest.mark.parametrize("variant", sorted(FUSION_VARIANTS))
def test_tiny_model_macs_are_per_sample(variant):
    model = tiny_model(variant)
    one = count_macs(model, make_batch(MODALITIES, batch_size=1))
    assert one > 0
    assert count_macs(model, make_batch(MODALITIES, batch_size=3)) == pytest.approx(one)


def test_bad_batch_raises():
    with pytest.raises(ValueError, match="MultimodalBatch or a tensor"):
        count_macs(nn.Linear(2, 2), [1, 2])
    with pytest.raises(ValueError, match="at least one sample"):
        count_macs(nn.Linear(2, 2), torch.zeros(0, 2))


# --------------------------------------------------------------------------- parameters


def test_parameter_parts_of_tiny_model():
    model = tiny_model()
    counts = count_parameters(model)
    assert list(counts["parts"]) == ["encoder/image", "encoder/text", "fusion", "head"]
    assert counts["parts"]["encoder/text"]["total"] == sum(p.numel() for p in model.encoders["text"].parameters())
    assert counts["parts"]["head"]["total"] == sum(p.numel() for p in model.head.parameters())
    assert counts["total"] == sum(part["total"] for part in counts["parts"].values())
    assert counts["trainable"] == counts["total"] == sum(p.numel() for p in model.parameters())


def test_frozen_encoder_is_not_trainable():
    model = tiny_model()
    model.encoders["image"].requires_grad_(False)
    counts = count_parameters(model)
    assert counts["parts"]["encoder/image"]["trainable"] == 0
    assert counts["trainable"] == counts["total"] - counts["parts"]["encoder/image"]["total"]


def test_late_and_early_fusion_parts():
    late = count_parameters(tiny_model("late-average"))
    assert late["parts"]["head"] == {"total": 0, "trainable": 0}
    early = count_parameters(tiny_model("early"))
    assert list(early["parts"]) == ["fusion", "head"]


def test_generic_module_parts():
    class WithScale(nn.Sequential):
        def __init__(self) -> None:
            super().__init__(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
            self.scale = nn.Parameter(torch.ones(1))

    counts = count_parameters(WithScale())
    assert counts["parts"] == {"0": {"total": 15, "trainable": 15}, "1": {"total": 0, "trainable": 0},
                               "2": {"total": 6, "trainable": 6}, "other": {"total": 1, "trainable": 1}}
    assert counts["total"] == 22


# --------------------------------------------------------------------------- time


def test_latency_percentiles_ordered():
    latency = measure_latency(tiny_model(), make_batch(MODALITIES, batch_size=1), repeats=12, warmup=2)
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
    assert latency["threads"] == 1
    assert latency["repeats"] == 12 and latency["batch_size"] == 1


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}])
def test_latency_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
        measure_latency(nn.Linear(2, 2), torch.zeros(1, 2), **kwargs)


def test_throughput_positive():
    assert measure_throughput(tiny_model(), make_batch(MODALITIES, batch_size=4), seconds=0.05) > 0
    with pytest.raises(ValueError, match="seconds"):
        measure_throughput(nn.Linear(2, 2), torch.zeros(1, 2), seconds=0)


def test_training_throughput_leaves_model_and_rng_alone():
    model = tiny_model()
    model.modality_dropout = 0.5  # training consumes random numbers
    model.eval()
    before = snapshot(model)
    rng = torch.get_rng_state()
    assert measure_training_throughput(model, make_batch(MODALITIES, batch_size=4), steps=2) > 0
    assert_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng)


def test_training_throughput_generic_module_and_unlabelled_batch():
    model = OnVitals(nn.Linear(10, 3))
    assert measure_training_throughput(model, MultimodalBatch(inputs={"vitals": torch.randn(4, 10)}), steps=1) > 0
    with pytest.raises(ValueError, match="trainable"):
        measure_training_throughput(nn.Linear(2, 2).requires_grad_(False), torch.zeros(1, 2), steps=1)


# --------------------------------------------------------------------------- memory


def test_peak_memory_of_known_allocation():
    memory = measure_peak_memory(Allocates([100], keep=False), torch.zeros(1))
    assert 95 <= memory["peak_mb"] <= 105
    assert memory["retained_mb"] < 1  # the tensor is freed before the forward returns


def test_peak_memory_is_a_running_peak():
    freed = measure_peak_memory(Allocates([60, 60], keep=False), torch.zeros(1))
    held = measure_peak_memory(Allocates([60, 60], keep=True), torch.zeros(1))
    assert 57 <= freed["peak_mb"] <= 66  # one 60 MB tensor at a time
    assert 114 <= held["peak_mb"] <= 126  # both alive at once
    assert freed["allocated_mb"] >= 114


def test_peak_memory_grows_with_batch():
    model = tiny_model()
    small = measure_peak_memory(model, make_batch(MODALITIES, batch_size=2))["peak_mb"]
    large = measure_peak_memory(model, make_batch(MODALITIES, batch_size=16))["peak_mb"]
    assert 0 < small < large


# --------------------------------------------------------------------------- report


@pytest.mark.parametrize("training", [False, True])
def test_cost_report_is_json_ready_and_leaves_model_alone(training):
    model = tiny_model("cross_attention")
    model.train(training)
    model.encoders["image"].eval()  # a mixed state must come back module by module
    before = snapshot(model)
    report = cost_report(model, make_batch(MODALITIES, batch_size=1), make_batch(MODALITIES, batch_size=8),
                         repeats=5, warmup=1, seconds=0.05, steps=1)
    assert_unchanged(model, before)
    assert set(report) == {"parameters", "macs_per_sample", "latency_b1_p50_ms", "latency_b1_p90_ms",
                           "latency_b1_p99_ms", "throughput_b32", "peak_memory_mb", "train_samples_per_s",
                           "threads", "batch_sizes"}
    assert json.loads(json.dumps(report)) == report
    assert report["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert report["macs_per_sample"] > 0 and report["peak_memory_mb"] > 0
    assert 0 < report["latency_b1_p50_ms"] <= report["latency_b1_p99_ms"]
    assert report["throughput_b32"] > 0 and report["train_samples_per_s"] > 0
    assert report["batch_sizes"] == [1, 8] and report["threads"] == 1


def test_forward_measurements_restore_flags():
    model = tiny_model()
    model.train()
    model.fusion.eval()
    before = snapshot(model)
    batch = make_batch(MODALITIES, batch_size=2)
    count_macs(model, batch)
    measure_latency(model, batch, repeats=2, warmup=0)
    measure_throughput(model, batch, seconds=0.01)
    measure_peak_memory(model, batch)
    assert_unchanged(model, before)
