"""Modality encoders: each maps one modality's input to ``EncoderOutput(pooled, tokens, token_mask)``.

Importing this package registers every encoder in :data:`ENCODERS` (one registry per modality).
"""

from medfusion.encoders.base import ENCODERS, Encoder, register_encoder
from medfusion.encoders.image import ConvEncoder, EfficientNetLite0Encoder, MonaiDenseNetEncoder, MonaiViTEncoder
from medfusion.encoders.patch import PatchConvEncoder
from medfusion.encoders.signal import SignalLSTM, SignalResNet1d
from medfusion.encoders.text import PretrainedTextEncoder, TextTransformerEncoder
from medfusion.encoders.video import VideoEncoder
from medfusion.encoders.vitals import FeatureStandardizer, VitalsMLP

__all__ = [
    "ENCODERS",
    "ConvEncoder",
    "EfficientNetLite0Encoder",
    "Encoder",
    "FeatureStandardizer",
    "MonaiDenseNetEncoder",
    "MonaiViTEncoder",
    "PatchConvEncoder",
    "PretrainedTextEncoder",
    "SignalLSTM",
    "SignalResNet1d",
    "TextTransformerEncoder",
    "VideoEncoder",
    "VitalsMLP",
    "register_encoder",
]
