"""The wire formats: a job file line (OpenAI Batch input) and the SQS request message.

The SQS message is a public, versioned contract: programs may enqueue requests directly
through the AWS SDK, so the worker validates every message against the same model that
``submit`` uses to build them. ``python -m shared.messages`` prints its JSON schema.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidMessageError

MESSAGE_VERSION: Final = 1

#: The OpenAI Batch API routes a job line may name.
SUPPORTED_URLS: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: A line of Bedrock's own batch-inference format (``recordId``, ``modelInput``): the body is
#: the model's native input, sent unchanged with InvokeModel; only Bedrock endpoints serve it.
BedrockRecordRoute = Literal["bedrock:invoke-model"]
BEDROCK_RECORD_ROUTE: Final[BedrockRecordRoute] = "bedrock:invoke-model"
Route = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", BedrockRecordRoute]

CUSTOM_ID_MAX_LEN: Final = 512


class JobLine(BaseModel):
    """One line of a job file, in the OpenAI Batch input format."""

    model_config = ConfigDict(extra="forbid", strict=True)

    custom_id: str = Field(min_length=1, max_length=CUSTOM_ID_MAX_LEN)
    method: Literal["POST"]
    url: Route
    body: dict[str, Any]


class BedrockRecordLine(BaseModel):
    """One line of Amazon Bedrock's batch-inference input format, so such a file runs
    unchanged: the record id is the request's custom_id, the model input its body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    record_id: str = Field(alias="recordId", min_length=1, max_length=CUSTOM_ID_MAX_LEN)
    model_input: dict[str, Any] = Field(alias="modelInput")

    def to_job_line(self) -> JobLine:
        return JobLine(custom_id=self.record_id, method="POST", url=BEDROCK_RECORD_ROUTE, body=self.model_input)


class RequestMessage(BaseModel):
    """The body of one SQS message: one request of one job (schema version 1)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = Field(description="Schema version of this message.")
    job_id: str = Field(min_length=1, max_length=128, description="The job this request belongs to.")
    custom_id: str = Field(
        min_length=1, max_length=CUSTOM_ID_MAX_LEN, description="The caller's id, unique within the job."
    )
    line: int = Field(ge=1, description="1-based line number in the job file; orders the results.")
    url: Route = Field(
        description="The OpenAI-compatible route to call, or bedrock:invoke-model for a Bedrock batch record "
        "(body: the model's native input)."
    )
    body: dict[str, Any] = Field(description="The request body, passed to the endpoint unchanged.")
    endpoint: str = Field(default="default", min_length=1, description="Name of a configured endpoint.")
    body_ref: str | None = Field(
        default=None,
        description="Set when the body was too big for a message: its key in the stack's payload bucket "
        "(the body field is then empty).",
    )

    @classmethod
    def from_job_line(cls, line: JobLine, *, job_id: str, line_no: int, endpoint: str) -> RequestMessage:
        return cls(
            v=MESSAGE_VERSION,
            job_id=job_id,
            custom_id=line.custom_id,
            line=line_no,
            url=line.url,
            body=line.body,
            endpoint=endpoint,
        )

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)


def decode_message(raw: str) -> RequestMessage:
    """Parse and validate an SQS message body.

    Raises
    ------
    InvalidMessageError
        With ``job_id`` and ``custom_id`` filled in when they could be read, so the
        failure can be recorded against the request.
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidMessageError(f"message body is not JSON: {e.msg}") from e
    try:
        return RequestMessage.model_validate(data)
    except ValidationError as e:
        job_id, custom_id = _readable_ids(data)
        raise InvalidMessageError(
            f"message does not follow schema v{MESSAGE_VERSION}: {describe_validation_error(e)}",
            job_id=job_id,
            custom_id=custom_id,
        ) from e


def _readable_ids(data: Any) -> tuple[str | None, str | None]:
    if not isinstance(data, dict):
        return None, None
    job_id, custom_id = data.get("job_id"), data.get("custom_id")
    ok = lambda v: isinstance(v, str) and 0 < len(v) <= CUSTOM_ID_MAX_LEN  # noqa: E731
    return (job_id if ok(job_id) else None), (custom_id if ok(custom_id) else None)


def describe_validation_error(e: ValidationError) -> str:
    """One readable line for a pydantic error: ``field: reason; field: reason``."""
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"must be {err['ctx']['expected']}"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def message_json_schema() -> dict[str, Any]:
    schema = RequestMessage.model_json_schema()
    schema["$id"] = f"https://llmbatch.dev/schemas/request-message-v{MESSAGE_VERSION}.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


if __name__ == "__main__":
    print(json.dumps(message_json_schema(), indent=2))
