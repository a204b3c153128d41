"""Fixtures the unit tests share: the stack's two tables on an in-process moto server over
real HTTP, and a ``ResultStore`` on them (a module sets ``COUNTER_SHARDS`` for other than the
default)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiobotocore.session import get_session

from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import REGION, provision_stack
from shared.store.result_store import ResultStore


@pytest.fixture(scope="module")
def tables() -> Iterator[tuple[str, str, str]]:
    """(moto's URL, the jobs table, the results table), provisioned from template.yaml."""
    with MotoServer() as server:
        resources = provision_stack(server.url).resources
        yield server.url, resources.jobs_table, resources.results_table


@pytest.fixture
async def store(tables: tuple[str, str, str], request: pytest.FixtureRequest) -> AsyncIterator[ResultStore]:
    url, jobs_table, results_table = tables
    shards = getattr(request.module, "COUNTER_SHARDS", None)
    async with get_session().create_client(
        "dynamodb",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as ddb:
        extra = {} if shards is None else {"counter_shards": shards}
        yield ResultStore(ddb, jobs_table=jobs_table, results_table=results_table, **extra)
