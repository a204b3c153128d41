"""The claim check: payloads too big for an SQS message or a DynamoDB item live in the
stack's S3 bucket, and the message or item holds their key instead."""

from __future__ import annotations

from typing import Any

from shared.errors import PermanentError

#: The largest request body ``submit`` puts in the bucket, and the largest a worker reads.
OFFLOAD_MAX_BYTES = 20 * 1024 * 1024


def request_body_prefix(job_id: str) -> str:
    """Where a job's offloaded request bodies live: a message may only refer under it."""
    return f"requests/{job_id}/"


def request_body_key(job_id: str, line: int) -> str:
    return f"{request_body_prefix(job_id)}{line}.json"


class PayloadStore:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    async def put(self, key: str, data: bytes) -> str:
        await self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")
        return key

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes.

        Raises
        ------
        PermanentError
            ``body_missing`` when there is no such object, ``body_too_large`` when it is
            bigger than ``max_bytes`` (not read).
        """
        try:
            resp = await self._s3.get_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            if _error_code(e) in ("NoSuchKey", "404", "NotFound"):
                raise PermanentError(f"no object {key!r} in the payload bucket", code="body_missing") from e
            raise
        async with resp["Body"] as stream:
            if max_bytes is not None and int(resp.get("ContentLength") or 0) > max_bytes:
                raise PermanentError(
                    f"the object {key!r} ({resp.get('ContentLength')} bytes) is over {max_bytes} bytes",
                    code="body_too_large",
                )
            return bytes(await stream.read())


def _error_code(e: Exception) -> str:
    response = getattr(e, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
