"""Modality encoders."""
