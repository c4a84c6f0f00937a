"""Evaluation: predictions with modalities removed, metrics with confidence intervals,
explanations, computational cost, and the measured comparison of fusion strategies."""
