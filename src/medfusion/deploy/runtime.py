"""Running an exported classifier: ONNX Runtime or TorchScript, fed a batch or flat arrays.

An export is a model file plus its sidecar ``<file>.json`` (see
:func:`medfusion.deploy.export.export_model`). :class:`OnnxClassifier` and
:class:`TorchScriptClassifier` read both and take a
:class:`~medfusion.types.MultimodalBatch` (as the collate makes it) or a mapping of flat
input names to arrays, and return probabilities (B, K). Inputs are checked as the
PyTorch model checks them (names, dtypes, shapes, finite values of present samples, at
least one modality per sample); modalities left out are fed as absent, masks left out
take the model's defaults (text: ids != pad id; vitals: values not NaN; signal and
video: every step), and text and video are padded to the exported length.

Examples::

    model = OnnxClassifier("exports/triage.onnx")
    probabilities = model.predict_proba(batch)  # (B, 2) numpy
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfusion.types import MultimodalBatch

FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class InputSpec:
    """One flat input of an export.

    Attributes:
        name: input name (``m``, ``m_present`` or ``m_mask``).
        modality: the modality it belongs to.
        role: ``"input"``, ``"present"`` or ``"mask"``.
        shape: sizes; a str names a dynamic axis (``"batch"``, ``"signal_length"``, ...).
        dtype: NumPy dtype name (``float32``, ``int64``, ``bool``).
    """

    name: str
    modality: str
    role: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class ExportSpec:
    """What a runtime needs to feed an export (a subset of the sidecar).

    Attributes:
        format: ``"onnx"`` or ``"torchscript"``.
        modalities: sorted modalities of the model.
        inputs: the flat inputs in the model's argument order.
        class_names: K names, in logit order.
        pad_id: text padding id (padding added by the runtime; 0 without text).
    """

    format: str
    modalities: tuple[str, ...]
    inputs: tuple[InputSpec, ...]
    class_names: tuple[str, ...]
    pad_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExportSpec:
        """The spec of a sidecar's fields.

        Raises:
            ValueError: naming a missing field or an unknown format.
        """
        try:
            inputs = tuple(InputSpec(**{**item, "shape": tuple(item["shape"])}) for item in values["inputs"])
            spec = cls(format=values["format"], modalities=tuple(values["modalities"]), inputs=inputs,
                       class_names=tuple(values["class_names"]), pad_id=int(values.get("pad_id", 0)))
        except (KeyError, TypeError) as error:
            raise ValueError(f"export sidecar: missing or malformed field {error}") from None
        if spec.format not in FORMATS:
            raise ValueError(f"export sidecar: format: expected one of {list(FORMATS)}, received {spec.format!r}")
        return spec

    def input(self, name: str) -> InputSpec | None:
        """The input called ``name``, or None."""
        return next((item for item in self.inputs if item.name == name), None)


def sidecar_path(path: str | Path) -> Path:
    """The sidecar JSON of an exported model file: ``<file>.json``."""
    return Path(f"{path}.json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar fields of the export at ``path`` (the model file).

    Raises:
        ValueError: when the model file or its sidecar is missing or not JSON.
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    for file in (path, sidecar):
        if not file.is_file():
            raise ValueError(f"{path}: not an export, {file.name} is missing")
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{sidecar}: expected JSON, received invalid text ({error})") from None


def flatten_batch(batch: MultimodalBatch) -> dict[str, np.ndarray]:
    """Flat arrays of a batch: ``m``, ``m_present`` and, where the batch has one, ``m_mask``."""
    flat = {}
    for m in batch.inputs:
        flat[m] = batch.inputs[m].detach().cpu().numpy()
        flat[f"{m}_present"] = batch.presence(m).detach().cpu().numpy()
        if m in batch.masks:
            flat[f"{m}_mask"] = batch.masks[m].detach().cpu().numpy()
    return flat


def _shape_text(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def complete_inputs(spec: ExportSpec, batch: MultimodalBatch | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The checked, completed flat inputs of a batch (or of flat arrays), as fed to an export.

    Modalities the batch lacks are fed as zeros marked absent; masks it lacks take the
    model's defaults; text and video are padded to the exported length.

    Raises:
        ValueError: on an unknown input, a presence or mask without its modality's input, a
            wrong dtype or shape, a non-finite value in a present sample, or a sample with no
            modality present.
    """
    flat = flatten_batch(batch) if isinstance(batch, MultimodalBatch) else dict(batch)
    unknown = sorted(set(flat) - {item.name for item in spec.inputs})
    if unknown:
        raise ValueError(f"export: unknown input(s) {unknown}; expected some of {[item.name for item in spec.inputs]}")
    orphans = sorted(item.name for item in spec.inputs if item.name in flat and item.modality not in flat)
    if orphans:
        raise ValueError(f"export: received {orphans} without the input of their modality; "
                         "leave a missing modality out entirely (it is fed as absent)")
    given = [m for m in spec.modalities if m in flat]
    if not given:
        raise ValueError(f"export: batch has no inputs; expected some of {list(spec.modalities)}")
    size = int(np.shape(flat[given[0]])[0])
    feeds: dict[str, np.ndarray] = {}
    for m in spec.modalities:
        feeds.update(_modality(spec, m, flat, size))
    stacked = np.stack([feeds[f"{m}_present"] for m in spec.modalities], axis=1)
    empty = np.flatnonzero(~stacked.any(axis=1))
    if empty.size:
        raise ValueError(f"sample(s) {empty[:10].tolist()} have no modality present; "
                         f"each sample needs at least one of {list(spec.modalities)}")
    return {item.name: feeds[item.name] for item in spec.inputs}


def _modality(spec: ExportSpec, m: str, flat: Mapping[str, Any], size: int) -> dict[str, np.ndarray]:
    """Checked inputs of modality ``m``; zeros marked absent when the batch lacks it."""
    spec_x, spec_mask = spec.input(m), spec.input(f"{m}_mask")
    if m not in flat:
        feeds = {m: np.zeros(_absent_shape(spec_x, size), dtype=spec_x.dtype),
                 f"{m}_present": np.zeros(size, dtype=bool)}
        if spec_mask is not None:
            feeds[spec_mask.name] = np.zeros(_absent_shape(spec_mask, size), dtype=bool)
        return feeds
    x = _values(spec_x, flat[m])
    if x.shape[0] != size:
        raise ValueError(f"{m}: expected batch size {size} (first dim), received shape {x.shape}")
    present = _flags(f"{m}_present", flat.get(f"{m}_present", np.ones(size, dtype=bool)), (size,))
    feeds = {m: x, f"{m}_present": present}
    if spec_mask is not None:
        given = flat.get(spec_mask.name)
        mask = _flags(spec_mask.name, _default_mask(m, x, spec.pad_id) if given is None else given,
                      (size, x.shape[2]) if m == "signal" else x.shape[:2])
        if m in ("text", "video"):
            x, mask = _pad(spec_x, x, mask, spec.pad_id if m == "text" else 0)
        if m == "vitals":  # missing values read as 0, as the collate writes them
            x = np.where(mask, x, np.zeros((), dtype=x.dtype))
        _check_shape(spec_mask, mask, size)
        feeds.update({m: x, spec_mask.name: mask})
    _check_finite(m, x, present)
    _check_shape(spec_x, x, size)
    return feeds


def _absent_shape(spec: InputSpec, size: int) -> tuple[int, ...]:
    """Shape of the placeholder of a modality the batch lacks: ``size`` rows, padded axes of 1."""
    return tuple(size if s == "batch" else 1 if isinstance(s, str) else s for s in spec.shape)


def _default_mask(modality: str, x: np.ndarray, pad_id: int) -> np.ndarray:
    """The mask the PyTorch model assumes when none is given."""
    if modality == "text":
        return x != pad_id
    if modality == "vitals":
        return ~np.isnan(x)
    return np.ones((x.shape[0], x.shape[2] if modality == "signal" else x.shape[1]), dtype=bool)


def _values(spec: InputSpec, value: Any) -> np.ndarray:
    x = np.asarray(value)
    integer = np.issubdtype(np.dtype(spec.dtype), np.integer)
    if integer and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{spec.name}: expected an integer dtype (token ids), received {x.dtype}")
    if not integer and not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{spec.name}: expected a floating dtype, received {x.dtype}")
    if x.ndim != len(spec.shape):
        raise ValueError(f"{spec.name}: expected a {len(spec.shape)}-D array {_shape_text(spec.shape)}, "
                         f"received shape {x.shape}")
    return x.astype(spec.dtype, copy=False)


def _flags(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    flags = np.asarray(value)
    if flags.dtype != np.bool_:
        raise ValueError(f"{name}: expected a bool array, received {flags.dtype}")
    if flags.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, received {flags.shape}")
    return flags


def _pad(spec: InputSpec, x: np.ndarray, mask: np.ndarray, value: int) -> tuple[np.ndarray, np.ndarray]:
    """Text ids or video clips and their mask padded with ``value`` (or cut, where only padding is
    cut) along axis 1 to the exported length."""
    length = spec.shape[1]
    if x.shape[1] > length:
        if mask[:, length:].any():
            unit = "tokens" if spec.modality == "text" else "frames"
            raise ValueError(f"{spec.name}: expected at most {length} {unit} per sample (the exported length), "
                             f"received {int(mask.sum(axis=1).max())}")
        return x[:, :length], mask[:, :length]
    extra = [(0, 0)] * x.ndim
    extra[1] = (0, length - x.shape[1])
    return np.pad(x, extra, constant_values=value), np.pad(mask, extra[:2], constant_values=False)


def _check_finite(m: str, x: np.ndarray, present: np.ndarray) -> None:
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = present & ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"{m}: NaN or Inf in sample(s) {np.flatnonzero(bad)[:10].tolist()}; "
                         "expected finite values (mark a missing modality absent instead)")


def _check_shape(spec: InputSpec, x: np.ndarray, size: int) -> None:
    expected = tuple(size if s == "batch" else s for s in spec.shape)
    if x.ndim != len(expected) or any(isinstance(e, int) and e != r for e, r in zip(expected, x.shape)):
        raise ValueError(f"{spec.name}: expected shape {_shape_text(expected)}, received {x.shape}")


class ExportedClassifier(ABC):
    """Base of the runtimes: checks and completes the inputs, runs the model.

    Args:
        path: the exported model file.
        spec: its spec; read from the sidecar when None.

    Raises:
        ValueError: when the file or sidecar is missing or the sidecar is of another format.
    """

    format: str

    def __init__(self, path: str | Path, spec: ExportSpec | None = None) -> None:
        self.path = Path(path)
        self.sidecar: dict[str, Any] = {} if spec is not None else read_sidecar(self.path)
        self.spec = spec if spec is not None else ExportSpec.from_dict(self.sidecar)
        if self.spec.format != self.format:
            raise ValueError(f"{self.path}: expected a {self.format} export, received format {self.spec.format!r}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Sorted modalities of the model."""
        return self.spec.modalities

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in probability-column order."""
        return self.spec.class_names

    @property
    def tokenizer_path(self) -> Path | None:
        """The tokenizer file that turns notes into the ``text`` ids (None without text)."""
        name = (self.sidecar.get("text") or {}).get("tokenizer")
        return self.path.parent / name if name else None

    def predict_proba(self, batch: MultimodalBatch | Mapping[str, Any]) -> np.ndarray:
        """Class probabilities (B, K) float32 of a batch or of flat arrays (see :func:`complete_inputs`).

        Raises:
            ValueError: as :func:`complete_inputs`.
        """
        return self._run(complete_inputs(self.spec, batch))

    __call__ = predict_proba

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities (B, K) of complete, checked inputs."""


class OnnxClassifier(ExportedClassifier):
    """An ONNX export run by ONNX Runtime (CPUExecutionProvider).

    Args:
        path: the ``.onnx`` file (its sidecar ``<file>.json`` next to it).
        spec: its spec; read from the sidecar when None.
        threads: intra-op threads of the session (ONNX Runtime's default when None).

    Raises:
        ValueError: when the file or sidecar is missing or describes another format.
    """

    format = "onnx"

    def __init__(self, path: str | Path, spec: ExportSpec | None = None, threads: int | None = None) -> None:
        super().__init__(path, spec)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["probability"], feeds)[0]


class TorchScriptClassifier(ExportedClassifier):
    """A TorchScript export run by ``torch.jit.load``.

    Args:
        path: the ``.pt`` file (its sidecar ``<file>.json`` next to it).
        spec: its spec; read from the sidecar when None.

    Raises:
        ValueError: when the file or sidecar is missing or describes another format.
    """

    format = "torchscript"

    def __init__(self, path: str | Path, spec: ExportSpec | None = None) -> None:
        super().__init__(path, spec)
        with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(self.path), map_location="cpu").eval()

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            tensors = [torch.from_numpy(np.ascontiguousarray(feeds[item.name])) for item in self.spec.inputs]
            return self.module(*tensors)[0].numpy()


def load_exported(path: str | Path, threads: int | None = None) -> ExportedClassifier:
    """The runtime of the export at ``path``, chosen by its sidecar's format.

    Raises:
        ValueError: when the file or sidecar is missing or malformed.
    """
    spec = ExportSpec.from_dict(read_sidecar(path))
    if spec.format == "onnx":
        return OnnxClassifier(path, threads=threads)
    return TorchScriptClassifier(path)
