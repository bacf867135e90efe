"""Faults against real processes: a worker killed mid-call, Redis and PostgreSQL restarts,
three workers on one SQLite file, and `cancel247 doctor`.

Every scenario checks the two promises: no request is lost (each ends with a
final status) and no carrier call lacks its audit row (sandbox CancelOrder
calls == attempt rows, per order). The figures each test measures are printed;
run with `-s` to see them.

This file starts its own redis-server on 127.0.0.1:16380 and its own
PostgreSQL on 127.0.0.1:15440 (as the `postgres` user, from
/usr/lib/postgresql/*/bin), and leaves 127.0.0.1:16389 unused as a broker
that is down.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from cancel247.audit.db import dispose_engines
from cancel247.audit.models import Attempt, CancelRequest, RequestStatus
from cancel247.carrier.errors import Outcome
from cancel247.config import load_settings
from cancel247.local import WorkerProcess, settings_env
from cancel247.sandbox import DEFAULT_PASSWORD, DEFAULT_TOKEN, DEFAULT_USERNAME, Sandbox, SandboxState
from cancel247.tasks.cancel import AUDIT_RETRY_MAX_SECONDS, audit_retry_countdown
from cancel247.worker.app import celery_config

from tests.conftest import WORKER_SETTINGS, Stack, new_order_code, running_stack

REDIS_PORT = 16380
POSTGRES_PORT = 15440
# Nothing listens here: the broker the doctor must report as down.
DEAD_BROKER_URL = "redis://127.0.0.1:16389/0"
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=Path("/usr/lib/postgresql/missing/bin"))
FINAL_STATUSES = {s.value for s in (RequestStatus.SUCCEEDED, RequestStatus.REJECTED, RequestStatus.FAILED,
                                    RequestStatus.UNCERTAIN, RequestStatus.DUPLICATE, RequestStatus.INVALID)}
SECRETS = (DEFAULT_TOKEN, DEFAULT_PASSWORD)


# Servers of our own ------------------------------------------------------------


class RedisServer:
    """A redis-server child with an append-only file in a temporary folder."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.directory}/redis.log")
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        """Stop with SIGTERM: Redis writes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, run as the `postgres` user (it refuses root)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="cancel247-faults-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _pg(self, program: str, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", str(PG_BIN / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=90)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="cancel247-faults-redis-"))
    server = RedisServer(REDIS_PORT, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    if not (PG_BIN / "pg_ctl").exists():
        pytest.fail(f"PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (looked in {PG_BIN})")
    server = PostgresServer(POSTGRES_PORT)
    try:
        server.init()
        server.start()
        yield server
    finally:
        dispose_engines()
        server.remove()


# Helpers -------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout_seconds: float, what: str, interval: float = 0.3) -> float:
    """Poll ``condition`` until true; return the seconds it took, or fail naming ``what``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_seconds:
            pytest.fail(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def statuses(stack: Stack, ids: list[str]) -> dict[str, str]:
    with stack.store.transaction() as session:
        rows = session.execute(select(CancelRequest.id, CancelRequest.status).where(CancelRequest.id.in_(ids))).all()
    return {row.id: row.status for row in rows}


def all_final(stack: Stack, ids: list[str]) -> bool:
    found = statuses(stack, ids)
    return len(found) == len(ids) and all(status in FINAL_STATUSES for status in found.values())


def assert_every_call_audited(stack: Stack, codes: list[str]) -> tuple[int, int]:
    """Assert sandbox CancelOrder calls == attempt rows for each order; return (calls, rows) in total."""
    total_calls = total_rows = 0
    for code in codes:
        calls = len(stack.carrier_calls(code))
        rows = stack.attempt_rows_for(code)
        assert calls == rows, f"order {code}: {calls} carrier call(s) but {rows} attempt row(s)"
        total_calls += calls
        total_rows += rows
    return total_calls, total_rows


def assert_no_secrets(text: str, where: str, extra: tuple[str, ...] = ()) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in text, f"a secret reached {where}"


def report(name: str, **figures: object) -> None:
    print(f"\n[measured] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)


# 1. Worker killed during a carrier call ---------------------------------------------


@pytest.mark.timeout(240)
def test_sigkill_mid_call_redelivers_once(
    redis_url: str, sandbox: Sandbox, carrier: SandboxState, postgres_database: str, tmp_path: Path
) -> None:
    # One attempt per run and short timeouts give the shortest visibility
    # timeout the start-up check accepts, so the redelivery comes in about 75 s.
    overrides = {
        "retry_max_attempts": 1,
        "connect_timeout_seconds": 0.5,
        "read_timeout_seconds": 3,
        "unacked_restore_interval_seconds": 1,
        "queue": "cancel247-test-kill",
    }
    longest = load_settings(**{**WORKER_SETTINGS, **overrides}).longest_task_seconds
    overrides["visibility_timeout_seconds"] = math.floor(longest) + 1
    hung = [new_order_code("KIL") for _ in range(4)]
    normal = [new_order_code("KOK") for _ in range(4)]
    for code in hung:
        # The sandbox cancels the order, then stalls 60 s before replying.
        carrier.set_order(code, faults=["hang:60"])

    with running_stack("postgresql", postgres_database, redis_url, sandbox, tmp_path, **overrides) as stack:
        settings = stack.settings
        hung_ids = stack.enqueue(*hung)
        wait_for(lambda: all(len(stack.carrier_calls(c)) == 1 for c in hung), 30, "the four hung calls")
        normal_ids = stack.enqueue(*normal)

        killed_at = datetime.now(UTC)
        stack.worker.process.kill()
        stack.worker.process.wait(10)
        assert stack.worker.process.returncode == -9

        for request_id in hung_ids:
            (attempt,) = stack.attempts(request_id)
            assert attempt.outcome == Outcome.IN_FLIGHT.value

        second = WorkerProcess(settings_env(stack.values), tmp_path / "worker-2.log", extra_args=["--hostname", "second@%h"])
        try:
            second.wait_ready()
            bound = settings.redelivery_bound_seconds
            wait_for(lambda: all_final(stack, hung_ids + normal_ids), bound + 60, "every request to end after the kill")
        finally:
            second.stop()
        log_text = second.output()

    assert_no_secrets(log_text, "the second worker's log")
    assert "resumed after a worker stopped" in log_text

    for request_id in normal_ids:
        assert stack.request(request_id).status == RequestStatus.SUCCEEDED.value

    delays = []
    for code, request_id in zip(hung, hung_ids, strict=True):
        request = stack.request(request_id)
        # The stalled call did cancel the order, so the second call gets 14.
        assert request.status == RequestStatus.UNCERTAIN.value, request.detail
        first, again = stack.attempts(request_id)
        assert first.outcome == Outcome.INTERRUPTED.value
        assert again.outcome == Outcome.PERMANENT.value
        assert again.error_code == "14"
        calls = len(stack.carrier_calls(code))
        assert calls == 2, f"order {code}: {calls} calls, expected the stalled one and one after redelivery"
        extra_calls = calls - 1
        assert extra_calls <= 1, "more than one extra call for one kill"
        # Redis must not hand the message out again before the visibility timeout.
        assert (again.started_at - first.started_at).total_seconds() >= settings.visibility_timeout_seconds - 1
        delays.append((again.started_at - killed_at).total_seconds())

    calls, rows = assert_every_call_audited(stack, hung + normal)
    assert max(delays) <= settings.redelivery_bound_seconds + 15
    report(
        "worker SIGKILL with 4 calls in flight",
        visibility_timeout_s=settings.visibility_timeout_seconds,
        restore_interval_s=settings.unacked_restore_interval_seconds,
        redelivered_after_kill_s=f"{min(delays):.1f}..{max(delays):.1f}",
        carrier_calls=calls, attempt_rows=rows, extra_calls=len(hung), lost=0,
    )


def test_countdown_stays_under_visibility_timeout() -> None:
    cases = [
        {},
        WORKER_SETTINGS,
        {**WORKER_SETTINGS, "visibility_timeout_seconds": 97},
        {"visibility_timeout_seconds": 445},
        {"visibility_timeout_seconds": 100000},
    ]
    for values in cases:
        settings = load_settings(**values)
        settings.check_visibility_timeout()
        for retries in range(30):
            countdown = audit_retry_countdown(retries, settings)
            assert countdown >= 0
            assert countdown <= AUDIT_RETRY_MAX_SECONDS
            # The message waits the countdown, then the task runs: all of it
            # must fit in the visibility timeout.
            assert countdown + settings.longest_task_seconds < settings.visibility_timeout_seconds, values


def test_celery_config_restores_within_interval() -> None:
    settings = load_settings(visibility_timeout_seconds=700, unacked_restore_interval_seconds=7)
    options = celery_config(settings)["broker_transport_options"]
    assert options["visibility_timeout"] == 700
    assert options["unacked_restore_interval"] == 7
    assert options["unacked_restore_throttle"] == 1
    assert settings.redelivery_bound_seconds == 707


# 2. Redis restarted twice ---------------------------------------------------------


@pytest.mark.timeout(180)
def test_redis_restarts_twice_worker_resumes(
    own_redis: RedisServer, sandbox: Sandbox, carrier: SandboxState, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    before = [new_order_code("RBF") for _ in range(30)]
    after = [new_order_code("RAF") for _ in range(12)]
    # 400 ms per call on 4 threads: the first batch takes about 3 s, so calls
    # are in flight and messages queued while Redis restarts.
    carrier.configure(latency_ms=400)
    overrides = {"queue": "cancel247-test-redis", "read_timeout_seconds": 3}

    with running_stack("sqlite", database_url, own_redis.url, sandbox, tmp_path, **overrides) as stack:
        before_ids = stack.enqueue(*before)
        wait_for(lambda: any(stack.carrier_calls(c) for c in before), 20, "the first calls")
        for _ in range(2):
            own_redis.stop()
            time.sleep(1.0)
            own_redis.start()
            time.sleep(1.5)
        restarted = time.monotonic()
        after_ids = stack.enqueue(*after)
        wait_for(lambda: all_final(stack, after_ids), 90, "requests enqueued after the restarts")
        recovered_in = time.monotonic() - restarted
        wait_for(lambda: all_final(stack, before_ids), 60, "requests enqueued before the restarts")
        assert stack.worker.process.poll() is None, "the worker exited"
        log_text = stack.worker.output()

    assert log_text.count("Connected to redis://") >= 3, "the worker did not reconnect twice"
    assert "Traceback" not in log_text
    for request_id in before_ids + after_ids:
        assert stack.request(request_id).status == RequestStatus.SUCCEEDED.value, stack.request(request_id).detail
    calls, rows = assert_every_call_audited(stack, before + after)
    extra = calls - len(before + after)
    assert extra == 0, f"{extra} extra carrier call(s)"
    report(
        "Redis restarted twice (SIGTERM, 1 s down, 1.5 s up)",
        after_restart_final_s=f"{recovered_in:.1f}", requests=len(before) + len(after),
        carrier_calls=calls, attempt_rows=rows, lost=0,
    )


# 3. PostgreSQL restarted mid-run ---------------------------------------------------


@pytest.mark.timeout(240)
def test_postgres_restart_mid_run(
    redis_url: str, own_postgres: PostgresServer, sandbox: Sandbox, carrier: SandboxState, tmp_path: Path
) -> None:
    first = [new_order_code("PGA") for _ in range(40)]
    later = [new_order_code("PGB") for _ in range(10)]
    carrier.configure(latency_ms=100)

    with running_stack("postgresql", own_postgres.url, redis_url, sandbox, tmp_path, queue="cancel247-test-pgrestart") as stack:
        first_ids = stack.enqueue(*first)
        wait_for(lambda: sum(1 for c in first if stack.carrier_calls(c)) >= 8, 30, "the first calls")
        own_postgres.stop()
        down_at = time.monotonic()
        # Tasks keep arriving while the database is down; their claims fail.
        time.sleep(3)
        own_postgres.start()
        up_after = time.monotonic() - down_at
        wait_for(lambda: all_final(stack, first_ids), 150, "requests that ran into the outage")
        recovered_in = time.monotonic() - down_at
        later_ids = stack.enqueue(*later)
        wait_for(lambda: all_final(stack, later_ids), 60, "requests enqueued after the restart")
        log_text = stack.worker.output()

    # Either a claim failed (carrier not called) or a write after a call was retried.
    unavailable = log_text.count("audit store unavailable")
    assert unavailable > 0, "no task met the outage: the test proved nothing"
    assert "Traceback" not in log_text
    for request_id in later_ids:
        assert stack.request(request_id).status == RequestStatus.SUCCEEDED.value
    first_statuses = [stack.request(i).status for i in first_ids]
    calls, rows = assert_every_call_audited(stack, first + later)
    extra = calls - len(first + later)
    report(
        "PostgreSQL stopped for 3 s mid-run",
        down_s=f"{up_after:.1f}", all_final_after_s=f"{recovered_in:.1f}",
        tasks_retried=unavailable, carrier_calls=calls, attempt_rows=rows, extra_calls=extra,
        statuses={s: first_statuses.count(s) for s in set(first_statuses)}, lost=0,
    )
    # The worker keeps a reply that arrives while the database is down and
    # writes it once the database is back, so no call is made twice.
    assert extra == 0
    assert first_statuses == [RequestStatus.SUCCEEDED.value] * len(first)


def test_worker_start_database_down_one_line(sandbox: Sandbox, redis_url: str, tmp_path: Path) -> None:
    values = {
        **WORKER_SETTINGS,
        "api_url": sandbox.url,
        "username": DEFAULT_USERNAME,
        "password": DEFAULT_PASSWORD,
        "broker_url": redis_url,
        "database_url": "postgresql+psycopg://postgres:dbPa55word@127.0.0.1:15449/none",
        "queue": "cancel247-test-nodb",
    }
    worker = WorkerProcess(settings_env(values), tmp_path / "worker.log")
    try:
        worker.process.wait(60)
    finally:
        worker.stop()
    output = worker.output()
    assert worker.process.returncode == 2, output[-2000:]
    assert "error: cannot open the audit store at postgresql+psycopg://postgres:***@127.0.0.1:15449/none" in output
    assert "Traceback" not in output
    assert_no_secrets(output, "the worker's output", ("dbPa55word",))


# 4. Three workers on one SQLite file ----------------------------------------------------


@pytest.mark.timeout(240)
def test_sqlite_three_workers_drop_nothing(
    redis_url: str, sandbox: Sandbox, carrier: SandboxState, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    codes = [new_order_code("SQL") for _ in range(300)]
    # Code 6 on a fifth of the calls: retries add attempt rows to write.
    carrier.configure(code6_rate=0.2)

    with running_stack("sqlite", database_url, redis_url, sandbox, tmp_path, queue="cancel247-test-sqlite3") as stack:
        others = [
            WorkerProcess(settings_env(stack.values), tmp_path / f"worker-{n}.log", extra_args=["--hostname", f"w{n}@%h"])
            for n in (2, 3)
        ]
        try:
            for worker in others:
                worker.wait_ready()
            started = time.monotonic()
            ids = stack.enqueue(*codes)
            took = wait_for(lambda: all_final(stack, ids), 180, "300 requests on three workers", interval=0.5)
        finally:
            for worker in others:
                worker.stop()
        logs = [stack.worker.output(), *(w.output() for w in others)]
        elapsed = time.monotonic() - started

    found = statuses(stack, ids)
    assert len(found) == len(ids)
    assert set(found.values()) <= {RequestStatus.SUCCEEDED.value, RequestStatus.FAILED.value}
    with stack.store.transaction() as session:
        workers = set(session.execute(select(Attempt.worker).where(Attempt.request_id.in_(ids))).scalars())
    assert len({w.rsplit(":", 1)[1] for w in workers}) == 3, f"attempts came from {workers}, not three workers"
    for text in logs:
        assert "database is locked" not in text
        assert "audit store unavailable" not in text
        assert_no_secrets(text, "a worker log")
    calls, rows = assert_every_call_audited(stack, codes)
    report(
        "3 workers x 4 threads on one SQLite file, 20% code 6",
        requests=len(ids), final_in_s=f"{took:.1f}", total_s=f"{elapsed:.1f}", carrier_calls=calls, attempt_rows=rows,
        failed=list(found.values()).count(RequestStatus.FAILED.value), lost=0,
    )


# 5. cancel247 doctor -----------------------------------------------------------------


def run_doctor(env_values: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cancel247", "doctor", "--timeout", "2", *args],
        env=settings_env(env_values), capture_output=True, text=True, timeout=90,
    )


def doctor_checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    document = json.loads(result.stdout)
    return {check["name"]: check for check in document["checks"]}


@pytest.fixture(scope="module")
def doctor_stack(
    redis_url: str, sandbox: Sandbox, postgres_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # The local PostgreSQL trusts every connection, so a password in the URL
    # is accepted and must never appear in the doctor's output.
    url = postgres_database.replace("postgres@", "postgres:dbPa55word@", 1)
    assert "dbPa55word" in url
    with running_stack("postgresql", url, redis_url, sandbox, tmp_path_factory.mktemp("doctor"), queue="cancel247-test-doctor") as stack:
        yield stack


DOCTOR_SECRETS = (DEFAULT_TOKEN, DEFAULT_PASSWORD, "dbPa55word", "wrong-Pa55-9931")


@pytest.mark.timeout(120)
def test_doctor_all_checks_pass(doctor_stack: Stack) -> None:
    as_json = run_doctor(doctor_stack.values, "--json")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    checks = doctor_checks(as_json)
    assert list(checks) == ["broker", "database", "schema", "carrier", "worker"]
    for name, check in checks.items():
        assert check["status"] == "ok", (name, check)
    assert "cancel247-test-doctor@" in checks["worker"]["detail"]

    as_text = run_doctor(doctor_stack.values)
    assert as_text.returncode == 0, as_text.stderr
    lines = as_text.stdout.splitlines()
    assert len(lines) == 5
    assert all(line.startswith("ok ") for line in lines), lines
    for result in (as_json, as_text):
        assert_no_secrets(result.stdout + result.stderr, "doctor output", DOCTOR_SECRETS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("case", "check", "reason"),
    [
        ("broker down", "broker", "start Redis or correct CANCEL247_BROKER_URL"),
        ("unmigrated database", "schema", "run `cancel247 db upgrade`"),
        ("wrong carrier password", "carrier", "correct CANCEL247_USERNAME and CANCEL247_PASSWORD"),
        ("no worker", "worker", "start a worker with `cancel247 worker`"),
    ],
)
def test_doctor_names_failing_check(doctor_stack: Stack, tmp_path: Path, case: str, check: str, reason: str) -> None:
    values = dict(doctor_stack.values)
    if case == "broker down":
        values["broker_url"] = DEAD_BROKER_URL
    elif case == "unmigrated database":
        empty = tmp_path / "empty.sqlite3"
        empty.touch()
        values["database_url"] = f"sqlite:///{empty}"
    elif case == "wrong carrier password":
        values.pop("client_id")
        values.pop("token")
        values["password"] = "wrong-Pa55-9931"
    else:
        values["queue"] = "cancel247-test-nobody"

    as_json = run_doctor(values, "--json")
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    checks = doctor_checks(as_json)
    failed = [name for name, c in checks.items() if c["status"] == "failed"]
    assert failed == [check], checks
    assert reason in checks[check]["fix"]

    as_text = run_doctor(values)
    assert as_text.returncode == 1
    assert f"FAILED  {check}" in as_text.stdout
    assert f"error: 1 check(s) failed: {check}: {reason}" in as_text.stderr
    for result in (as_json, as_text):
        assert_no_secrets(result.stdout + result.stderr, f"doctor output ({case})", DOCTOR_SECRETS)


def test_doctor_skip_for_health_check(doctor_stack: Stack) -> None:
    values = dict(doctor_stack.values, broker_url=DEAD_BROKER_URL)
    result = run_doctor(values, "--json", "--skip", "broker,carrier,worker")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = doctor_checks(result)
    assert checks["broker"]["status"] == "skipped"
    assert checks["worker"]["detail"] == "skipped by --skip"
    assert checks["database"]["status"] == "ok"

    refused = run_doctor(values, "--skip", "brokr")
    assert refused.returncode == 2
    assert "unknown check 'brokr'" in refused.stderr


def test_doctor_hides_credentials_in_carrier_url() -> None:
    from cancel247.doctor import _public_url

    assert _public_url("http://admin:S3cretPW@127.0.0.1:18303") == "http://***@127.0.0.1:18303"
    assert _public_url("https://customer-api.247express.vn/base") == "https://customer-api.247express.vn/base"
