"""The prefork pool: each child process opens its own database connections."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cancel247.sandbox import Sandbox, SandboxState
from tests.conftest import Stack, new_order_code, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefork_stack(
    redis_url: str, sandbox: Sandbox, postgres_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        "prefork", postgres_database, redis_url, sandbox, tmp_path_factory.mktemp("prefork"), pool="prefork", concurrency=3
    ) as running:
        yield running


def test_prefork_children_record_every_call(prefork_stack: Stack, carrier: SandboxState) -> None:
    codes = [new_order_code("PF") for _ in range(6)]
    for code in codes:
        carrier.set_order(code, "new", ["code6"])
    ids = prefork_stack.enqueue(*codes)
    prefork_stack.wait(ids)

    workers = set()
    for code, request_id in zip(codes, ids, strict=True):
        assert prefork_stack.request(request_id).status == "succeeded"
        attempts = prefork_stack.attempts(request_id)
        assert [a.outcome for a in attempts] == ["transient", "succeeded"]
        workers.update(a.worker for a in attempts)
        assert len(prefork_stack.carrier_calls(code)) == len(attempts)
    # The attempts were written by child processes, not by the parent.
    assert str(prefork_stack.worker.process.pid) not in {w.rsplit(":", 1)[1] for w in workers}
