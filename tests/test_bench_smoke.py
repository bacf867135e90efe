"""bench/pipeline.py --quick: it runs every scenario and writes well-formed results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cancel247.local import settings_env
from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "pipeline.py"
SCENARIOS = (
    "sandbox_capacity", "limit", "cancel247_postgresql", "cancel247_sqlite", "alternative",
    "enqueue_postgresql", "enqueue_sqlite", "latency", "scaling_1", "scaling_8", "scaling_32", "scaling_64",
)
OTHER_SECTION = "<!-- audit:start -->\n## Audit store\n\nkept as it was\n<!-- audit:end -->\n"


@pytest.mark.timeout(400)
def test_quick_run_writes_results(redis_url: str, tmp_path: Path) -> None:
    suffix = "_smoke" + os.environ.get("CANCEL247_TEST_NAMESPACE", "")
    (tmp_path / "RESULTS.md").write_text("# Benchmarks\n\n" + OTHER_SECTION, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--quick", "--output-dir", str(tmp_path),
            "--broker-url", redis_url, "--alt-broker-url", redis_url,
            "--postgres-admin-url", POSTGRES_ADMIN_URL,
            "--database", f"cancel247_bench{suffix}", "--alt-database", f"cancel247_bench_alt{suffix}",
        ],
        env=settings_env({}) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    report = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert report["quick"] is True
    assert report["errors"] == {}
    assert sorted(report["results"]) == sorted(SCENARIOS)
    for name in ("cancel247_postgresql", "cancel247_sqlite", "alternative"):
        assert report["results"][name]["rate"] > 0, name
    for name in ("cancel247_postgresql", "cancel247_sqlite", "scaling_64"):
        assert report["results"][name]["attempts_match_calls"] is True, name
    assert report["results"]["latency"]["carrier_p99_ms"] >= report["results"]["latency"]["carrier_p50_ms"]
    assert report["results"]["scaling_64"]["worker_peak_rss_mb"] > 0
    assert report["results"]["enqueue_postgresql"]["bulk_rate"] > 0
    assert report["machine"]["logical_cpus"] >= 1
    assert len(report["targets"]) == 5
    for target in report["targets"]:
        assert target["verdict"] in ("pass", "miss"), target

    page = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert page.count("<!-- pipeline:start -->") == 1
    assert page.count("<!-- pipeline:end -->") == 1
    assert OTHER_SECTION in page
    assert "cancel247 (PostgreSQL) / limit" in page
    assert "| target | threshold | measured | verdict |" in page
