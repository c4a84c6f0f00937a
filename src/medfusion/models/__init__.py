"""Model assembly: the multimodal classifier, its config and the factory."""

from medfusion.models.classifier import ClassificationHead, MultimodalClassifier, drop_modalities
from medfusion.models.config import EncoderConfig, FusionConfig, HeadConfig, ModalityConfig, ModelConfig, load_config, save_config
from medfusion.models.factory import build_model

__all__ = [
    "ClassificationHead",
    "EncoderConfig",
    "FusionConfig",
    "HeadConfig",
    "ModalityConfig",
    "ModelConfig",
    "MultimodalClassifier",
    "build_model",
    "drop_modalities",
    "load_config",
    "save_config",
]
