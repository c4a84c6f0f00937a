"""medfusion: multimodal medical AI — modality encoders, fusion strategies, and their measured comparison."""

__version__ = "0.1.0"
