"""The usual alternative to cancel247, for comparison: a plain Celery task.

It does what a team would write without cancel247: log in once per process,
POST CancelOrder with requests, let Celery retry transient failures
(``autoretry_for`` with ``retry_backoff``), and keep the outcome in Celery's
SQLAlchemy database result backend. It keeps no attempt rows and no
duplicate check. bench/pipeline.py starts it as
``celery -A alternative worker -P threads`` with these variables set:

==========================  ==============================================
``BENCH_ALT_BROKER_URL``    Redis broker, e.g. redis://127.0.0.1:6379/11
``BENCH_ALT_BACKEND_URL``   result backend, e.g. db+postgresql+psycopg://...
``BENCH_ALT_API_URL``       carrier base URL (the sandbox)
``BENCH_ALT_USERNAME``      ClientLogin account
``BENCH_ALT_PASSWORD``      ClientLogin password
``BENCH_ALT_QUEUE``         queue name
``BENCH_ALT_CONCURRENCY``   HTTP connection pool size (the worker's -c)
==========================  ==============================================
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests
from celery import Celery
from requests.adapters import HTTPAdapter

LOGIN_PATH = "/api/Client/ClientLogin"
CANCEL_PATH = "/Api/Customer/CancelOrder"
TASK_NAME = "alternative.cancel_order"
# Connect and read timeouts in seconds, the same as cancel247's defaults.
TIMEOUT = (5.0, 15.0)


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"{name} is missing: bench/pipeline.py sets it before starting this worker")
    return value


class CarrierBusy(Exception):
    """The carrier returned code 6 (busy, try again later)."""


app = Celery("alternative")
app.conf.update(
    broker_url=_env("BENCH_ALT_BROKER_URL", "redis://127.0.0.1:6379/11"),
    result_backend=_env("BENCH_ALT_BACKEND_URL", "db+sqlite:///alternative-results.sqlite3"),
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_default_queue=_env("BENCH_ALT_QUEUE", "alternative"),
    broker_connection_retry_on_startup=True,
    timezone="UTC",
    enable_utc=True,
)

_session = requests.Session()
_adapter = HTTPAdapter(pool_maxsize=int(_env("BENCH_ALT_CONCURRENCY", "16")))
_session.mount("http://", _adapter)
_session.mount("https://", _adapter)
_token: dict[str, str] = {}
_token_lock = threading.Lock()


def _credentials() -> dict[str, str]:
    with _token_lock:
        if not _token:
            response = _session.post(
                _env("BENCH_ALT_API_URL") + LOGIN_PATH,
                json={"UserName": _env("BENCH_ALT_USERNAME"), "Password": _env("BENCH_ALT_PASSWORD")},
                timeout=TIMEOUT,
            )
            response.raise_for_status()
            data = response.json()
            _token.update(ClientID=str(data["ClientID"]), Token=data["Token"])
        return dict(_token)


@app.task(
    name=TASK_NAME,
    bind=True,
    autoretry_for=(requests.RequestException, CarrierBusy),
    retry_backoff=True,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def cancel_order(self: Any, order_code: str) -> dict[str, Any]:
    """Cancel one order; transient failures raise and Celery retries them."""
    response = _session.post(
        _env("BENCH_ALT_API_URL") + CANCEL_PATH,
        json={"OrderCode": order_code},
        headers=_credentials(),
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    data = response.json()
    code = str(data.get("ErrorCode"))
    if code == "6":
        raise CarrierBusy(data.get("ErrorMessage"))
    return {"order_code": order_code, "error_code": code, "message": data.get("ErrorMessage")}
