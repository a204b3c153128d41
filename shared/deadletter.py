"""Dead letters: requests that used up their receives, and messages nobody could read.

The DeadLetter function (triggered by the dead-letter queue) records each readable request
as failed (``retries_exhausted``, with the last error the worker noted), so its job still
finishes, and keeps the message itself as a ``dead#`` item in the jobs table: SQS cannot
keep a message its consumer has processed, so that item is where dead letters are kept for
inspection, and what ``redrive`` moves back to the request queue.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import InvalidMessageError
from shared.messages import decode_message
from shared.results import RequestResult, RequestStatus, utc_now_iso
from shared.store import ResultStore, to_ddb

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

log = logging.getLogger("llmbatch.deadletter")

#: Where dead letters go whose job cannot be read.
UNASSIGNED = "_unassigned"


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    key: str
    body: str
    reason: str
    dead_at: str

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DeadLetter:
        return cls(
            item["job_id"],
            item["item"].removeprefix("dead#"),
            item["body"],
            item.get("reason", ""),
            item.get("dead_at", ""),
        )


class DeadLetterRecorder:
    def __init__(self, store: ResultStore) -> None:
        self.store = store

    async def handle_record(self, record: SQSRecord) -> str:
        attr = record.message_attributes["llmbatch-reason"]  # None when absent
        reason = (attr.string_value if attr is not None else None) or ""
        try:
            msg = decode_message(record.body)
        except InvalidMessageError as e:
            await self._keep(UNASSIGNED, record.message_id, record.body, reason or e.message)
            return "kept"
        jobs = await self.store.known_jobs([msg.job_id])
        if msg.job_id not in jobs:
            await self._keep(UNASSIGNED, record.message_id, record.body, reason or f"unknown job {msg.job_id!r}")
            return "kept"
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
            error_message=f"retries exhausted after {attempts} attempts; last error: {last}",
        )
        outcome = await self.store.write_terminal(msg.job_id, [result])
        await self._keep(msg.job_id, msg.custom_id, record.body, result.error_message or "")
        return "recorded" if outcome.written else "duplicate"

    async def _keep(self, job_id: str, key: str, body: str, reason: str) -> None:
        log.warning("dead letter", extra={"job_id": job_id, "key": key, "reason": reason})
        await keep_dead_letters(self.store, [DeadLetter(job_id, key, body, reason, utc_now_iso())])


async def keep_dead_letters(store: ResultStore, letters: list[DeadLetter]) -> None:
    items = [
        {"job_id": d.job_id, "item": f"dead#{d.key}", "body": d.body, "reason": d.reason, "dead_at": d.dead_at}
        for d in letters
    ]
    await store.batch_write(store.jobs_table, [{"PutRequest": {"Item": to_ddb(i)}} for i in items])


async def list_dead_letters(store: ResultStore, job_id: str | None = None) -> list[DeadLetter]:
    """Dead letters of one job, or of every job."""
    return [DeadLetter.from_item(i) for i in await store.items_with_prefix("dead#", job_id)]


def is_redrivable(letter: DeadLetter) -> bool:
    return letter.job_id != UNASSIGNED and _readable(letter.body)


def _readable(body: str) -> bool:
    try:
        decode_message(body)
    except InvalidMessageError:
        return False
    return bool(json.loads(body))
