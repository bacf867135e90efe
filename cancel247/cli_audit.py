"""Commands for auditors: export, stats and prune."""

from __future__ import annotations

from cancel247.cli import cli  # noqa: F401
