"""docker-compose.yml is checked against the Compose specification's JSON schema.

The schema is read from the docker-compose 1.29.2 wheel on PyPI, which ships
compose/config/compose_spec.json; `make test` downloads it into .cache/.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WHEEL = ROOT / ".cache" / "compose-schema" / "docker_compose-1.29.2-py2.py3-none-any.whl"
SCHEMA_MEMBER = "compose/config/compose_spec.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    if not WHEEL.exists():
        pytest.fail(f"{WHEEL} is missing: run `make test` (it downloads the Compose schema)")
    with zipfile.ZipFile(WHEEL) as wheel:
        return json.loads(wheel.read(SCHEMA_MEMBER))


@pytest.fixture(scope="module")
def compose() -> dict:
    os.environ.setdefault("POSTGRES_PASSWORD", "x")
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_file_valid(schema: dict, compose: dict) -> None:
    # The 2021 schema predates the top-level `name`; it is valid in the current specification.
    document = {k: v for k, v in compose.items() if k != "name"}
    jsonschema.Draft201909Validator(schema).validate(document)


def test_schema_rejects_a_broken_file(schema: dict, compose: dict) -> None:
    broken = {k: v for k, v in compose.items() if k != "name"}
    broken["services"] = dict(broken["services"], worker={"image": "x", "depends_on": {"redis": {"condition": "sometimes"}}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


def test_redis_persists_and_services_present(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "worker", "flower"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
