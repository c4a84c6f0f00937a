"""One image's generated report with its word-to-region attention: overlay PNGs and a self-contained HTML page.

:func:`explain_report` writes the report of one image and keeps, for every sentence and
every positive finding mention ("tumour cells", "necrotic debris", ...; the labeler of the
run's domain), the cross-attention that wrote it: the mean over its tokens of the
attention averaged over layers and heads, on the image token grid.

:func:`write_report_page` draws each map over the image (bilinear upsampling, rescaled to
[0, 1] per map, matplotlib's ``jet`` colormap blended in proportion to the attention, so
unattended pixels show the image) and writes::

    report.txt                   the generated report
    image.png                    the image as shown (small images enlarged)
    overlays/sentence_01.png     one per sentence
    overlays/word_01_<finding>.png   one per finding word
    report.html                  one page, every image embedded as a base64 data URI

In the page every sentence and finding word is focusable (Tab) and hoverable; hovering or
focusing it shows its map over the image (a finding word inside a sentence wins over the
sentence). Plain HTML, CSS and JavaScript; no external resource. :func:`page_figure`
composes the same content into one PNG (for documents, without a browser).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from medfusion.data.tokenizer import WordPieceTokenizer  # noqa: E402
from medfusion.evaluate.labeler import FindingLabeler  # noqa: E402
from medfusion.evaluate.report_generation import (  # noqa: E402
    Highlight, decode_arguments, finding_highlights, sentence_highlights, write_reports,
)
from medfusion.evaluate.report_metrics import upsample_attention  # noqa: E402
from medfusion.files import atomic_path, atomic_write_bytes, atomic_write_text  # noqa: E402
from medfusion.models.report_generator import ReportGenerator  # noqa: E402
from medfusion.train.report_config import ReportTrainConfig  # noqa: E402
from medfusion.train.report_data import prepare_image  # noqa: E402
from medfusion.train.report_run import encoder_channels  # noqa: E402

#: Colormap of the overlays.
COLORMAP = "jet"
#: Largest opacity of the heatmap (where the attention peaks).
ALPHA = 0.6
#: Images smaller than this (shorter side, pixels) are enlarged for display.
DISPLAY_SIZE = 256


class ReportExplanation(NamedTuple):
    """A generated report of one image with its attention maps.

    Attributes:
        text: the report.
        image: (H, W, 3) float in [0, 1], the image as displayed (RGB, enlarged when small).
        sentences: one :class:`~.report_generation.Highlight` per sentence.
        words: one per positive finding mention, in text order.
        method: the decoding, e.g. "beam 4" or "greedy".
    """

    text: str
    image: np.ndarray
    sentences: list[Highlight]
    words: list[Highlight]
    method: str


class ReportPage(NamedTuple):
    """Files written by :func:`write_report_page`."""

    html: Path
    text: Path
    image: Path
    overlays: list[Path]


def load_report_image(path: str | Path) -> np.ndarray:
    """Read a 2-D image file (PNG, JPEG, TIFF, DICOM) as (C, H, W) float32 in [0, 1].

    Values outside [0, 1] (DICOM in modality units) are rescaled by their minimum and maximum.

    Raises:
        ValueError: naming the path when it is missing, unreadable or not a 2-D image.
    """
    from medfusion.data.io import read_any  # lazy: the readers import pydicom, av, ...

    record = read_any(path)
    array = None if record.array is None else np.asarray(record.array, dtype=np.float32)
    if record.modality != "image" or array is None or array.ndim != 3:
        shape = None if array is None else array.shape
        raise ValueError(f"{path}: expected a 2-D image (PNG, JPEG, TIFF or DICOM), received {record.modality} "
                         f"data of shape {shape}")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return array


def _display_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H', W', 3) RGB, enlarged by an integer factor to at least DISPLAY_SIZE."""
    rgb = prepare_image(image, 3).transpose(1, 2, 0)
    factor = max(1, math.ceil(DISPLAY_SIZE / min(rgb.shape[:2])))
    if factor == 1:
        return np.clip(rgb, 0.0, 1.0)
    pixels = Image.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8))
    pixels = pixels.resize((rgb.shape[1] * factor, rgb.shape[0] * factor), Image.Resampling.BICUBIC)
    return np.asarray(pixels, dtype=np.float32) / 255.0


def explain_report(model: ReportGenerator, tokenizer: WordPieceTokenizer, config: ReportTrainConfig,
                   image: np.ndarray, *, method: str | None = None, beam_size: int | None = None) -> ReportExplanation:
    """Generate the report of one image and keep the attention of each sentence and finding word.

    Args:
        model: a trained generator (:func:`~medfusion.train.report_run.load_report_run`).
        tokenizer: its tokenizer.
        config: its run config (image channels and size, labeler domain, decoding).
        image: (C, H, W) or (H, W) in [0, 1] (:func:`load_report_image`).
        method: "greedy" or "beam"; default the config's first decoding method.
        beam_size: beams for "beam"; default the config's.

    Raises:
        ValueError: on an image that cannot be brought to the model's channels, or bad
            decoding settings (as :meth:`ReportGenerator.generate`).
    """
    prepared = prepare_image(image, encoder_channels(config), config.data.image_size)
    arguments = decode_arguments(config.decode, method, beam_size)
    report = write_reports(model, tokenizer, torch.from_numpy(prepared)[None], **arguments)[0]
    labeler = FindingLabeler(config.data.domain)
    name = f"beam {arguments['beam_size']}" if arguments["method"] == "beam" else "greedy"
    return ReportExplanation(report.text, _display_image(image), sentence_highlights(report),
                             finding_highlights(report, labeler), name)


def overlay(image: np.ndarray, attention: np.ndarray, *, alpha: float = ALPHA, colormap: str = COLORMAP
            ) -> np.ndarray:
    """An attention map drawn over an image.

    Args:
        image: (H, W, 3) RGB in [0, 1].
        attention: (h, w) non-negative attention on the token grid, h <= H, w <= W.
        alpha: opacity of the colour where the attention peaks; elsewhere in proportion.
        colormap: a matplotlib colormap name.

    Returns:
        (H, W, 3) uint8.

    Raises:
        ValueError: on bad shapes or values (as :func:`~.report_metrics.upsample_attention`).
    """
    heat = upsample_attention(attention, image.shape[:2], mode="bilinear")
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colour = matplotlib.colormaps[colormap](heat)[..., :3]
    weight = alpha * heat[..., None]
    blended = (1.0 - weight) * image + weight * colour
    return np.clip(np.rint(blended * 255), 0, 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "word"


def write_report_page(explanation: ReportExplanation, out: str | Path) -> ReportPage:
    """Write the report, the image, one overlay PNG per sentence and finding word, and ``report.html``.

    Args:
        explanation: from :func:`explain_report`.
        out: destination folder (created).

    Returns:
        The paths written.
    """
    out = Path(out)
    plain = np.clip(np.rint(explanation.image * 255), 0, 255).astype(np.uint8)
    maps: dict[str, bytes] = {"plain": _png(plain)}
    files: list[Path] = []
    for kind, highlights in (("sentence", explanation.sentences), ("word", explanation.words)):
        for index, highlight in enumerate(highlights, start=1):
            png = _png(overlay(explanation.image, highlight.attention))
            maps[f"{kind[0]}{index}"] = png
            suffix = f"_{_slug(highlight.finding)}" if kind == "word" else ""
            files.append(out / "overlays" / f"{kind}_{index:02d}{suffix}.png")
            atomic_write_bytes(files[-1], png)
    atomic_write_bytes(out / "image.png", maps["plain"])
    atomic_write_text(out / "report.txt", explanation.text + "\n")
    atomic_write_text(out / "report.html", report_html(explanation, {k: _data_uri(v) for k, v in maps.items()}))
    return ReportPage(out / "report.html", out / "report.txt", out / "image.png", files)


def _marked_text(explanation: ReportExplanation) -> str:
    """The report as HTML: focusable sentence spans holding focusable finding-word spans."""
    parts, position = [], 0
    for s_index, sentence in enumerate(explanation.sentences, start=1):
        parts.append(html.escape(explanation.text[position:sentence.start]))
        inner, cursor = [], sentence.start
        for w_index, word in enumerate(explanation.words, start=1):
            if sentence.start <= word.start and word.end <= sentence.end:
                inner.append(html.escape(explanation.text[cursor:word.start]))
                label = html.escape(f"{word.text} ({word.finding})", quote=True)
                inner.append(f'<span class="word" tabindex="0" data-map="w{w_index}" data-label="{label}">'
                             f"{html.escape(word.text)}</span>")
                cursor = word.end
        inner.append(html.escape(explanation.text[cursor:sentence.end]))
        label = html.escape(f"sentence {s_index}", quote=True)
        parts.append(f'<span class="sentence" tabindex="0" data-map="s{s_index}" data-label="{label}">'
                     f'{"".join(inner)}</span>')
        position = sentence.end
    parts.append(html.escape(explanation.text[position:]))
    return "".join(parts)


def _gradient() -> str:
    stops = matplotlib.colormaps[COLORMAP](np.linspace(0.0, 1.0, 9))
    return ", ".join(f"rgb({int(r * 255)}, {int(g * 255)}, {int(b * 255)})" for r, g, b, _ in stops)


_SCRIPT = """
const view = document.getElementById("view");
const caption = document.getElementById("caption");
function show(element) {
  const key = element ? element.dataset.map : "plain";
  view.src = MAPS[key];
  caption.textContent = element ? "Attention of " + element.dataset.label : "Image (no map shown)";
  document.querySelectorAll(".active").forEach(e => e.classList.remove("active"));
  if (element) element.classList.add("active");
}
function fallback(element) {
  const sentence = element.classList.contains("word") ? element.closest(".sentence") : null;
  show(sentence && (sentence.matches(":hover") || sentence === document.activeElement) ? sentence : null);
}
document.querySelectorAll(".sentence, .word").forEach(element => {
  element.addEventListener("mouseenter", () => show(element));
  element.addEventListener("focus", () => show(element));
  element.addEventListener("mouseleave", () => fallback(element));
  element.addEventListener("blur", () => fallback(element));
});
"""


def report_html(explanation: ReportExplanation, maps: dict[str, str]) -> str:
    """The self-contained page: ``maps`` holds "plain", "s<i>" and "w<i>" data URIs."""
    height, width = explanation.image.shape[:2]
    shown = max(width, 384)
    words = ", ".join(f"{w.text} ({w.finding})" for w in explanation.words) or "none"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Generated report with word-to-region attention</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1b1b; }}
main {{ display: flex; flex-wrap: wrap; gap: 2rem; align-items: flex-start; }}
figure {{ margin: 0; }}
#view {{ width: {shown}px; height: {round(shown * height / width)}px; border: 1px solid #999; }}
figcaption {{ font-size: 0.9rem; margin-top: 0.4rem; min-height: 1.2em; }}
.legend {{ height: 10px; width: {shown}px; background: linear-gradient(to right, {_gradient()}); }}
.scale {{ display: flex; justify-content: space-between; width: {shown}px; font-size: 0.8rem; }}
section {{ max-width: 38rem; }}
.report {{ font-size: 1.1rem; line-height: 1.9; }}
.sentence {{ border-radius: 3px; padding: 1px 0; cursor: pointer; }}
.sentence:hover, .sentence:focus, .sentence.active {{ background: #e8eefc; outline: none; }}
.word {{ border-bottom: 2px solid #c0392b; font-weight: 600; cursor: pointer; }}
.word:hover, .word:focus, .word.active {{ background: #fde2dc; outline: 2px solid #c0392b; }}
</style>
</head>
<body>
<h1>Generated report</h1>
<main>
<figure>
<img id="view" src="{maps['plain']}" alt="the image, with the attention map of the selected words">
<figcaption id="caption" aria-live="polite">Image (no map shown)</figcaption>
<div class="legend" aria-hidden="true"></div>
<div class="scale" aria-hidden="true"><span>low attention</span><span>high (per map)</span></div>
</figure>
<section>
<p class="report">{_marked_text(explanation)}</p>
<p>Hover or focus (Tab) a sentence or an underlined finding word to see where the model looked while
writing it: the cross-attention of the decoder over the image, averaged over layers and heads and over the
words' tokens. Decoding: {html.escape(explanation.method)}. Finding words: {html.escape(words)}.</p>
</section>
</main>
<script>
const MAPS = {json.dumps(maps)};
{_SCRIPT}</script>
</body>
</html>
"""


def page_figure(explanation: ReportExplanation, path: str | Path, *, columns: int = 4,
                reference: str | None = None) -> Path:
    """One PNG with the report, the image and every sentence and finding-word overlay (no browser needed).

    Args:
        explanation: from :func:`explain_report`.
        path: the PNG to write.
        columns: overlays per row.
        reference: the reference report, shown under the generated one when given.
    """
    panels = [("image", explanation.image)]
    for index, sentence in enumerate(explanation.sentences, start=1):
        title = textwrap.shorten(sentence.text, 34, placeholder="…")
        panels.append((f"S{index}: {title}", overlay(explanation.image, sentence.attention)))
    for word in explanation.words:
        panels.append((f"“{word.text}” → {word.finding}", overlay(explanation.image, word.attention)))
    rows = math.ceil(len(panels) / columns)
    lines = textwrap.wrap(f"Generated ({explanation.method}): {explanation.text}", 24 * columns)
    if reference is not None:
        lines += textwrap.wrap(f"Reference: {reference}", 24 * columns)
    header_inches = 0.2 * len(lines) + 0.2
    figure = plt.figure(figsize=(3.0 * columns, header_inches + 3.1 * rows))
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[header_inches] + [3.1] * rows)
    header = figure.add_subplot(grid[0, :])
    header.axis("off")
    header.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=10)
    for index, (title, pixels) in enumerate(panels):
        axis = figure.add_subplot(grid[1 + index // columns, index % columns])
        axis.imshow(pixels)
        axis.set_title(title, fontsize=8.5)
        axis.axis("off")
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
