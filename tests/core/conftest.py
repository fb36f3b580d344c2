"""Shared set-up for the core tests."""

from __future__ import annotations

import contextlib
import warnings

# When a property fails, hypothesis imports its patch writer, whose libcst dependency uses the
# deprecated mypy_extensions.TypedDict; under ``filterwarnings = error`` that turns a readable
# falsifying example into a pytest INTERNALERROR. Import it once now, quietly. (A
# ``filterwarnings`` entry in pyproject.toml would be the cleaner fix.)
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401
