"""Render one sample of every synthetic scenario to docs/figures/synthetic_<scenario>.png.

Usage::

    python scripts/render_synthetic_samples.py [--out docs/figures] [--seed 0]
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medfusion.data.synthetic import generate_triage  # noqa: E402
from medfusion.data.synthetic.cardiac import generate_cardiac  # noqa: E402
from medfusion.data.synthetic.neuro import generate_neuro  # noqa: E402
from medfusion.data.synthetic.pathology import generate_pathology  # noqa: E402
from medfusion.data.synthetic.radiology import generate_radiology  # noqa: E402
from medfusion.data.synthetic.retrieval import generate_retrieval  # noqa: E402


def _text(axis, text: str, title: str) -> None:
    axis.axis("off")
    axis.set_title(title, fontsize=9)
    axis.text(0, 1, "\n".join(textwrap.wrap(text, 60)[:18]), va="top", fontsize=7, family="monospace")


def _first(flags: np.ndarray) -> int:
    return int(np.flatnonzero(flags)[0])


def triage(axes, seed: int) -> None:
    c = generate_triage(40, seed=seed)
    i = _first(c.findings[:, 0] & c.present["image"] & c.present["text"])
    axes[0].imshow(c.images[i, 0], cmap="gray")
    axes[0].contour(c.masks[i, 0], colors="red", linewidths=0.6)
    axes[0].set_title(f"chest X-ray (red: consolidation mask), pneumonia={int(c.pneumonia[i])}", fontsize=9)
    vitals = ", ".join(f"{n} {v:.1f}" for n, v in zip(c.vital_names, c.vitals[i], strict=True))
    _text(axes[1], c.notes[i] + "\n\nvitals: " + vitals, "triage note + vitals")


def cardiac(axes, seed: int) -> None:
    c = generate_cardiac(20, seed=seed)
    i = _first(c.present["ecg"] & c.present["echo"])
    t = np.arange(c.ecg.shape[-1]) / c.sampling_rate
    for k, lead in enumerate(c.ecg_leads[:3]):
        axes[0].plot(t[:1000], c.ecg[i, k, :1000] - 2 * k, linewidth=0.6, label=lead)
    axes[0].set_title(f"ECG leads I-III, EF={c.ejection_fraction[i]:.0f}%, hf_event={int(c.hf_event[i])}", fontsize=9)
    axes[0].set_xlabel("s")
    axes[1].imshow(np.concatenate([c.echo[i, 0, 0], c.echo[i, len(c.echo[i]) // 2, 0]], axis=1), cmap="gray")
    axes[1].set_title("echo: first and middle frame", fontsize=9)


def neuro(axes, seed: int) -> None:
    c = generate_neuro(20, seed=seed)
    i = _first(c.present["signal"] & c.present["text"] & c.seizure.astype(bool))
    t = np.arange(c.eeg.shape[-1]) / c.sampling_rate
    for k in range(8):
        axes[0].plot(t, c.eeg[i, k] / 200 - k, linewidth=0.4)
    axes[0].set_yticks(-np.arange(8), c.channel_names[:8], fontsize=7)
    axes[0].set_xlabel("s")
    axes[0].set_title(f"EEG, 8 of {c.eeg.shape[1]} channels, seizure={int(c.seizure[i])}", fontsize=9)
    _text(axes[1], c.notes[i], "neurology note")


def pathology(axes, seed: int) -> None:
    c = generate_pathology(20, seed=seed)
    i = _first(c.present["image"] & c.present["text"])
    axes[0].imshow(np.transpose(c.images[i], (1, 2, 0)))
    axes[0].set_title(f"histology patch, high_grade={int(c.high_grade[i])}", fontsize=9)
    _text(axes[1], c.reports[i], "pathology report")


def radiology(axes, seed: int) -> None:
    c = generate_radiology(10, seed=seed)
    i = _first(c.present["volume"] & c.present["text"])
    volume = c.volumes[i, 0]
    nodule = c.masks[i, 0]
    z = int(np.argmax(nodule.sum(axis=(1, 2)))) if nodule.any() else volume.shape[0] // 2
    axes[0].imshow(np.clip((volume[z] + 1000) / 1400, 0, 1), cmap="gray")
    if nodule[z].any():
        axes[0].contour(nodule[z], colors="red", linewidths=0.6)
    axes[0].set_title(f"CT slice {z} (red: nodule), suspicious={int(c.suspicious[i])}", fontsize=9)
    _text(axes[1], c.reports[i], "CT report")


def retrieval(axes, seed: int) -> None:
    c = generate_retrieval(20, seed=seed)
    i = _first(c.abnormal & c.present["image"]) if c.abnormal.any() else 0
    axes[0].imshow(c.images[i, 0], cmap="gray")
    axes[0].set_title(f"rendered X-ray ({c.source})", fontsize=9)
    _text(axes[1], c.reports[i], "report")


RENDERERS = {"triage": triage, "cardiac": cardiac, "neuro": neuro, "pathology": pathology,
             "radiology": radiology, "retrieval": retrieval}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, render in RENDERERS.items():
        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        render(axes, args.seed)
        figure.suptitle(f"synthetic scenario: {name}", fontsize=11)
        path = args.out / f"synthetic_{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        print(f"written {path}")


if __name__ == "__main__":
    main()
