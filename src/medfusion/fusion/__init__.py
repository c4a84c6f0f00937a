"""Fusion strategies behind one interface."""
