"""Deployment under compute constraints: ONNX / TorchScript export, int8 quantisation, runtimes.

``export_model(run, "model.onnx", quantize=True)`` writes a verified export and its
sidecar; ``OnnxClassifier("model.onnx").predict_proba(batch)`` runs it without PyTorch's
model code.
"""

from medfusion.deploy.export import ExportReport, QuantizationReport, Verification, export_model
from medfusion.deploy.runtime import ExportSpec, InputSpec, OnnxClassifier, TorchScriptClassifier, load_exported

__all__ = [
    "ExportReport",
    "ExportSpec",
    "InputSpec",
    "OnnxClassifier",
    "QuantizationReport",
    "TorchScriptClassifier",
    "Verification",
    "export_model",
    "load_exported",
]
