"""Webhooks: a job's "Job Finished" event POSTed to the job's ``notify_url``, signed.

The stack's rule sends every Job Finished event that carries a ``notify_url`` to the notify
queue; the Notifier function hands each record to :meth:`Notifier.deliver`. The body is the
EventBridge event exactly as queued; the signature lets the receiver check it came from
this stack and is fresh:

- ``X-Llmbatch-Timestamp``: Unix seconds when it was sent;
- ``X-Llmbatch-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the stack's webhook
  secret (Secrets Manager, ``WEBHOOK_SECRET_ARN``), over ``TIMESTAMP + "." + body``. The
  timestamp is signed too, so a captured delivery cannot be replayed later as a fresh one.

Failures are classified where they are seen: a timeout, a connection error, a 5xx or a 429
is transient (the record goes back to SQS, delayed by backoff, until the queue's
maxReceiveCount sends it to the notify dead-letter queue); any other 4xx, or a URL that is
not https, is permanent: logged once, never retried.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.errors import PermanentError, TransientError

log = logging.getLogger("llmbatch.notify")

SIGNATURE_HEADER = "X-Llmbatch-Signature"
TIMESTAMP_HEADER = "X-Llmbatch-Timestamp"
#: One POST's limit: the receiver should answer at once and do its work later.
POST_TIMEOUT_S = 10.0
#: Backoff of a retried delivery: base x 2^(receives - 1), capped.
RETRY_BASE_S = 10.0
RETRY_MAX_S = 900.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 keyed with ``secret`` (UTF-8) over ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, header: str, *, max_age_s: float = 300, now: float | None = None
) -> bool:
    """What a receiver does (the README shows the same in a few lines)."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    return abs(age) <= max_age_s and hmac.compare_digest(signature(secret, timestamp, body), header)


def check_url(url: str, *, allow_loopback_http: bool = False) -> str:
    """The URL if a webhook may be sent to it: https, or plain http to the loopback
    address when ``allow_loopback_http`` (the local stack and its tests only)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and allow_loopback_http and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return url
        except ValueError:
            pass
    raise PermanentError(f"a notify URL must be https: {url[:200]!r}", code="bad_notify_url")


def retry_delay_s(receives: int, *, base_s: float = RETRY_BASE_S, cap_s: float = RETRY_MAX_S) -> int:
    return int(min(cap_s, base_s * 2 ** max(0, receives - 1)))


@dataclass(frozen=True)
class Response:
    status: int


class Poster(Protocol):
    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        """POST; a response with any status, or raise TransientError when none came back."""


def urllib_post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
    req = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return Response(resp.status)
    except urllib.error.HTTPError as e:
        return Response(e.code)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise TransientError(f"webhook unreachable: {type(e).__name__}", code="webhook_unreachable") from e


class Notifier:
    """Delivers queued Job Finished events to their webhooks."""

    def __init__(
        self,
        secret: Callable[[], str],
        *,
        post: Poster = urllib_post,
        allow_loopback_http: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._post = post
        self._allow_loopback_http = allow_loopback_http
        self._clock = clock

    def deliver(self, body: str) -> int:
        """POST one queued event to its ``detail.notify_url``; the status the receiver gave.

        Raises
        ------
        TransientError
            No answer, a 5xx or a 429: try again later.
        PermanentError
            Not an event with a usable URL, or any other 4xx: do not try again.
        """
        try:
            event: dict[str, Any] = json.loads(body)
            url = str(event["detail"]["notify_url"])
            job_id = str(event["detail"].get("job_id", ""))
        except (ValueError, KeyError, TypeError) as e:
            raise PermanentError(f"not a Job Finished event with a notify_url: {type(e).__name__}") from e
        check_url(url, allow_loopback_http=self._allow_loopback_http)
        raw = body.encode()
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "llmbatch-notifier",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._secret(), timestamp, raw),
        }
        status = self._post(url, raw, headers, POST_TIMEOUT_S).status
        if 200 <= status < 300:
            log.info("webhook delivered", extra={"job_id": job_id, "status_code": status})
            return status
        if status == 429 or status >= 500:
            raise TransientError(f"webhook answered {status}", code="webhook_transient", status_code=status)
        raise PermanentError(f"webhook answered {status}", code="webhook_refused", status_code=status)


class RecordLike(Protocol):
    @property
    def body(self) -> str: ...
    @property
    def receipt_handle(self) -> str: ...
    @property
    def message_id(self) -> str: ...


class NotifyHandler:
    """The Notifier function's record handler: deliver, and on a transient failure set the
    record's visibility by backoff (``retry_later``) before handing it back to SQS."""

    def __init__(
        self,
        notifier: Notifier,
        retry_later: Callable[[str, int], None],
        *,
        base_s: float = RETRY_BASE_S,
        cap_s: float = RETRY_MAX_S,
    ) -> None:
        self.notifier = notifier
        self._retry_later = retry_later
        self._base_s = base_s
        self._cap_s = cap_s

    def __call__(self, record: RecordLike, receives: int) -> str:
        try:
            self.notifier.deliver(record.body)
        except PermanentError as e:
            log.warning(
                "webhook not delivered, not retried",
                extra={"message_id": record.message_id, "error_code": e.code, "status_code": e.status_code},
            )
            return "refused"
        except TransientError as e:
            delay = retry_delay_s(receives, base_s=self._base_s, cap_s=self._cap_s)
            log.info(
                "webhook delivery retried later",
                extra={"message_id": record.message_id, "error_code": e.code, "delay_s": delay, "receives": receives},
            )
            try:
                self._retry_later(record.receipt_handle, delay)
            except Exception:  # it comes back after the queue's visibility timeout instead
                log.warning("could not delay the webhook's retry", exc_info=True)
            raise
        return "delivered"


@dataclass(frozen=True)
class NotifierConfig:
    secret_arn: str
    queue_url: str
    retry_base_s: float = RETRY_BASE_S
    allow_loopback_http: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotifierConfig:
        return cls(
            secret_arn=env["WEBHOOK_SECRET_ARN"],
            queue_url=env["NOTIFY_QUEUE_URL"],
            retry_base_s=float(env.get("NOTIFY_RETRY_BASE_S") or RETRY_BASE_S),
            allow_loopback_http=env.get("NOTIFY_ALLOW_HTTP_LOOPBACK", "").lower() == "true",
        )


def build_handler(config: NotifierConfig, sqs: Any) -> NotifyHandler:
    """The handler over boto3's SQS client and the secret (cached by Powertools Parameters)."""
    from shared.secrets import resolve_api_key

    def secret() -> str:
        value = resolve_api_key(f"secretsmanager:{config.secret_arn}")
        if not value:
            raise TransientError("the webhook secret is empty", code="webhook_secret")
        return value

    def retry_later(receipt_handle: str, delay_s: int) -> None:
        sqs.change_message_visibility(
            QueueUrl=config.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
        )

    notifier = Notifier(secret, allow_loopback_http=config.allow_loopback_http)
    return NotifyHandler(notifier, retry_later, base_s=config.retry_base_s)
