"""Image explanation maps and the pointing game.

- :func:`image_attention_map`: for cross-attention fusion whose keys include the image,
  the attention mass each image token receives (mean over layers, heads and the real
  query tokens), laid out on the encoder's token grid (row-major cells of the last
  feature map, see :meth:`~medfusion.encoders.image.SpatialEncoder.token_grid`).
- :func:`image_saliency`: integrated gradients (Sundararajan et al., ICML 2017; Captum)
  of the class probability with respect to the image pixels, zero-image baseline with
  the same presence, absolute values summed over channels. Works for every strategy
  that reads an image (early fusion reads it raw, the others through their encoder).
- :func:`pointing_game`: the pointing game of Zhang et al., "Top-down Neural Attention by
  Excitation Backprop" (ECCV 2016): a map scores a hit when its maximum falls inside the
  ground-truth mask (or within ``tolerance`` pixels of it); also the share of the map's
  mass inside the mask.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from medfusion.evaluate.explain_base import (
    DEFAULT_STEPS,
    evaluating,
    explained_class,
    steps_of,
    tile,
    tile_batch,
    tile_output,
)
from medfusion.fusion.base import zero_absent
from medfusion.fusion.cross_attention import CrossAttentionFusion
from medfusion.models.classifier import MultimodalClassifier
from medfusion.types import MultimodalBatch

IMAGE = "image"
UPSAMPLING = ("bilinear", "nearest")


def _has_image_keys(model: MultimodalClassifier) -> bool:
    return isinstance(model.fusion, CrossAttentionFusion) and IMAGE in model.fusion.keys


def image_attention_map(model: MultimodalClassifier, batch: MultimodalBatch,
                        grid: tuple[int, int] | None = None) -> Tensor:
    """Cross-attention mass on each image token, on the token grid.

    Args:
        model: a classifier with cross-attention fusion whose keys include ``"image"``.
        batch: the samples; each real query token's weights are averaged.
        grid: (H', W') token grid; by default the image encoder's ``token_grid`` of the
            batch's image size.

    Returns:
        (B, H', W') non-negative map; it sums to the image's share of the query tokens'
        attention (1 when the image is the only present key), and is zero for samples
        without the query or the image.

    Raises:
        ValueError: on another fusion, no image key, a grid not matching the image
            tokens, or a bad batch.
    """
    if not _has_image_keys(model):
        keys = model.fusion.keys if isinstance(model.fusion, CrossAttentionFusion) else None
        raise ValueError(f"image attention map: expected cross-attention fusion with 'image' among its keys, "
                         f"received {type(model.fusion).__name__} with keys {keys}")
    present = model.presence(batch)
    if grid is None:
        if IMAGE not in batch.inputs:
            raise ValueError("image attention map: the batch has no image input; pass grid=(H', W')")
        grid = model.encoders[IMAGE].token_grid(tuple(batch.inputs[IMAGE].shape[2:]))
    grid = tuple(grid)
    if len(grid) != 2 or any(not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(f"image attention map: expected a 2-D token grid (H', W') of positive ints, received {grid}")
    size = batch.batch_size
    if not present[IMAGE].any():
        return torch.zeros(size, *grid, device=present[IMAGE].device)
    query = model.fusion.query
    with evaluating(model), torch.no_grad():
        features = model.encode(batch, present)
        output = model.fuse(batch, present, features, return_attention=True)
    weights = output.attention[f"{query}->{IMAGE}"].mean(dim=(0, 2))  # (B, Nq, N_image)
    if weights.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"image attention map: the model has {weights.shape[-1]} image tokens, "
                         f"which the grid {grid} does not hold")
    real = (features[query].token_mask & present[query].unsqueeze(1)).to(weights.dtype)  # (B, Nq)
    maps = (weights * real.unsqueeze(-1)).sum(1) / real.sum(1, keepdim=True).clamp_min(1)
    return maps.reshape(size, *grid)


def image_saliency(model: MultimodalClassifier, batch: MultimodalBatch, *, target: int | Tensor | None = None,
                   n_steps: int = DEFAULT_STEPS, internal_batch_size: int | None = None) -> Tensor:
    """Integrated-gradients saliency of the image pixels.

    Args:
        model: any classifier with an ``"image"`` modality.
        batch: samples with an (B, C, H, W) image input.
        target: class explained: None (predicted class), an int or (B,) indices.
        n_steps: Gauss-Legendre integration steps (>= 1).
        internal_batch_size: images per forward pass of the interpolated batch (at
            least B; None: all B * n_steps at once, which may need much memory).

    Returns:
        (B, H, W) = sum over channels of |IG|; zero for samples without the image.

    Raises:
        ValueError: when the model or batch has no image, on ``n_steps < 1`` or a bad target.
    """
    from captum.attr import IntegratedGradients

    if IMAGE not in model.modalities or IMAGE not in batch.inputs:
        raise ValueError(f"image saliency: expected a model and batch with an image, received model modalities "
                         f"{model.modalities} and batch modalities {batch.modalities}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"image saliency: expected n_steps to be an int >= 1, received {n_steps!r}")
    image = batch.inputs[IMAGE]
    if image.ndim != 4:
        raise ValueError(f"image saliency: expected a (B, C, H, W) image, received shape {tuple(image.shape)}")
    present = model.presence(batch)
    size = batch.batch_size
    if not present[IMAGE].any():
        return torch.zeros(size, *image.shape[2:], device=image.device)
    with evaluating(model):
        chosen = explained_class(model, batch, present, target)
        features = None
        if not model.fusion.takes_raw_inputs:
            with torch.no_grad():
                features = model.encode(batch, present)

        def forward(x: Tensor) -> Tensor:
            n = steps_of(x, size)
            tiled_present = {m: tile(p, n) for m, p in present.items()}
            if features is None:
                tiled = tile_batch(batch, n)
                tiled.inputs[IMAGE] = x
                return torch.softmax(model.fuse(tiled, tiled_present).logits, dim=-1)
            tiled_features = {m: tile_output(f, n) for m, f in features.items()}
            tiled_features[IMAGE] = model.encoders[IMAGE](x, None, tiled_present[IMAGE])
            return torch.softmax(model.fuse(batch, tiled_present, tiled_features).logits, dim=-1)

        x = zero_absent(image, present[IMAGE]).detach()
        attribution = IntegratedGradients(forward).attribute(x, baselines=torch.zeros_like(x), target=chosen,
                                                             n_steps=n_steps, internal_batch_size=internal_batch_size)
    saliency = attribution.detach().abs().sum(dim=1)
    return zero_absent(saliency, present[IMAGE])


def image_explanation_map(model: MultimodalClassifier, batch: MultimodalBatch, *,
                          target: int | Tensor | None = None, n_steps: int = DEFAULT_STEPS,
                          internal_batch_size: int | None = None) -> tuple[Tensor, str]:
    """The image map a strategy gives: attention for cross-attention with image keys, else IG saliency.

    Returns:
        (maps (B, h, w), method): ``"attention_map"`` (token grid, ``target`` unused) or
        ``"integrated_gradients"`` (pixel grid).

    Raises:
        ValueError: when the model or batch has no image.
    """
    if _has_image_keys(model):
        return image_attention_map(model, batch), "attention_map"
    saliency = image_saliency(model, batch, target=target, n_steps=n_steps, internal_batch_size=internal_batch_size)
    return saliency, "integrated_gradients"


def pointing_game(maps: Tensor, masks: Tensor, *, tolerance: float = 0.0,
                  mode: Literal["bilinear", "nearest"] = "bilinear") -> dict[str, float]:
    """Pointing-game hit rate and mass-in-mask of explanation maps against ground-truth masks.

    Each map is upsampled to its mask's size: ``"bilinear"`` (default; align_corners=False,
    so each cell value sits at the cell centre) or ``"nearest"`` (each cell becomes a
    block; PyTorch's ``nearest-exact``). The point of a map is its first maximal pixel
    in row-major order; it is a hit when a mask pixel lies within Euclidean distance
    ``tolerance`` (0: the point itself is in the mask). A constant map (e.g. all zero)
    points nowhere and counts as a miss. Samples with an empty mask are skipped.

    Args:
        maps: (B, h, w) non-negative maps (attention, |IG|).
        masks: (B, H, W) bool ground truth.
        tolerance: pixels (>= 0) around the mask that still count as a hit (Zhang et al.
            use 15 at 224 px).
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``hit_rate`` (hits / scored samples), ``mass_in_mask`` (mean over scored samples of
        the upsampled map's mass inside the mask / its total; 0 for an all-zero map),
        ``samples`` (scored), ``skipped`` (empty masks). Rates are NaN when nothing is scored.

    Raises:
        ValueError: on shapes, dtypes, negative or non-finite map values, a negative
            tolerance or an unknown mode.
    """
    if not isinstance(maps, Tensor) or maps.ndim != 3 or not maps.is_floating_point():
        raise ValueError(f"pointing game: expected float maps (B, h, w), received "
                         f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__}")
    if not isinstance(masks, Tensor) or masks.ndim != 3 or masks.dtype != torch.bool or masks.shape[0] != maps.shape[0]:
        received = f"{tuple(masks.shape)} {masks.dtype}" if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"pointing game: expected bool masks (B={maps.shape[0]}, H, W), received {received}")
    if not torch.isfinite(maps).all() or (maps < 0).any():
        raise ValueError(f"pointing game: expected finite non-negative maps, received min {maps.min().item()}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"pointing game: expected tolerance >= 0 pixels, received {tolerance!r}")
    if mode not in UPSAMPLING:
        raise ValueError(f"pointing game: unknown mode {mode!r}; expected one of {list(UPSAMPLING)}")
    masks = masks.to(maps.device)
    height, width = masks.shape[1:]
    if mode == "bilinear":
        upsampled = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    else:
        upsampled = F.interpolate(maps[:, None], size=(height, width), mode="nearest-exact")[:, 0]
    flat = upsampled.flatten(1)
    point = flat.argmax(dim=1)
    rows, cols = point // width, point % width
    ys = torch.arange(height, device=maps.device).view(1, -1, 1)
    xs = torch.arange(width, device=maps.device).view(1, 1, -1)
    distance2 = (ys - rows.view(-1, 1, 1)) ** 2 + (xs - cols.view(-1, 1, 1)) ** 2
    near = distance2.to(maps.dtype) <= float(tolerance) ** 2
    informative = flat.max(dim=1).values > flat.min(dim=1).values
    hits = (masks & near).flatten(1).any(dim=1) & informative
    total = flat.sum(dim=1)
    inside = (upsampled * masks).flatten(1).sum(dim=1)
    mass = torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), total.new_zeros(()))
    scored = masks.flatten(1).any(dim=1)
    count = int(scored.sum())
    if count == 0:
        return {"hit_rate": float("nan"), "mass_in_mask": float("nan"), "samples": 0, "skipped": maps.shape[0]}
    return {
        "hit_rate": float(hits[scored].float().mean()),
        "mass_in_mask": float(mass[scored].mean()),
        "samples": count,
        "skipped": maps.shape[0] - count,
    }
