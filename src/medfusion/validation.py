"""Input checks that raise ``ValueError`` naming the modality, the expected and the received value.

Never ``assert``: Python drops asserts under ``-O``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def check_tensor(
    modality: str,
    x: Tensor,
    *,
    ndim: int,
    layout: str,
    floating: bool = True,
    sizes: Mapping[int, int] | None = None,
    present: Tensor | None = None,
    finite: bool = True,
) -> None:
    """Check rank, dtype, fixed sizes and finiteness of one modality's input.

    Args:
        modality: name used in the error message.
        x: the input tensor.
        ndim: expected number of dimensions.
        layout: human-readable layout for messages, e.g. ``"(B, C, H, W)"``.
        floating: expect a floating dtype (else an integer dtype).
        sizes: {dim: expected size} for dimensions fixed by the model (e.g. channels).
        present: (B,) bool; only present rows must be finite.
        finite: check finiteness (off when missing values are marked by a mask).

    Raises:
        ValueError: on a wrong type, rank, dtype, size, or a NaN/Inf in a present sample.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{modality}: expected a torch.Tensor {layout}, received {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(
            f"{modality}: expected a {ndim}-D tensor {layout}, received shape {tuple(x.shape)}"
        )
    if floating and not x.is_floating_point():
        raise ValueError(f"{modality}: expected a floating dtype, received {x.dtype}")
    if not floating and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"{modality}: expected an integer dtype (token ids), received {x.dtype}")
    for dim, size in (sizes or {}).items():
        if x.shape[dim] != size:
            raise ValueError(
                f"{modality}: expected size {size} at dim {dim} of {layout}, "
                f"received shape {tuple(x.shape)}"
            )
    if floating and finite:
        rows = x if present is None else x[present]
        if rows.numel() == 0:
            return
        bad = ~torch.isfinite(rows.reshape(rows.shape[0], -1)).all(dim=1)
        if bad.any():
            index = torch.arange(x.shape[0], device=x.device)
            index = index if present is None else index[present]
            raise ValueError(
                f"{modality}: NaN or Inf in sample(s) {index[bad].tolist()[:10]}; "
                "expected finite values (mark a missing modality absent instead)"
            )


def check_mask(modality: str, mask: Tensor, shape: Sequence[int], what: str) -> None:
    """Check that a boolean mask has the expected shape.

    Raises:
        ValueError: on a non-bool dtype or a wrong shape.
    """
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        received = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{modality}: expected {what} as a bool tensor, received {received}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{modality}: expected {what} of shape {tuple(shape)}, received {tuple(mask.shape)}"
        )


def check_any_present(present: Mapping[str, Tensor]) -> None:
    """Every sample must have at least one modality.

    Raises:
        ValueError: naming the indices of samples with no modality present.
    """
    stacked = torch.stack([present[m] for m in sorted(present)], dim=1)
    empty = ~stacked.any(dim=1)
    if empty.any():
        raise ValueError(
            f"sample(s) {empty.nonzero().flatten().tolist()[:10]} have no modality present; "
            f"each sample needs at least one of {sorted(present)}"
        )
