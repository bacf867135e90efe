"""`cancel247 demo` with nothing configured: every status, exit 0, nothing left running."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cancel247.local import settings_env

pytestmark = pytest.mark.integration


def test_demo_reaches_every_status() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cancel247", "demo"],
        env=settings_env({}) | {"COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for status in ("succeeded", "rejected", "failed", "uncertain", "duplicate", "invalid"):
        assert f"│ {status}" in result.stdout, status
    assert "statuses not reached" not in result.stdout
    assert "history of order" in result.stdout
    assert "Trạng thái không hợp lệ để xóa." in result.stdout
