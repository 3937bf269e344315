"""A segmenter module that raises at import (tests that the CLI reports it in one line)."""

raise ImportError("simulated import-time failure of a segmenter module")
