"""Commands that keep the pipeline healthy: doctor and recover."""

from __future__ import annotations

from cancel247.cli import cli  # noqa: F401
