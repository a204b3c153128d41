"""Dead letters: requests that used up their receives, and messages nobody could read.

The DeadLetter function (triggered by the dead-letter queue) records each readable request
of a known job as failed (``retries_exhausted``, with the last error the worker noted), so
its job still finishes, and keeps the message itself as a ``dead#`` item in the jobs table:
SQS cannot keep a message its consumer has processed, so that item is where dead letters
are kept for inspection, and what ``redrive`` moves back to the request queue.

Nothing may make it loop: a body too big for an item is kept in the payload bucket by
reference (or, with no bucket, cut to fit, with its size and SHA-256); a message whose ids
DynamoDB could not take as keys, that does not decode, or that is not its job's (its
signature fails) is kept under ``_unassigned`` by its message id; and a record that still
fails after ``GIVE_UP_RECEIVES`` receives is logged (hash and size, never the body) and
let go rather than sent round the queue for ever.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shared.errors import InvalidMessageError
from shared.messages import belongs_to, decode_message
from shared.payloads import PayloadStore
from shared.results import RequestResult, RequestStatus, utc_now_iso
from shared.store.item_size import ITEM_MAX_BYTES, item_bytes, key_fits, to_ddb, utf8_bytes
from shared.store.result_fit import REASON_MAX_BYTES, custom_id_digest, truncate_utf8
from shared.store.result_store import ResultStore

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

log = logging.getLogger("llmbatch.deadletter")

#: Where dead letters go whose job cannot be read.
UNASSIGNED = "_unassigned"
DEAD_PREFIX = "dead#"
#: Receives of one dead letter after which an unexpected error lets it go (logged).
GIVE_UP_RECEIVES = 3
#: Where bodies too big for an item are kept in the payload bucket.
BODY_KEY_PREFIX = "deadletters/"
#: Room for what an item says of a body it holds cut (size, hash, the flag), with margin.
MARKS_BYTES = 256


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    key: str
    body: str
    reason: str
    dead_at: str
    #: The body's key in the payload bucket, when it was too big for the item (``body`` is "").
    body_ref: str | None = None
    #: The body was cut to fit the item (no payload bucket): it cannot be redriven.
    truncated: bool = False
    #: The whole body's size (UTF-8) and SHA-256, kept when it is not in the item whole.
    body_bytes: int | None = None
    body_sha256: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DeadLetter:
        size = item.get("body_bytes")
        return cls(
            item["job_id"],
            item["item"].removeprefix(DEAD_PREFIX),
            item.get("body", ""),
            item.get("reason", ""),
            item.get("dead_at", ""),
            body_ref=item.get("body_ref"),
            truncated=bool(item.get("truncated", False)),
            body_bytes=int(size) if size is not None else None,
            body_sha256=item.get("body_sha256"),
        )

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "job_id": self.job_id,
            "item": f"{DEAD_PREFIX}{self.key}",
            "body": self.body,
            "reason": self.reason,
            "dead_at": self.dead_at,
        }
        optional = {
            "body_ref": self.body_ref,
            "truncated": self.truncated or None,
            "body_bytes": self.body_bytes,
            "body_sha256": self.body_sha256,
        }
        item.update({k: v for k, v in optional.items() if v is not None})
        return item


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _receives(record: SQSRecord) -> int:
    try:
        return int(record.attributes.approximate_receive_count or 1)
    except (TypeError, ValueError):
        return 1


class DeadLetterRecorder:
    def __init__(self, store: ResultStore) -> None:
        self.store = store
        #: Jobs whose failures this container recorded (or found recorded) since the last
        #: :meth:`take_touched`, each with one of its records' message ids: one may have
        #: finished (shared/finish.py).
        self.touched: dict[str, str] = {}

    def take_touched(self) -> dict[str, str]:
        touched, self.touched = self.touched, {}
        return touched

    async def handle_record(self, record: SQSRecord) -> str:
        try:
            return await self._handle(record)
        except Exception:
            receives = _receives(record)
            if receives < GIVE_UP_RECEIVES:
                raise
            body = record.body or ""
            log.exception(
                "dead letter dropped: it could not be kept after %d receives",
                receives,
                extra={"message_id": record.message_id, "body_sha256": _sha256(body), "body_bytes": utf8_bytes(body)},
            )
            return "dropped"

    async def _handle(self, record: SQSRecord) -> str:
        attr = record.message_attributes["llmbatch-reason"]  # None when absent
        reason = (attr.string_value if attr is not None else None) or ""
        body = record.body or ""
        try:
            msg = decode_message(body)
        except InvalidMessageError as e:
            return await self._keep_unassigned(record, reason or e.message)
        except Exception as e:  # decode_message should raise nothing else; the letter is kept all the same
            return await self._keep_unassigned(record, reason or f"unreadable message: {type(e).__name__}")
        if not key_fits(msg.job_id, msg.custom_id) or not key_fits(msg.job_id, f"{DEAD_PREFIX}{msg.custom_id}"):
            return await self._keep_unassigned(record, reason or "job_id or custom_id over DynamoDB's key limits")
        jobs = await self.store.known_jobs([msg.job_id])
        job = jobs.get(msg.job_id)
        if job is None:
            return await self._keep_unassigned(record, reason or f"unknown job {msg.job_id!r}")
        if not belongs_to(job.sign_key, msg):
            return await self._keep_unassigned(record, reason or f"not a request of job {msg.job_id!r} (signature)")
        note = await self.store.retry_note(msg.job_id, msg.custom_id)
        last = f"{note.get('error_code', '')}: {note.get('error_message', '')}" if note else "none recorded"
        attempts = int(note.get("attempt", 0)) if note else 0
        result = RequestResult(
            job_id=msg.job_id,
            custom_id=msg.custom_id,
            line=msg.line,
            status=RequestStatus.FAILED,
            attempt=attempts,
            endpoint=msg.endpoint,
            status_code=int(note["status_code"]) if note and note.get("status_code") else None,
            error_code="retries_exhausted",
            error_message=truncate_utf8(
                f"retries exhausted after {attempts} attempts; last error: {last}", REASON_MAX_BYTES
            ),
        )
        outcome = await self.store.write_terminal(msg.job_id, [result])
        if outcome.unstorable:
            return await self._keep_unassigned(record, f"its result could not be stored: {outcome.unstorable[0][1]}")
        await self._keep(DeadLetter(msg.job_id, msg.custom_id, body, result.error_message or "", utc_now_iso()))
        self.touched.setdefault(msg.job_id, record.message_id)
        return "recorded" if outcome.written else "duplicate"

    async def _keep_unassigned(self, record: SQSRecord, reason: str) -> str:
        await self._keep(
            DeadLetter(
                UNASSIGNED, record.message_id, record.body or "", truncate_utf8(reason, REASON_MAX_BYTES), utc_now_iso()
            )
        )
        return "kept"

    async def _keep(self, letter: DeadLetter) -> None:
        log.warning("dead letter", extra={"job_id": letter.job_id, "key": letter.key, "reason": letter.reason})
        await keep_dead_letters(self.store, [letter])


async def keep_dead_letters(store: ResultStore, letters: list[DeadLetter]) -> None:
    """Store dead letters as ``dead#`` items, each fitted to the item limit."""
    items = [(await fit_dead_letter(d, store.payloads)).to_item() for d in letters]
    await store.batch_write(store.jobs_table, [{"PutRequest": {"Item": to_ddb(i)}} for i in items])


async def fit_dead_letter(letter: DeadLetter, payloads: PayloadStore | None) -> DeadLetter:
    """``letter`` as one item can hold it: a body too big goes to the payload bucket (the
    item keeps its key), or, with no bucket, is cut to fit; either way the item keeps the
    whole body's size and SHA-256."""
    size = item_bytes(letter.to_item())
    if size <= ITEM_MAX_BYTES:
        return letter
    whole = utf8_bytes(letter.body)
    marked = replace(letter, body_bytes=whole, body_sha256=_sha256(letter.body))
    if payloads is not None:
        key = f"{BODY_KEY_PREFIX}{letter.job_id}/{custom_id_digest(letter.key)}.json"
        await payloads.put(key, letter.body.encode("utf-8", "surrogatepass"))
        return replace(marked, body="", body_ref=key)
    # Room for the marks themselves, then the body cut at a character boundary.
    room = whole - (size - ITEM_MAX_BYTES) - MARKS_BYTES
    return replace(marked, body=truncate_utf8(letter.body, max(0, room)), truncated=True)


async def dead_letter_body(letter: DeadLetter, payloads: PayloadStore | None) -> str:
    """The letter's whole body: from the item, or from the payload bucket."""
    if letter.body_ref is None:
        return letter.body
    if payloads is None:
        raise ValueError(f"dead letter {letter.key!r} is in the payload bucket, and this stack has none")
    return (await payloads.get(letter.body_ref)).decode("utf-8", "surrogatepass")


async def list_dead_letters(store: ResultStore, job_id: str | None = None) -> list[DeadLetter]:
    """Dead letters of one job, or of every job."""
    return [DeadLetter.from_item(i) for i in await store.items_with_prefix(DEAD_PREFIX, job_id)]


def is_redrivable(letter: DeadLetter) -> bool:
    if letter.job_id == UNASSIGNED or letter.truncated:
        return False
    return letter.body_ref is not None or _readable(letter.body)


def _readable(body: str) -> bool:
    try:
        decode_message(body)
    except Exception:  # anything decode_message raises: not redrivable
        return False
    return bool(json.loads(body))
