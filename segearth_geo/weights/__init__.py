"""Bundled model weights (package data)."""
