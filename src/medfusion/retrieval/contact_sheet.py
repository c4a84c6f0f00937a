"""A contact sheet: the images of search hits side by side, each captioned with rank, score and metadata."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medfusion.data.datasets.manifest import default_loader, to_layout
from medfusion.files import atomic_path
from medfusion.retrieval.store import Hit

#: Metadata fields shown under each thumbnail, when the hit has them.
CAPTION_FIELDS: tuple[str, ...] = ("view", "age", "sex", "study_date")


def thumbnail(path: str | Path, size: int) -> Image.Image:
    """An 8-bit grayscale/RGB thumbnail (size x size, aspect kept, padded black) of an image file.

    The pixel values are min-max scaled per image for display.

    Raises:
        DataReadError: naming an unreadable file.
    """
    array = to_layout(default_loader(Path(path), "image"), "image")  # (C, H, W) float32
    array = array[:3] if array.shape[0] >= 3 else array[:1]
    low, high = float(array.min()), float(array.max())
    scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low)
    pixels = np.rint(np.moveaxis(scaled, 0, -1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    image.thumbnail((size, size))
    canvas = Image.new(image.mode, (size, size))
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas.convert("RGB")


def caption(rank: int, hit: Hit) -> list[str]:
    """Caption lines of one hit: rank, score, id, then the :data:`CAPTION_FIELDS` it has."""
    fields = [f"{name}={hit.metadata[name]}" for name in CAPTION_FIELDS
              if name in hit.metadata and hit.metadata[name] not in (None, "")]
    return [f"#{rank} {hit.score:.3f}", str(hit.id)[:22], " ".join(fields)[:28]]


def contact_sheet(hits: Sequence[Hit], out: str | Path, *, columns: int = 5, size: int = 160,
                  title: str = "") -> Path:
    """Write a PNG grid of the hits' images (their ``path`` metadata) with captions.

    Args:
        hits: search results, best first; each needs ``metadata["path"]`` to an image file.
        out: the PNG to write (atomically).
        columns: thumbnails per row; size: thumbnail side in pixels.
        title: a line drawn above the grid (e.g. the query).

    Returns:
        ``out``.

    Raises:
        ValueError: with no hits, or a hit without an image path.
        DataReadError: naming an unreadable image.
    """
    if not hits:
        raise ValueError("contact sheet: no hits to draw")
    missing = [h.id for h in hits if not h.metadata.get("path")]
    if missing:
        raise ValueError(f"contact sheet: hits {missing[:5]} have no 'path' metadata to an image")
    font = ImageFont.load_default()
    line, header = 12, 18 if title else 0
    columns = max(1, min(columns, len(hits)))
    rows = -(-len(hits) // columns)
    cell_height = size + 3 * line + 6
    sheet = Image.new("RGB", (columns * (size + 8) + 8, header + rows * cell_height + 8), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 4), title[:120], fill="black", font=font)
    for index, hit in enumerate(hits):
        x = 8 + (index % columns) * (size + 8)
        y = header + 8 + (index // columns) * cell_height
        sheet.paste(thumbnail(hit.metadata["path"], size), (x, y))
        for number, text in enumerate(caption(index + 1, hit)):
            draw.text((x, y + size + 2 + number * line), text, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return out
