"""The package version (one place; read by packaging, the CLI, the worker and job files)."""

__version__ = "0.2.0"
