"""Webhook signing and delivery (shared/notify.py), without AWS or a network."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from shared.errors import PermanentError, TransientError
from shared.notify import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notifier,
    NotifyHandler,
    Response,
    check_url,
    retry_delay_s,
    signature,
    verify,
)

SECRET = "s3cret-key"
EVENT = json.dumps(
    {
        "source": "llmbatch",
        "detail-type": "Job Finished",
        "detail": {"job_id": "job-1", "status": "completed", "notify_url": "https://hooks.example.com/x"},
    }
)


@dataclass
class FakePost:
    """Answers with the statuses given, in turn (an exception instance is raised)."""

    answers: list[int | Exception]
    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        self.calls.append((url, body, dict(headers)))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Response(answer)


@dataclass
class FakeRecord:
    body: str
    receipt_handle: str = "rh-1"
    message_id: str = "m-1"


def notifier(post: FakePost, *, loopback: bool = False) -> Notifier:
    return Notifier(lambda: SECRET, post=post, allow_loopback_http=loopback, clock=lambda: 1_800_000_000.0)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1800000000.{}", hashlib.sha256).hexdigest()
    assert signature(SECRET, "1800000000", b"{}") == "sha256=" + expected


def test_a_delivery_carries_the_event_unchanged_with_a_signature_the_receiver_verifies() -> None:
    # GIVEN a webhook that answers 204
    post = FakePost([204])
    # WHEN an event is delivered
    assert notifier(post).deliver(EVENT) == 204
    # THEN the body is the event as queued, and the signature verifies with the secret
    ((url, body, headers),) = post.calls
    assert url == "https://hooks.example.com/x" and body == EVENT.encode()
    ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify(SECRET, ts, body, sig, now=1_800_000_010)
    # ... and not with another key, another body, or long after
    assert not verify("other", ts, body, sig, now=1_800_000_010)
    assert not verify(SECRET, ts, body + b" ", sig, now=1_800_000_010)
    assert not verify(SECRET, ts, body, sig, now=1_800_001_000)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_5xx_and_429_are_transient(status: int) -> None:
    with pytest.raises(TransientError):
        notifier(FakePost([status])).deliver(EVENT)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_are_permanent(status: int) -> None:
    with pytest.raises(PermanentError):
        notifier(FakePost([status])).deliver(EVENT)


def test_only_https_or_loopback_http_when_allowed() -> None:
    assert check_url("https://example.com/h") == "https://example.com/h"
    assert check_url("http://127.0.0.1:8080/h", allow_loopback_http=True)
    for bad in ("http://example.com/h", "ftp://x", "https://", "not a url"):
        with pytest.raises(PermanentError):
            check_url(bad, allow_loopback_http=True)
    with pytest.raises(PermanentError):
        check_url("http://127.0.0.1:8080/h")


def test_the_handler_delays_a_transient_failure_by_backoff_and_hands_it_back() -> None:
    # GIVEN a webhook that fails with a 503, on the record's third receive
    delays: list[tuple[str, int]] = []
    handler = NotifyHandler(notifier(FakePost([503])), lambda rh, d: delays.append((rh, d)), base_s=10)
    # WHEN it is handled
    with pytest.raises(TransientError):
        handler(FakeRecord(EVENT), receives=3)
    # THEN its visibility is set to base x 2^(receives - 1)
    assert delays == [("rh-1", 40)]


def test_the_handler_acknowledges_a_permanent_failure_without_retrying() -> None:
    delays: list[tuple[str, int]] = []
    post = FakePost([404])
    assert NotifyHandler(notifier(post), lambda rh, d: delays.append((rh, d)))(FakeRecord(EVENT), 1) == "refused"
    assert delays == [] and len(post.calls) == 1


def test_a_connection_error_is_transient() -> None:
    post = FakePost([TransientError("unreachable", code="webhook_unreachable")])
    with pytest.raises(TransientError):
        notifier(post).deliver(EVENT)


def test_an_event_without_a_url_is_refused_without_a_post() -> None:
    post = FakePost([])
    with pytest.raises(PermanentError):
        notifier(post).deliver(json.dumps({"detail": {"job_id": "j"}}))
    assert post.calls == []


def test_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay_s(n, base_s=10, cap_s=100) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 100]
