"""The models the service runs, loaded once: triage classifier, search index, report generator.

Each service wraps library functions (loading a run, reading inputs as in training,
predicting, explaining, searching) and holds a lock: inference of one model runs one
request at a time (explanations register hooks on the model, so concurrent calls on
one model are not safe), while different models serve requests in parallel. Methods
block; the web layer calls them from worker threads.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medfusion.data.datasets.manifest import default_loader, to_layout
from medfusion.train.run import run_fingerprint

#: Integrated-gradients steps of the contributions (early, intermediate, joint-embedding fusion): on 32 test
#: cases of the early-fusion triage model (configs/triage/early.yaml) the credits of 32 steps were within 0.001
#: of 128 steps' (16 steps: 0.03), at about a seventh of the time.
EXPLAIN_STEPS = 32


def _json_value(value: Any) -> Any:
    """A metadata value as JSON: numpy scalars as Python ones, NaN / NaT as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None if str(value) in ("NaT", "nan", "<NA>") else str(value)


def png_data_uri(pixels: np.ndarray) -> str:
    """A PNG data URI of (H, W, 3) uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class TriageService:
    """A trained classification run (``medfusion train``) answering one case at a time.

    Args:
        run_dir: the run folder; its training manifest must still be readable (the
            tokenizer and the per-sample shapes come from the training split).
        onnx: an ONNX export of the same run (``medfusion export``): probabilities then come
            from ONNX Runtime; the contributions still from the PyTorch model (gradients).

    Attributes:
        modalities: the model's modalities; vitals_columns: the vitals vector's columns;
        image_shape: (C, H, W) of the training images, or None; label: the label column.

    Raises:
        ValueError: when the folder is not a finished classification run, or the export
            comes from another run.
    """

    def __init__(self, run_dir: str | Path, onnx: str | Path | None = None) -> None:
        from medfusion.train.run import load_trained

        model, data, config = load_trained(run_dir)
        if config.task != "classification":
            raise ValueError(f"--model {run_dir}: expected a classification run, received task {config.task!r} "
                             "(a contrastive run serves search: --search-model)")
        self.model, self.collate = model, data.collate()
        self.modalities = list(model.modalities)
        self.vitals_columns = list(config.data.vitals_columns)
        self.image_shape = self.collate.shapes.get("image")
        self.label, self.fusion = config.data.label, config.model.fusion.name
        self.fingerprint = run_fingerprint(run_dir)
        self.runtime = None
        if onnx is not None:
            from medfusion.deploy.runtime import OnnxClassifier

            self.runtime = OnnxClassifier(onnx)
            exported = self.runtime.sidecar.get("fingerprint")
            if exported != self.fingerprint:
                raise ValueError(f"--onnx {onnx}: exported from the model {exported}, but --model {run_dir} is "
                                 f"{self.fingerprint}; export this run with `medfusion export {run_dir}`")
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """What the page and clients need: modalities, vitals columns, label, fusion, fingerprint, backend."""
        return {"modalities": self.modalities, "vitals_columns": self.vitals_columns, "label": self.label,
                "fusion": self.fusion, "image_shape": list(self.image_shape) if self.image_shape else None,
                "fingerprint": self.fingerprint, "backend": "onnxruntime" if self.runtime else "pytorch"}

    def read_image(self, path: Path) -> np.ndarray:
        """An image file read as in training ((C, H, W) float32), checked against the training shape.

        Raises:
            DataReadError: on an unreadable file.
            ValueError: on another layout (e.g. a multi-frame DICOM) or another shape than in training.
        """
        array = to_layout(default_loader(path, "image"), "image")
        if self.image_shape is not None and array.shape != self.image_shape:
            raise ValueError(f"expected shape {self.image_shape} (channels, height, width) as the model was "
                             f"trained on, received {array.shape}; resize the image first")
        return array

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Probability, predicted class and each given modality's share of the prediction.

        Args:
            inputs: {modality: value} of the given modalities only (image (C, H, W), text
                str, vitals (F,) with NaN for unmeasured values), a non-empty subset of
                :attr:`modalities`.

        Returns:
            ``probability`` (of class 1 for a binary model, else of the predicted class),
            ``probabilities`` (K), ``prediction``, ``modalities_used``, ``contributions``
            {modality: share, summing to 1} and ``contribution_method``.

        Raises:
            ValueError: on a modality the model does not use or no modality at all.
        """
        from medfusion.evaluate.explain import modality_attribution

        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown or not inputs:
            raise ValueError(f"expected some of the model's modalities {self.modalities}, received "
                             f"{sorted(inputs) or 'none'}")
        sample = {"inputs": dict(inputs), "present": {m: m in inputs for m in self.modalities}}
        batch = self.collate([sample])
        with self._lock:
            if self.runtime is not None:
                probabilities = torch.from_numpy(self.runtime.predict_proba(batch)[0])
            else:
                with torch.no_grad():
                    probabilities = torch.softmax(self.model(batch).logits, dim=-1)[0]
            credit, names, method = modality_attribution(self.model, batch, n_steps=EXPLAIN_STEPS)
        prediction = int(probabilities.argmax())
        used = sorted(inputs)
        return {"probability": float(probabilities[1 if len(probabilities) == 2 else prediction]),
                "probabilities": [float(p) for p in probabilities], "prediction": prediction,
                "modalities_used": used,
                "contributions": {m: float(credit[0, names.index(m)]) for m in used},
                "contribution_method": method}


class SearchService:
    """A joint-embedding run and the index it filled: text -> image and image -> image search.

    Args:
        index: the index folder or ``postgresql://`` URL.
        model_dir: the joint-embedding run that built the index.

    Raises:
        ValueError: when the run is not a joint-embedding run, there is no index at
            ``index``, or the index was built by another model.
    """

    def __init__(self, index: str, model_dir: str | Path) -> None:
        from medfusion.retrieval.embed import JointEmbedder
        from medfusion.retrieval.store import open_store

        self.embedder = JointEmbedder(model_dir)
        try:
            self.store = open_store(index, model=self.embedder.fingerprint)
        except FileNotFoundError as error:
            raise ValueError(f"--index {index}: {error}") from error
        frame = self.store.metadata()
        # the image files by id, read once: a thumbnail is looked up by id, never by a client's path
        self.paths = ({str(i): str(p) for i, p in zip(frame["id"], frame["path"], strict=True) if p}
                      if "path" in frame else {})
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """Index size, embedding model fingerprint and the modalities it embeds."""
        return {"entries": len(self.store), "modalities": list(self.embedder.modalities),
                "fingerprint": self.embedder.fingerprint}

    def search(self, *, text: str | None = None, file: Path | None = None, k: int = 5,
               where: str | None = None) -> list[dict[str, Any]]:
        """The k nearest entries to a text or an image file: id, score, metadata (without the file path).

        Raises:
            ValueError: on a blank text, an unreadable image, a bad filter or k < 1.
        """
        from medfusion.retrieval.indexing import search

        with self._lock:
            hits = search(self.embedder, self.store, text=text, file=file, k=k, where=where)
        return [{"id": hit.id, "score": hit.score, "has_image": hit.id in self.paths,
                 "metadata": {key: _json_value(value) for key, value in hit.metadata.items() if key != "path"}}
                for hit in hits]

    def thumbnail(self, item_id: str, size: int) -> bytes | None:
        """PNG bytes of the thumbnail of an indexed image, or None for an id without an image.

        Raises:
            DataReadError: when the indexed file can no longer be read.
        """
        from medfusion.retrieval.contact_sheet import thumbnail

        path = self.paths.get(item_id)
        if path is None:
            return None
        buffer = io.BytesIO()
        thumbnail(path, size).save(buffer, format="PNG")
        return buffer.getvalue()


class ReportService:
    """A trained report generator (``medfusion train`` with ``task: report``): report text and word-to-region attention.

    Raises:
        ValueError: when the folder is not a finished report run.
    """

    def __init__(self, run_dir: str | Path) -> None:
        from medfusion.train.report_run import load_report_run

        self.model, self.tokenizer, self.config = load_report_run(run_dir)
        self.fingerprint = run_fingerprint(run_dir)
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """Labeler domain, image size, decoding and fingerprint."""
        return {"domain": self.config.data.domain, "image_size": self.config.data.image_size,
                "decoding": self.config.decode.methods[0], "fingerprint": self.fingerprint}

    def report(self, path: Path) -> dict[str, Any]:
        """The report of one image file with an overlay per sentence and per finding word.

        Returns:
            ``text``, ``method``, ``image`` (PNG data URI of the image as displayed),
            ``sentences`` and ``words`` (finding mentions): each with ``text``, ``start``,
            ``end`` (character span in ``text``), ``attention`` ((h, w) grid, mean over the
            tokens, layers and heads) and ``overlay`` (PNG data URI of the map over the
            image); words also name their ``finding``.

        Raises:
            ValueError: on an unreadable file or an image the model cannot take.
        """
        from medfusion.evaluate.report_page import explain_report, load_report_image, overlay

        image = load_report_image(path)
        with self._lock:
            explanation = explain_report(self.model, self.tokenizer, self.config, image)
        plain = np.clip(np.rint(explanation.image * 255), 0, 255).astype(np.uint8)

        def spans(highlights: list) -> list[dict[str, Any]]:
            return [{"text": h.text, "start": h.start, "end": h.end, "finding": h.finding,
                     "attention": np.round(h.attention, 5).tolist(),
                     "overlay": png_data_uri(overlay(explanation.image, h.attention))} for h in highlights]

        return {"text": explanation.text, "method": explanation.method, "image": png_data_uri(plain),
                "sentences": spans(explanation.sentences), "words": spans(explanation.words)}
