"""Every async AWS client of a process shares one TLS context per ``verify`` setting
(``shared/aws_http.py``): the CA bundle is loaded once, not once per client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import get_session

from llmbatch.local.moto_server import MotoServer
from shared import aws_http
from shared.aws_http import SharedTLSSession, aws_config


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The contexts aiobotocore itself builds (each one a load of the CA bundle), from a
    clean slate of shared ones."""
    monkeypatch.setattr(aws_http, "_contexts", {})
    built: list[Any] = []
    original = AIOHTTPSession._build_verify_context

    def counting(self: AIOHTTPSession) -> Any:
        built.append(original(self))
        return built[-1]

    monkeypatch.setattr(AIOHTTPSession, "_build_verify_context", counting)
    yield built


def test_clients_of_a_process_load_the_ca_bundle_once(loads: list[Any]) -> None:
    # GIVEN three clients of three services made with the project's config, against a server
    async def first_requests(url: str) -> list[Any]:
        session = get_session()
        kw: dict[str, Any] = dict(
            region_name="us-east-1", endpoint_url=url, aws_access_key_id="t", aws_secret_access_key="t"
        )
        async with (
            session.create_client("sqs", config=aws_config(), **kw) as sqs,
            session.create_client("dynamodb", config=aws_config(), **kw) as ddb,
            session.create_client("ssm", config=aws_config(retries={"max_attempts": 2}), **kw) as ssm,
        ):
            # WHEN each makes its first request, at once (as submit's three reads do)
            await asyncio.gather(sqs.list_queues(), ddb.list_tables(), ssm.describe_parameters())
            return [c._endpoint.http_session for c in (sqs, ddb, ssm)]

    with MotoServer() as server:
        sessions = asyncio.run(first_requests(server.url))
    # THEN each uses the shared session class, and the bundle was loaded once for all three
    assert all(isinstance(s, SharedTLSSession) for s in sessions)
    assert len(loads) == 1


def test_each_verify_setting_has_its_context_and_a_client_certificate_its_own(loads: list[Any], tmp_path: Any) -> None:
    verified = SharedTLSSession(verify=True)._build_verify_context()
    assert SharedTLSSession(verify=True)._build_verify_context() is verified
    unverified = SharedTLSSession(verify=False)._build_verify_context()
    assert unverified is not verified and unverified.check_hostname is False
    # a client with a certificate of its own gets a context of its own, each time (its
    # certificate is loaded into it)
    cert = SharedTLSSession(verify=True, client_cert=str(tmp_path / "client.pem"))
    assert cert._build_verify_context() is not verified
    assert cert._build_verify_context() is not cert._build_verify_context()
    assert len(loads) == 2 + 3


def test_warming_makes_the_context_the_first_request_uses(loads: list[Any]) -> None:
    aws_http.warm_tls()
    assert len(loads) == 1
    assert SharedTLSSession()._build_verify_context() is loads[0]
    assert len(loads) == 1
