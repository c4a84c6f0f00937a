"""Small inputs and model configs shared by the tests (imported as ``factories``)."""

from __future__ import annotations

import copy

import torch

from medfusion.types import MultimodalBatch

VOCAB = 50

#: Small encoder settings per (modality, registered name).
ENCODER_PARAMS: dict[tuple[str, str], dict] = {
    ("text", "transformer"): {"vocab_size": VOCAB, "dim": 16, "depth": 1, "heads": 2, "max_length": 12},
    ("text", "pretrained"): {"proj_dim": 16, "max_length": 12},
    ("image", "cnn"): {"in_channels": 1, "widths": [4, 8], "out_dim": 16, "norm_groups": 2},
    ("image", "densenet121"): {"in_channels": 1, "out_dim": 16},
    ("image", "vit"): {"in_channels": 1, "img_size": 32, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32,
                       "num_layers": 1, "num_heads": 2, "out_dim": 16},
    ("image", "efficientnet_lite0"): {"in_channels": 1, "out_dim": 16},
    ("image", "patch_cnn"): {"in_channels": 1, "widths": [4, 8], "strides": [2, 2], "out_dim": 16},
    ("volume", "cnn"): {"in_channels": 1, "widths": [4, 8], "out_dim": 16, "norm_groups": 2},
    ("volume", "densenet121"): {"in_channels": 1, "out_dim": 16},
    ("volume", "patch_cnn"): {"in_channels": 1, "widths": [4, 8], "strides": [2, 2], "out_dim": 16},
    ("volume", "vit"): {"in_channels": 1, "img_size": 32, "patch_size": 16, "hidden_size": 16, "mlp_dim": 32,
                        "num_layers": 1, "num_heads": 2, "out_dim": 16},
    ("signal", "resnet1d"): {"in_channels": 3, "widths": [8, 16], "out_dim": 16, "norm_groups": 4},
    ("signal", "lstm"): {"in_channels": 3, "hidden": 8, "out_dim": 16},
    ("vitals", "mlp"): {"num_features": 5, "hidden": 16, "out_dim": 16},
    ("video", "frames_transformer"): {"in_channels": 1, "frame_widths": [4, 8], "dim": 16, "heads": 2,
                                      "max_frames": 8},
}

DEFAULT_ENCODER = {"text": "transformer", "image": "cnn", "volume": "cnn", "signal": "resnet1d",
                   "vitals": "mlp", "video": "frames_transformer"}

#: Early-fusion featurizer settings matching the inputs below.
FEATURIZER_PARAMS = {
    "text": {"buckets": 32},
    "image": {"channels": 1, "size": 4},
    "volume": {"channels": 1, "size": 2},
    "signal": {"channels": 3, "length": 8},
    "vitals": {"num_features": 5},
    "video": {"channels": 1, "frames": 2, "size": 4},
}

#: Fusion variants: id -> fusion config.
FUSION_VARIANTS: dict[str, dict] = {
    "early": {"name": "early", "params": {"hidden": 16}},
    "intermediate": {"name": "intermediate"},
    "late-average": {"name": "late", "params": {"rule": "average", "hidden": 8}},
    "late-weighted": {"name": "late", "params": {"rule": "weighted", "hidden": 8}},
    "late-max": {"name": "late", "params": {"rule": "max", "hidden": 8}},
    "late-learned": {"name": "late", "params": {"rule": "learned", "hidden": 8}},
    "late-mlp": {"name": "late", "params": {"rule": "mlp", "hidden": 8}},
    "cross_attention": {"name": "cross_attention", "params": {"query": "text", "dim": 16, "heads": 2}},
    "cross_attention-bidirectional": {"name": "cross_attention",
                                      "params": {"query": "text", "dim": 16, "heads": 2, "bidirectional": True,
                                                 "layers": 2}},
    "joint_embedding": {"name": "joint_embedding", "params": {"embed_dim": 16}},
}

COMBINATIONS = {
    "text+image": ("text", "image"),
    "text+signal": ("text", "signal"),
    "text+video": ("text", "video"),
    "image+vitals+text": ("image", "vitals", "text"),
    "text+volume": ("text", "volume"),
}


def fusion_config(variant: str, modalities) -> dict:
    """Fusion config of ``variant``, with user weights filled in for the weighted rule."""
    config = {"name": FUSION_VARIANTS[variant]["name"], "params": dict(FUSION_VARIANTS[variant].get("params", {}))}
    if variant == "late-weighted":
        config["params"]["weights"] = {m: float(i + 1) for i, m in enumerate(sorted(modalities))}
    return config


def model_config(variant: str, modalities, encoders: dict[str, str] | None = None) -> dict:
    """A small model config over ``modalities``; ``encoders`` overrides registered names."""
    encoders = encoders or {}
    spec = {}
    for m in modalities:
        name = encoders.get(m, DEFAULT_ENCODER[m])
        spec[m] = {"encoder": {"name": name, "params": copy.deepcopy(ENCODER_PARAMS[(m, name)])},
                   "featurizer": dict(FEATURIZER_PARAMS[m])}
    return {"num_classes": 3, "modalities": spec, "fusion": fusion_config(variant, modalities)}


def make_inputs(modalities, batch_size: int = 4, seed: int = 0, text_vocab: int = VOCAB):
    """Random valid inputs and masks for ``modalities`` (text rows are padded to different lengths)."""
    g = torch.Generator().manual_seed(seed)
    inputs, masks = {}, {}
    for m in modalities:
        if m == "text":
            ids = torch.randint(1, text_vocab, (batch_size, 10), generator=g)
            lengths = torch.arange(batch_size) % 5 + 5
            masks["text"] = torch.arange(10).unsqueeze(0) < lengths.unsqueeze(1)
            inputs["text"] = torch.where(masks["text"], ids, 0)
        elif m == "image":
            inputs[m] = torch.randn(batch_size, 1, 32, 32, generator=g)
        elif m == "volume":
            inputs[m] = torch.randn(batch_size, 1, 32, 32, 32, generator=g)
        elif m == "signal":
            inputs[m] = torch.randn(batch_size, 3, 64, generator=g)
        elif m == "vitals":
            inputs[m] = torch.randn(batch_size, 5, generator=g)
            masks[m] = torch.rand(batch_size, 5, generator=g) > 0.2
        elif m == "video":
            inputs[m] = torch.randn(batch_size, 3, 1, 32, 32, generator=g)
    return inputs, masks


def make_batch(modalities, batch_size: int = 4, seed: int = 0, present=None, text_vocab: int = VOCAB,
               num_classes: int = 3) -> MultimodalBatch:
    """A random valid batch; ``present`` defaults to every modality present."""
    inputs, masks = make_inputs(modalities, batch_size, seed, text_vocab)
    labels = torch.arange(batch_size) % num_classes
    return MultimodalBatch(inputs=inputs, present=dict(present or {}), masks=masks, labels=labels)


def each_lacks_one(modalities, batch_size: int) -> dict[str, torch.Tensor]:
    """Presence where sample i lacks modality i % M (every sample keeps the others)."""
    names = sorted(modalities)
    return {m: torch.tensor([i % len(names) != j for i in range(batch_size)]) for j, m in enumerate(names)}


def first_ones_lack_one(modalities, batch_size: int) -> dict[str, torch.Tensor]:
    """Presence where sample i < M lacks modality i and the later samples have every modality."""
    names = sorted(modalities)
    return {m: torch.arange(batch_size) != j for j, m in enumerate(names)}


def assert_all_parameters_have_gradients(model: torch.nn.Module) -> None:
    """Every trainable parameter has a finite, not-all-zero gradient."""
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient: {missing}"
    nonfinite = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p.grad).all()]
    assert not nonfinite, f"non-finite gradient: {nonfinite}"
    zero = [n for n, p in model.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
    assert not zero, f"all-zero gradient: {zero}"
