"""Turning raw data (clinical text, ...) into model inputs."""
