"""A trained classifier behind a flat tensor signature, traced to ONNX or TorchScript.

Inputs, for each model modality ``m`` in sorted order: ``m`` (the tensor of
:mod:`medfusion.types`), ``m_present`` (B,) bool and, for the modalities whose collate
makes a mask (text, signal, vitals, video), ``m_mask``. Outputs: ``probability``
(B, K) = softmax(``logits``) and ``logits`` (B, K). A modality missing at inference is
expressed by ``m_present`` False (its rows may hold anything, e.g. zeros).

A trace records one path through the Python code, so the traced graph must not depend
on a Python branch taken on data. :class:`FlatClassifier` follows
:meth:`MultimodalClassifier.fuse <medfusion.models.classifier.MultimodalClassifier.fuse>`
with three differences, each covered by the parity check of every export:

- encoders are called through ``encode`` (no input validation, which only raises; the
  runtime checks inputs, see :mod:`medfusion.deploy.runtime`);
- every encoder runs on every batch, absent rows zeroed. The classifier replaces a
  modality absent from the whole batch by an all-masked placeholder; each fusion masks
  absent rows out, so the outputs agree;
- early fusion's signal and video featurizers average each sample's valid prefix in a
  Python loop over the lengths; here an averaging matrix (B, T, bins) over the same
  adaptive-pooling bins does it in one traced product.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.fusion.base import zero_absent
from medfusion.fusion.featurizers import SignalFeaturizer, VideoFeaturizer
from medfusion.models import MultimodalClassifier

#: Modalities that come with a mask (text tokens, signal samples, observed vitals, video frames).
MASKED_MODALITIES = frozenset({"signal", "text", "video", "vitals"})
#: Output names of every export, in order.
OUTPUTS = ("probability", "logits")
#: Padded axes that stay dynamic in an export: input name -> {axis: name}. Text tokens and
#: video frames are padded to a fixed length instead: the ONNX export of a traced
#: ``nn.MultiheadAttention`` fixes its sequence length.
PADDED_AXES: dict[str, dict[int, str]] = {"signal": {2: "signal_length"}, "signal_mask": {1: "signal_length"}}


def input_names(modalities: Sequence[str]) -> list[str]:
    """Flat input names of a model over ``modalities``: ``m``, ``m_present`` and ``m_mask`` per modality."""
    names = []
    for m in sorted(modalities):
        names += [m, f"{m}_present"] + ([f"{m}_mask"] if m in MASKED_MODALITIES else [])
    return names


def dynamic_axes(name: str) -> dict[int, str]:
    """{axis: name} of the dynamic axes of input or output ``name``: the batch, and padded axes."""
    return {0: "batch", **PADDED_AXES.get(name, {})}


def prefix_average(x: Tensor, mask: Tensor | None, bins: int) -> Tensor:
    """Average each sample's valid prefix along dim 1 into ``bins`` adaptive-pooling bins.

    Bin j of a prefix of n steps covers steps [floor(j n / bins), ceil((j + 1) n / bins)),
    as ``adaptive_avg_pool1d`` of the prefix alone.

    Args:
        x: (B, T, ...).
        mask: (B, T) bool valid prefix, or None (every step valid). A row without a
            valid step averages its first step, as the featurizers do.
        bins: number of output bins.

    Returns:
        (B, bins, ...).
    """
    steps = x.shape[1]
    if mask is None:
        lengths = torch.full((x.shape[0], 1), steps, dtype=torch.long, device=x.device)
    else:
        lengths = mask.sum(dim=1, keepdim=True).clamp_min(1)
    index = torch.arange(bins, device=x.device)
    start = torch.div(index * lengths, bins, rounding_mode="floor")  # (B, bins)
    end = torch.div((index + 1) * lengths + bins - 1, bins, rounding_mode="floor")
    position = torch.arange(steps, device=x.device).view(1, -1, 1)
    inside = (position >= start.unsqueeze(1)) & (position < end.unsqueeze(1))  # (B, T, bins)
    weights = inside.to(x.dtype) / (end - start).unsqueeze(1).to(x.dtype)
    pooled = torch.bmm(weights.transpose(1, 2), x.flatten(2))  # (B, bins, prod(rest))
    return pooled.view(x.shape[0], bins, *x.shape[2:])


class TracedSignalFeaturizer(nn.Module):
    """:class:`~medfusion.fusion.featurizers.SignalFeaturizer` without data-dependent Python branches.

    Inputs: x (B, C, T), mask (B, T) bool or None. Returns (B, C * length).
    """

    def __init__(self, featurizer: SignalFeaturizer) -> None:
        super().__init__()
        self.length, self.out_dim = featurizer.length, featurizer.out_dim

    def forward(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        return prefix_average(x.transpose(1, 2), mask, self.length).transpose(1, 2).flatten(1)


class TracedVideoFeaturizer(nn.Module):
    """:class:`~medfusion.fusion.featurizers.VideoFeaturizer` without data-dependent Python branches.

    Average pooling over a box is separable: each frame is pooled to size x size, then
    the valid frames are averaged into ``frames`` bins. The trace fixes the number of
    frames T (exports pad clips to a fixed length).

    Inputs: x (B, T, C, H, W), mask (B, T) bool or None. Returns (B, C * frames * size**2).
    """

    def __init__(self, featurizer: VideoFeaturizer) -> None:
        super().__init__()
        self.frames, self.size, self.out_dim = featurizer.frames, featurizer.size, featurizer.out_dim

    def forward(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        clips = x.transpose(1, 2)  # (B, C, T, H, W)
        frames = F.adaptive_avg_pool3d(clips, (int(clips.shape[2]), self.size, self.size))
        return prefix_average(frames.transpose(1, 2), mask, self.frames).transpose(1, 2).flatten(1)


_TRACED_FEATURIZERS: dict[type[nn.Module], type[nn.Module]] = {
    SignalFeaturizer: TracedSignalFeaturizer,
    VideoFeaturizer: TracedVideoFeaturizer,
}


class FlatClassifier(nn.Module):
    """A copy of a classifier (eval mode) taking the flat inputs of :func:`input_names`.

    Args:
        model: the trained classifier (left unchanged).

    Inputs: the tensors named by :attr:`names`, in that order. Returns (probability (B, K),
    logits (B, K)).

    Raises:
        ValueError: when called with a wrong number of tensors.
    """

    def __init__(self, model: MultimodalClassifier) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        if self.model.fusion.takes_raw_inputs:
            featurizers = self.model.fusion.featurizers
            for m in list(featurizers):
                traced = _TRACED_FEATURIZERS.get(type(featurizers[m]))
                if traced is not None:
                    featurizers[m] = traced(featurizers[m])
        self.modalities = list(model.modalities)
        self.names = input_names(self.modalities)

    def forward(self, *tensors: Tensor) -> tuple[Tensor, Tensor]:
        if len(tensors) != len(self.names):
            raise ValueError(f"export: expected {len(self.names)} inputs {self.names}, received {len(tensors)}")
        named = dict(zip(self.names, tensors))
        inputs = {m: named[m] for m in self.modalities}
        present = {m: named[f"{m}_present"] for m in self.modalities}
        masks = {m: named[f"{m}_mask"] for m in self.modalities if m in MASKED_MODALITIES}
        model = self.model
        if model.fusion.takes_raw_inputs:
            output = model.fusion(inputs, present, masks)
        else:
            features = {m: model.encoders[m].encode(zero_absent(inputs[m], present[m]), masks.get(m))
                        for m in self.modalities}
            output = model.fusion(features, present)
        logits = model.head(output.fused) if model.head is not None else output.logits
        return torch.softmax(logits, dim=-1), logits


@contextmanager
def tracing() -> Iterator[None]:
    """No gradients, PyTorch's fused attention fast path off (no ONNX form), tracer warnings silenced.

    The trace warnings name the Python branches on data that the trace fixes; every one
    of them only raises on invalid input (see the module docstring).
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
