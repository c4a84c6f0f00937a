"""Fusion strategies behind one interface: ``fusion(features, present) -> FusionOutput``.

Importing this package registers every strategy in :data:`FUSIONS`.
"""

from medfusion.fusion.base import FUSIONS, Fusion
from medfusion.fusion.cross_attention import CrossAttentionFusion
from medfusion.fusion.early import EarlyFusion
from medfusion.fusion.intermediate import IntermediateFusion
from medfusion.fusion.joint_embedding import JointEmbeddingFusion
from medfusion.fusion.late import LateFusion

__all__ = [
    "FUSIONS",
    "CrossAttentionFusion",
    "EarlyFusion",
    "Fusion",
    "IntermediateFusion",
    "JointEmbeddingFusion",
    "LateFusion",
]
