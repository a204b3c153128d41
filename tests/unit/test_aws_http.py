"""Every async AWS client of a process shares one TLS context per ``verify`` setting
(``shared/aws_http.py``): the CA bundle is loaded once, not once per client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import certifi
import pytest
from aiobotocore.config import AioConfig
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


async def first_requests(url: str, *configs: Any) -> list[Any]:
    """Clients of three services made with ``configs``, each making its first request at once
    (as submit's three reads do); their HTTP sessions."""
    session = get_session()
    kw: dict[str, Any] = dict(
        region_name="us-east-1", endpoint_url=url, aws_access_key_id="t", aws_secret_access_key="t"
    )
    async with (
        session.create_client("sqs", config=configs[0], **kw) as sqs,
        session.create_client("dynamodb", config=configs[1], **kw) as ddb,
        session.create_client("ssm", config=configs[2], **kw) as ssm,
    ):
        await asyncio.gather(sqs.list_queues(), ddb.list_tables(), ssm.describe_parameters())
        return [c._endpoint.http_session for c in (sqs, ddb, ssm)]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with MotoServer() as server:
        yield server.url


def test_clients_of_a_process_load_the_ca_bundle_once(loads: list[Any], url: str) -> None:
    # GIVEN three clients of three services made with the project's config (options differ)
    configs = (aws_config(), aws_config(parameter_validation=False), aws_config(retries={"max_attempts": 2}))
    # WHEN each makes its first request
    sessions = asyncio.run(first_requests(url, *configs))
    # THEN each uses the shared session class, and the bundle was loaded once for all three
    assert all(isinstance(s, SharedTLSSession) for s in sessions)
    assert len(loads) == 1


def test_without_the_projects_config_each_client_loads_it(loads: list[Any], url: str) -> None:
    # The count above is the one that matters: aiobotocore's own session loads it per client.
    asyncio.run(first_requests(url, AioConfig(), AioConfig(), AioConfig()))
    assert len(loads) == 3


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


def test_a_proxys_context_is_its_own_and_the_shared_one_is_left_unchanged(loads: list[Any]) -> None:
    # GIVEN a client behind an HTTPS proxy with a CA bundle of its own
    session = SharedTLSSession(
        verify=True,
        proxies={"https": "https://proxy.example:3128"},
        proxies_config={"proxy_ca_bundle": certifi.where()},
    )
    shared = SharedTLSSession(verify=True)._build_verify_context()
    before = shared.cert_store_stats()
    # WHEN its contexts are built (aiobotocore loads the proxy's bundle into the proxy's one)
    endpoint_context, proxy_context = session._build_ssl_contexts("https://proxy.example:3128")
    # THEN the endpoint's is the shared one, the proxy's its own, and the shared one unchanged
    assert endpoint_context is shared and proxy_context is not shared
    assert shared.cert_store_stats() == before


def test_warming_makes_the_context_a_clients_first_request_uses(
    loads: list[Any], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a CA bundle named by the environment, as a client's default
    monkeypatch.setenv("AWS_CA_BUNDLE", certifi.where())
    # WHEN the context is made ahead (a container's init), then clients make their first requests
    aws_http.warm_tls(get_session())
    assert len(loads) == 1
    asyncio.run(first_requests(url, aws_config(), aws_config(), aws_config()))
    # THEN they used it: nothing more was loaded
    assert len(loads) == 1
