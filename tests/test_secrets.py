"""No secret leaks anywhere a person or a log collector can read, and TLS checks cannot be switched off.

The flow test runs a worker with secrets that are easy to grep: the carrier
password, the fixed token, the tokens the sandbox issues, and a database
password in the PostgreSQL URL (the local trust authentication accepts it).
It drives a re-login, a failed login and a replay. Then it searches the
worker log, every CLI output, every audit table, the broker's keys and the
config error texts.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import MetaData, select
from sqlalchemy.engine import make_url

from cancel247.audit.db import get_engine
from cancel247.audit.migrate import SchemaOutdated, check_schema
from cancel247.carrier.client import CarrierClient
from cancel247.carrier.errors import Outcome
from cancel247.config import ConfigError, load_settings
from cancel247.local import settings_env
from cancel247.sandbox import Sandbox, SandboxState
from cancel247.worker.app import make_app
from tests.conftest import new_order_code, running_stack
from tests.test_cli import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CARRIER_PASSWORD = "PwSecret-Carrier-7f1c9e"
FIXED_TOKEN = "TokSecret" + "9d2b" * 12
DB_PASSWORD = "DbSecret-4471xq"
SANDBOX_PORT = 18252
TLS_PORT = 18253


def assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:6]}...) appears in {where}"


def dump_tables(database_url: str) -> str:
    engine = get_engine(database_url)
    metadata = MetaData()
    metadata.reflect(engine)
    lines = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)}")
    return "\n".join(lines)


def dump_redis(url: str) -> str:
    client = redis.Redis.from_url(url)
    parts = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"list":
            parts.extend(map(repr, client.lrange(key, 0, -1)))
        elif kind == b"hash":
            parts.extend(map(repr, client.hvals(key)))
        elif kind == b"string":
            parts.append(repr(client.get(key)))
        parts.append(repr(key))
    return "\n".join(parts)


def config_error_texts(secret_db_url: str, redis_url: str, tmp_path: Path) -> list[str]:
    """Error texts of settings and schema checks given values that contain the secrets."""
    texts = []
    bad_values: list[dict[str, Any]] = [
        {"database_url": f"mysql://shop:{DB_PASSWORD}@db/x"},
        {"database_url": f"postgresql://shop:{DB_PASSWORD}@db:notaport/x"},
        {"broker_url": f"redis://:{DB_PASSWORD}@redis:6379/abc"},
        {"broker_url": f"rediss://:{DB_PASSWORD}@redis:6379/0?ssl_cert_reqs=none"},
        {"api_url": f"ftp://shop:{CARRIER_PASSWORD}@carrier"},
        {"api_url": f"http://shop:{CARRIER_PASSWORD}@carrier.example"},
        {"token": FIXED_TOKEN},
        {"password": CARRIER_PASSWORD},
        {"username": "shop", "password": CARRIER_PASSWORD, "retry_min_seconds": 50, "retry_max_seconds": 1},
    ]
    for values in bad_values:
        with pytest.raises(ConfigError) as caught:
            load_settings(**values)
        texts.append(str(caught.value))
    with pytest.raises(SchemaOutdated) as outdated:
        check_schema(get_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}"))
    texts.append(str(outdated.value))
    texts.append(repr(load_settings(database_url=secret_db_url, password=CARRIER_PASSWORD, username="u", token=FIXED_TOKEN, client_id="1")))
    closed = make_url(secret_db_url).set(port=1).render_as_string(hide_password=False)
    for args in (["history", "WKH1"], ["failed"], ["worker"]):
        env = {"database_url": closed, "broker_url": redis_url, "api_url": "http://127.0.0.1:1", "client_id": "1", "token": FIXED_TOKEN}
        result = run_cli(*args, env=settings_env(env))
        assert result.returncode != 0
        texts.append(result.stdout + result.stderr)
    return texts


def test_flow_leaks_no_secret(redis_url: str, postgres_database: str, tmp_path: Path) -> None:
    secret_db_url = make_url(postgres_database).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    state = SandboxState(password=CARRIER_PASSWORD, token=FIXED_TOKEN)
    outputs: list[tuple[str, str]] = []
    with Sandbox(state, port=SANDBOX_PORT) as sandbox, running_stack(
        "postgresql", secret_db_url, redis_url, sandbox, tmp_path,
        token=FIXED_TOKEN, password=CARRIER_PASSWORD, queue="cancel247-test-secrets",
    ) as stack:
        env = settings_env(stack.values) | {"COLUMNS": "250"}

        # The fixed token is refused, the worker logs in again with the password.
        state.expire_tokens()
        relogin_code = new_order_code("SEC")
        enqueued = run_cli("enqueue", relogin_code, "--reason", "secret test", env=env)
        outputs.append(("enqueue", enqueued.stdout + enqueued.stderr))
        relogin_id = enqueued.stdout.split("\t")[0]
        stack.wait([relogin_id])
        assert stack.request(relogin_id).status == "succeeded"

        # Every token is refused and so is the password: the request fails.
        state.expire_tokens()
        state.password = "changed-by-the-carrier"
        failed_code = new_order_code("SEC")
        [failed_id] = stack.enqueue(failed_code)
        stack.wait([failed_id])
        assert stack.request(failed_id).status == "failed"
        assert "carrier login failed" in (stack.request(failed_id).detail or "")

        state.password = CARRIER_PASSWORD
        for args in (
            ["failed"], ["failed", "--json"], ["history", failed_code], ["history", failed_code, "--json"],
            ["replay", failed_id, "--reason", "password fixed", "--yes"], ["recover", "--dry-run"], ["db", "current"],
        ):
            result = run_cli(*args, env=env)
            assert result.returncode == 0, result.stderr
            outputs.append((" ".join(args), result.stdout + result.stderr))
        stack.wait([failed_id])
        assert stack.request(failed_id).status == "succeeded"
        outputs.append(("history after replay", run_cli("history", failed_code, env=env).stdout))

        issued = sorted(t for t in state._tokens if t != FIXED_TOKEN)
        assert issued, "the sandbox issued no token, so the re-login was not exercised"
        assert len(state.calls(path="ClientLogin")) >= 3
        log_text = stack.worker.output()

    secrets = [CARRIER_PASSWORD, FIXED_TOKEN, DB_PASSWORD, *issued]
    assert_clean(log_text, secrets, "the worker log")
    for name, text in outputs:
        assert_clean(text, secrets, f"the output of `cancel247 {name}`")
    tables = dump_tables(secret_db_url)
    assert failed_id in tables  # the dump covers the rows of this flow
    assert_clean(tables, secrets, "the audit tables")
    assert_clean(dump_redis(redis_url), secrets, "the broker's keys")
    for text in config_error_texts(secret_db_url, redis_url, tmp_path):
        assert_clean(text, secrets, f"a config error ({text[:60]!r})")


# TLS ----------------------------------------------------------------------------


@pytest.fixture
def tls_sandbox(tmp_path: Path) -> Any:
    """A sandbox behind TLS with a self-signed certificate for 127.0.0.1; yields (sandbox, certificate path)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sandbox = Sandbox(SandboxState(), port=TLS_PORT)
    sandbox._server.socket = context.wrap_socket(sandbox._server.socket, server_side=True)
    with sandbox:
        yield sandbox, cert


def tls_settings(**values: Any) -> Any:
    from cancel247.sandbox import DEFAULT_CLIENT_ID, DEFAULT_TOKEN

    return load_settings(
        api_url=f"https://127.0.0.1:{TLS_PORT}", client_id=DEFAULT_CLIENT_ID, token=DEFAULT_TOKEN,
        connect_timeout_seconds=2, read_timeout_seconds=2, **values,
    )


def test_tls_verified_by_default(tls_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox, cert = tls_sandbox
    # Environment variables that make requests trust a bundle or skip checks are ignored.
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    client = CarrierClient(tls_settings())
    assert client._session.verify is True

    reply = client.cancel_order(new_order_code("TLS"), client.credentials())

    assert reply.outcome == Outcome.TRANSIENT
    assert "TLS error, request not sent" in (reply.detail or "")
    assert sandbox.state.calls() == []


def test_ca_bundle_reaches_requests(tls_sandbox: Any) -> None:
    sandbox, cert = tls_sandbox
    client = CarrierClient(tls_settings(ca_bundle=str(cert)))
    assert client._session.verify == str(cert)

    code = new_order_code("TLS")
    reply = client.cancel_order(code, client.credentials())

    assert reply.outcome == Outcome.SUCCEEDED
    assert [c["order_code"] for c in sandbox.state.calls(path="CancelOrder")] == [code]


def test_missing_ca_bundle_named() -> None:
    with pytest.raises(ConfigError, match="CANCEL247_CA_BUNDLE='/no/such.pem' is invalid: file not found"):
        load_settings(ca_bundle="/no/such.pem")


def test_plain_http_only_for_loopback() -> None:
    with pytest.raises(ConfigError, match="CANCEL247_API_URL is invalid: must start with https://: http:// would send"):
        load_settings(api_url="http://customer-api.247express.vn")
    assert load_settings(api_url="http://127.0.0.1:8247").api_url == "http://127.0.0.1:8247"
    assert load_settings(api_url="http://localhost:8247/").api_url == "http://localhost:8247"


@pytest.mark.parametrize("name", ["CANCEL247_VERIFY", "CANCEL247_SSL_VERIFY", "CANCEL247_TLS_VERIFY", "CANCEL247_INSECURE"])
def test_verify_off_variable_refused(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(name, "false")
    with pytest.raises(ConfigError, match=f"{name} is not a setting: TLS certificate verification cannot be turned off"):
        load_settings()

    result = run_cli("history", "WKH1", env=settings_env({"database_url": f"sqlite:///{tmp_path / 'a.sqlite3'}"}) | {name: "0"})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {name} is not a setting")


def test_rediss_broker_verified() -> None:
    app = make_app(load_settings(broker_url="rediss://redis.example:6380/0"))
    with app.connection_for_write() as connection:
        assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    with pytest.raises(ConfigError, match="CANCEL247_BROKER_URL is invalid: ssl_cert_reqs other than CERT_REQUIRED"):
        load_settings(broker_url="rediss://redis.example:6380/0?ssl_cert_reqs=CERT_NONE")
    with pytest.raises(ConfigError, match="ssl_check_hostname=false"):
        load_settings(broker_url="rediss://redis.example:6380/0?ssl_check_hostname=false")
    assert not make_app(load_settings(broker_url="redis://127.0.0.1:6379/0")).conf.broker_use_ssl


def test_pickle_not_accepted_by_config() -> None:
    conf = make_app(load_settings()).conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
