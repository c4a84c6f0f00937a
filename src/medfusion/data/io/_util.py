"""Helpers shared by the readers and writers: error wrapping, atomic paths, channel selection."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medfusion import files
from medfusion.data.io.base import DataReadError


def describe(error: BaseException) -> str:
    """A one-line description of a library exception: its type and the first line of its message."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def full_suffix(path: Path) -> str:
    """The suffix including a compression suffix: ``.nii.gz`` for ``x.nii.gz``, ``.png`` for ``x.png``."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in (".gz", ".bz2", ".zst"):
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """:func:`medfusion.files.atomic_path` with a temporary file of the same suffix as ``path``."""
    with files.atomic_path(path, suffix=full_suffix(path) or ".tmp") as tmp:
        yield tmp


def select_channels(
    path: str | Path, available: Sequence[str], channels: Sequence[str | int] | str | int | None
) -> list[int]:
    """Indices of the requested channels among ``available``.

    Args:
        path: the file, named in errors.
        available: the file's channel names, in file order.
        channels: ``None`` for all; or names and/or 0-based indices, in the order wanted.

    Raises:
        ValueError: if ``channels`` is empty or holds something other than str/int.
        DataReadError: naming the unknown channels (or out-of-range indices) and listing
            the available ones.
    """
    if channels is None:
        return list(range(len(available)))
    if isinstance(channels, (str, int)):
        channels = [channels]
    channels = list(channels)
    if not channels:
        raise ValueError("expected channels to be None or a non-empty list of names/indices, received []")
    lookup = {name: i for i, name in reversed(list(enumerate(available)))}
    stripped = {name.strip(): i for name, i in lookup.items()}
    indices: list[int] = []
    unknown: list[str | int] = []
    for channel in channels:
        if isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (str, int, np.integer)):
            raise ValueError(f"expected channel names (str) or indices (int), received {channel!r}")
        if isinstance(channel, str):
            index = lookup.get(channel, stripped.get(channel.strip()))
            if index is None:
                unknown.append(channel)
            else:
                indices.append(index)
        elif 0 <= int(channel) < len(available):
            indices.append(int(channel))
        else:
            unknown.append(int(channel))
    if unknown:
        raise DataReadError(
            path,
            f"unknown channel(s) {unknown}; the file has {len(available)} channels: {list(available)}",
        )
    return indices
