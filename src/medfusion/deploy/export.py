"""Export a trained classifier to ONNX or TorchScript, verified against PyTorch, optionally int8.

:func:`export_model` writes the model file and its sidecar ``<file>.json`` (inputs with
names, shapes and dtypes, modalities, class names, tokenizer, the run's fingerprint and
the verification), and a copy of the run's tokenizer ``<file>.tokenizer.json`` when the
model reads text. Every export is verified: the exported model and the PyTorch model
predict the run's test split, once as it is and once with each modality hidden from a
random share of the samples (seeded), and the largest absolute difference of the
probabilities is reported against a tolerance of 1e-4.

ONNX goes through the TorchScript-based ``torch.onnx.export`` (opset 17): on torch 2.13
the ``torch.export``-based exporter stops at the input checks that raise on data
(``GuardOnDataDependentSymNode`` in late fusion and the early-fusion featurizers) and,
through ``draft_export``, takes 15-45 s per model. ONNX Runtime's CPU provider has no
boolean ``Where``; those nodes are rewritten as ``Or(And(c, x), And(Not(c), y))``.

Dynamic int8 quantisation (weights int8, activations quantised on the fly) uses
``onnxruntime.quantization.quantize_dynamic`` (``MatMul`` / ``Gemm``) for ONNX and
``torch.ao.quantization.quantize_dynamic`` (``nn.Linear``) for TorchScript; its effect is
reported as the test AUROC of the int8 and the float export, and their largest
probability difference.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfusion.deploy.graph import MASKED_MODALITIES, OUTPUTS, PADDED_AXES, FlatClassifier, dynamic_axes, tracing
from medfusion.deploy.runtime import (
    FORMATS,
    ExportedClassifier,
    ExportSpec,
    InputSpec,
    OnnxClassifier,
    TorchScriptClassifier,
    complete_inputs,
    sidecar_path,
)
from medfusion.evaluate.predict import hide
from medfusion.files import atomic_write_bytes, atomic_write_text
from medfusion.metrics import binary_auroc
from medfusion.models import MultimodalClassifier
from medfusion.types import MultimodalBatch

OPSET = 17
TOLERANCE = 1e-4
#: Version of the sidecar layout.
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class Verification:
    """Exported model against the PyTorch model on the test split.

    Attributes:
        rows: samples compared (each test sample twice: as it is, and with modalities hidden).
        rows_missing: of them, samples with at least one modality absent.
        max_abs_diff: largest absolute difference of the class probabilities.
        tolerance: the bound the difference must stay within.
    """

    rows: int
    rows_missing: int
    max_abs_diff: float
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        """Whether the difference stayed within the tolerance."""
        return self.max_abs_diff <= self.tolerance


@dataclass(frozen=True)
class QuantizationReport:
    """Int8 export against the float export on the test split.

    Attributes:
        auroc_float: test AUROC of the float export (None when undefined: one class only).
        auroc_quantized: test AUROC of the int8 export.
        max_abs_diff: largest absolute difference of their probabilities (all compared samples).
        size_float: bytes of the float model file.
        size_quantized: bytes of the int8 model file.
    """

    auroc_float: float | None
    auroc_quantized: float | None
    max_abs_diff: float
    size_float: int
    size_quantized: int

    @property
    def auroc_change(self) -> float | None:
        """AUROC of the int8 minus that of the float export."""
        if self.auroc_float is None or self.auroc_quantized is None:
            return None
        return self.auroc_quantized - self.auroc_float


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and measured.

    Attributes:
        path: the model file.
        sidecar: its JSON sidecar.
        format: ``"onnx"`` or ``"torchscript"``.
        quantized: whether the model file is the int8 model.
        modalities: sorted modalities of the model.
        inputs: the flat inputs, in argument order.
        verification: the float export against PyTorch.
        quantization: the int8 export against the float one (None without ``quantize``).
        size_bytes: bytes of the model file.
        seconds: time of the whole export.
    """

    path: Path
    sidecar: Path
    format: str
    quantized: bool
    modalities: tuple[str, ...]
    inputs: tuple[InputSpec, ...]
    verification: Verification
    quantization: QuantizationReport | None
    size_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``passed`` and ``auroc_change`` included."""
        values = asdict(self)
        values.update(path=str(self.path), sidecar=str(self.sidecar))
        values["verification"]["passed"] = self.verification.passed
        if self.quantization is not None:
            values["quantization"]["auroc_change"] = self.quantization.auroc_change
        return values


def check_format(format: str) -> str:
    """Return ``format`` if it is an export format.

    Raises:
        ValueError: naming the expected formats and the received value.
    """
    if format not in FORMATS:
        raise ValueError(f"export: format: expected one of {list(FORMATS)}, received {format!r}")
    return format


def export_spec(model: MultimodalClassifier, example: MultimodalBatch, format: str, class_names: list[str],
                text_length: int | None = None, pad_id: int = 0) -> ExportSpec:
    """The inputs of an export of ``model``, sized after an example batch.

    Every input has a dynamic batch axis and signals a dynamic length; text is padded to
    ``text_length`` tokens and video to the example's number of frames.

    Raises:
        ValueError: when the example lacks a modality of the model or text has no length.
    """
    inputs = []
    for m in model.modalities:
        if m not in example.inputs:
            raise ValueError(f"export: the example batch has no {m} input; expected every modality "
                             f"of the model {model.modalities}")
        shape: list[int | str] = ["batch", *example.inputs[m].shape[1:]]
        for axis, name in PADDED_AXES.get(m, {}).items():
            shape[axis] = name
        if m == "text":
            if text_length is None:
                raise ValueError("export: text_length: expected the longest token sequence, received None")
            shape[1] = text_length
        inputs.append(InputSpec(m, m, "input", tuple(shape), "int64" if m == "text" else "float32"))
        inputs.append(InputSpec(f"{m}_present", m, "present", ("batch",), "bool"))
        if m in MASKED_MODALITIES:
            inputs.append(InputSpec(f"{m}_mask", m, "mask", ("batch", shape[2] if m == "signal" else shape[1]),
                                    "bool"))
    return ExportSpec(format=check_format(format), modalities=tuple(model.modalities), inputs=tuple(inputs),
                      class_names=tuple(class_names), pad_id=pad_id)


def write_model(model: MultimodalClassifier, example: MultimodalBatch, path: str | Path, spec: ExportSpec,
                quantize: bool = False) -> None:
    """Trace ``model`` on ``example`` into the model file ``path`` in ``spec.format``.

    Args:
        model: the trained classifier (left unchanged).
        example: a batch with every modality of the model (the trace's inputs).
        path: the file to write.
        spec: from :func:`export_spec`.
        quantize: TorchScript only: trace a dynamic-int8 copy (``nn.Linear`` layers). ONNX
            files are quantised after export (:func:`quantize_onnx`).

    Raises:
        ValueError: on ``quantize`` with ONNX, or an example that does not fit ``spec``.
    """
    if quantize and spec.format == "onnx":
        raise ValueError("export: quantize: ONNX models are quantised after export with quantize_onnx")
    flat = FlatClassifier(model)
    feeds = complete_inputs(spec, example)
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in flat.names)
    with tracing():
        if spec.format == "onnx":
            torch.onnx.export(flat, tensors, str(path), dynamo=False, input_names=flat.names,
                              output_names=list(OUTPUTS), opset_version=OPSET,
                              dynamic_axes={name: dynamic_axes(name) for name in (*flat.names, *OUTPUTS)})
            rewrite_bool_where(path)
        else:
            if quantize:
                flat = torch.ao.quantization.quantize_dynamic(flat, {nn.Linear}, dtype=torch.qint8)
            torch.jit.save(torch.jit.trace(flat, tensors, check_trace=False), str(path))


def rewrite_bool_where(path: str | Path) -> int:
    """Replace boolean ``Where(c, x, y)`` nodes of an ONNX file by ``Or(And(c, x), And(Not(c), y))``.

    ONNX Runtime's CPU provider implements ``Where`` for numbers only.

    Returns:
        The number of nodes replaced.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    nodes, replaced = [], 0
    for node in model.graph.node:
        if node.op_type != "Where" or types.get(node.output[0]) != TensorProto.BOOL:
            nodes.append(node)
            continue
        condition, x, y = node.input
        name = f"{node.name or node.output[0]}/bool"
        nodes += [
            helper.make_node("And", [condition, x], [f"{name}/then"], name=f"{name}/And_then"),
            helper.make_node("Not", [condition], [f"{name}/not"], name=f"{name}/Not"),
            helper.make_node("And", [f"{name}/not", y], [f"{name}/else"], name=f"{name}/And_else"),
            helper.make_node("Or", [f"{name}/then", f"{name}/else"], [node.output[0]], name=f"{name}/Or"),
        ]
        replaced += 1
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return replaced


def quantize_onnx(source: str | Path, target: str | Path) -> None:
    """Dynamic int8 quantisation of the ``MatMul`` / ``Gemm`` weights of an ONNX file.

    Activations are quantised at run time. Convolutions stay float, as in the TorchScript
    path (``nn.Linear`` only): ONNX Runtime's dynamic ``ConvInteger`` is slower than the
    float convolution on CPU (measured: 2.9 against 0.7 ms per batch-1 call of the
    triage late-fusion model, one thread).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    level = logging.root.manager.disable
    logging.disable(logging.WARNING)  # quantize_dynamic advises pre-processing on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.disable(level)


def load_runtime(path: str | Path, spec: ExportSpec) -> ExportedClassifier:
    """The runtime of a model file of ``spec.format`` (no sidecar needed)."""
    if spec.format == "onnx":
        return OnnxClassifier(path, spec)
    return TorchScriptClassifier(path, spec)


@dataclass(frozen=True)
class Case:
    """One test batch with the presence it is predicted under (no sample without a modality)."""

    batch: MultimodalBatch
    hidden: bool


def verification_cases(model: MultimodalClassifier, batches: list[MultimodalBatch], missing_rate: float = 0.3,
                       seed: int = 0) -> list[Case]:
    """Each batch as it is, and again with each modality hidden from a random share of the samples.

    Samples left with no modality are dropped (the model refuses them).

    Raises:
        ValueError: on a rate outside [0, 1].
    """
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch in batches:
        rates = {m: missing_rate for m in model.modalities}
        presences = (model.presence(batch, require_any=False), hide(batch, model, missing_rates=rates,
                                                                   generator=generator))
        for hidden, present in zip((False, True), presences):
            keep = torch.stack([present[m] for m in model.modalities], dim=1).any(dim=1)
            if keep.any():
                rows = batch.select(keep)
                cases.append(Case(MultimodalBatch(inputs=rows.inputs, present={m: p[keep] for m, p in present.items()},
                                                  masks=rows.masks, labels=rows.labels), hidden))
    return cases


@torch.no_grad()
def torch_probabilities(model: MultimodalClassifier, cases: list[Case]) -> list[np.ndarray]:
    """Class probabilities (B, K) of the PyTorch model for each case."""
    return [model.fuse(case.batch, case.batch.present).logits.softmax(dim=-1).numpy() for case in cases]


def predictions(runtime: ExportedClassifier, cases: list[Case]) -> list[np.ndarray]:
    """Class probabilities (B, K) of an export for each case."""
    return [runtime.predict_proba(case.batch) for case in cases]


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest absolute difference between two lists of probability arrays."""
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def verification(cases: list[Case], reference: list[np.ndarray], exported: list[np.ndarray]) -> Verification:
    """The :class:`Verification` of an export's probabilities against the PyTorch ones."""
    missing = sum(int((~torch.stack(list(c.batch.present.values()), dim=1).all(dim=1)).sum()) for c in cases)
    return Verification(rows=sum(len(p) for p in exported), rows_missing=missing,
                        max_abs_diff=max_abs_diff(exported, reference))


def auroc(cases: list[Case], probabilities: list[np.ndarray]) -> float | None:
    """Binary AUROC over the cases predicted as they are (None for K != 2 or a single class)."""
    chosen = [(c, p) for c, p in zip(cases, probabilities) if not c.hidden and c.batch.labels is not None]
    if not chosen or probabilities[0].shape[1] != 2:
        return None
    scores = torch.from_numpy(np.concatenate([p[:, 1] for _, p in chosen]).astype(np.float64))
    labels = torch.cat([c.batch.labels for c, _ in chosen])
    try:
        return binary_auroc(scores, labels)
    except ValueError:
        return None


def suffix(format: str) -> str:
    """File suffix of a format: ``.onnx`` or ``.pt``."""
    return ".onnx" if check_format(format) == "onnx" else ".pt"


def export_model(run_dir: str | Path, out: str | Path, format: str = "onnx", quantize: bool = False, *,
                 checkpoint: str = "best", batches: int | None = None, missing_rate: float = 0.3,
                 seed: int = 0) -> ExportReport:
    """Export a trained run's classifier, verify it on the test split, write the sidecar.

    Args:
        run_dir: a finished run folder (``medfusion train``).
        out: the model file to write (``.onnx`` / ``.pt`` by convention); the sidecar is
            ``<out>.json``, the tokenizer copy ``<out>.tokenizer.json``.
        format: ``"onnx"`` or ``"torchscript"``.
        quantize: write the dynamic-int8 model (and report its accuracy change).
        checkpoint: ``"best"`` or ``"last"``.
        batches: verify on the first ``batches`` test batches (all when None).
        missing_rate: share of samples each modality is hidden from in the second pass.
        seed: seed of the hiding.

    Returns:
        The :class:`ExportReport` (also stored in the sidecar).

    Raises:
        ValueError: on a bad format, a folder that is not a finished run, or an empty test split.
    """
    from medfusion.train.run import run_fingerprint
    from medfusion.train.run import load_trained

    check_format(format)
    if batches is not None and batches < 1:
        raise ValueError(f"export: batches: expected None or an int >= 1, received {batches!r}")
    started = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    model, data, config = load_trained(run_dir, checkpoint)
    test = list(islice(data.loader("test", usable_only=True), batches))
    if not test:
        raise ValueError(f"{run_dir}: the test split has no sample with a modality of the model; nothing to verify")
    tokenizer = data.tokenizer if "text" in model.modalities else None
    class_names = [f"{config.data.label}={k}" for k in range(config.model.num_classes)]
    spec = export_spec(model, test[0], format, class_names, data.config.max_length if tokenizer else None,
                       tokenizer.pad_id if tokenizer else 0)
    cases = verification_cases(model, test, missing_rate, seed)
    reference = torch_probabilities(model, cases)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as folder:
        float_path = Path(folder) / f"float{suffix(format)}"
        write_model(model, test[0], float_path, spec)
        float_probs = predictions(load_runtime(float_path, spec), cases)
        final, quantization = float_path, None
        if quantize:
            final = Path(folder) / f"int8{suffix(format)}"
            if format == "onnx":
                quantize_onnx(float_path, final)
            else:
                write_model(model, test[0], final, spec, quantize=True)
            quantized_probs = predictions(load_runtime(final, spec), cases)
            quantization = QuantizationReport(
                auroc_float=auroc(cases, float_probs), auroc_quantized=auroc(cases, quantized_probs),
                max_abs_diff=max_abs_diff(quantized_probs, float_probs),
                size_float=float_path.stat().st_size, size_quantized=final.stat().st_size)
        atomic_write_bytes(out, final.read_bytes())
    text = None
    if tokenizer is not None:
        tokenizer_file = Path(f"{out}.tokenizer.json")
        tokenizer.save(tokenizer_file)
        text = {"tokenizer": tokenizer_file.name, "max_length": data.config.max_length, "pad_id": tokenizer.pad_id}
    report = ExportReport(path=out, sidecar=sidecar_path(out), format=format, quantized=quantize,
                          modalities=spec.modalities, inputs=spec.inputs,
                          verification=verification(cases, reference, float_probs),
                          quantization=quantization, size_bytes=out.stat().st_size,
                          seconds=time.perf_counter() - started)
    measured = report.to_dict()
    sidecar = {
        "version": SIDECAR_VERSION, **spec.to_dict(), "file": out.name, "quantized": quantize,
        "exporter": f"torch.onnx.export (TorchScript-based), opset {OPSET}" if format == "onnx" else "torch.jit.trace",
        "outputs": [{"name": name, "shape": ["batch", config.model.num_classes], "dtype": "float32"}
                    for name in OUTPUTS],
        "run": str(run_dir.resolve()), "checkpoint": checkpoint, "fingerprint": run_fingerprint(run_dir, checkpoint),
        "fusion": config.model.fusion.name, "label": config.data.label, "text": text,
        "verification": measured["verification"], "quantization": measured["quantization"],
        "versions": _versions(),
    }
    atomic_write_text(sidecar_path(out), json.dumps(sidecar, indent=2))
    return report


def _versions() -> dict[str, str]:
    """Versions of the libraries an export depends on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("medfusion", "torch", "onnx", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
