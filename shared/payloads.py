"""The claim check: payloads too big for an SQS message or a DynamoDB item live in the
stack's S3 bucket, and the message or item holds their key instead."""

from __future__ import annotations

from typing import Any


class PayloadStore:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    async def put(self, key: str, data: bytes) -> str:
        await self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")
        return key

    async def get(self, key: str) -> bytes:
        resp = await self._s3.get_object(Bucket=self.bucket, Key=key)
        async with resp["Body"] as stream:
            return bytes(await stream.read())
