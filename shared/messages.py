"""The wire formats: a job file line (OpenAI Batch input) and the SQS request message.

The SQS message is a public, versioned contract: programs may enqueue requests directly
through the AWS SDK, so the worker validates every message against the same model that
``submit`` uses to build them. ``python -m shared.messages`` prints its JSON schema.

Anyone who can send to the queue can send anything, so reading a message is total:
:func:`decode_message` turns *any* input into a message or an :class:`InvalidMessageError`,
never another exception (not for 100,000 nested brackets, a 5,000-digit number, ``1e999``
or a lone UTF-16 surrogate). Every id a message yields -- whole or, from a message that
failed, read alone -- keeps DynamoDB's key rules, so no message can make a read or write
fail for the other messages of its batch. And a message that decoded always encodes again.

Job membership: each job has a random key, and every message ``submit`` builds carries
``sig``, the first 32 hex digits of HMAC-SHA256(key, ``job_id\\ncustom_id\\nline``). A
message whose signature does not verify is not its job's (:func:`belongs_to`): whoever
else writes to the queue can neither answer nor count a request of someone's job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import sys
from typing import Annotated, Any, Final, Literal, Protocol

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import InvalidMessageError

MESSAGE_VERSION: Final = 1

#: The OpenAI Batch API routes a job line may name.
SUPPORTED_URLS: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: A line of Bedrock's own batch-inference format (``recordId``, ``modelInput``): the body is
#: the model's native input, sent unchanged with InvokeModel; only Bedrock endpoints serve it.
BedrockRecordRoute = Literal["bedrock:invoke-model"]
BEDROCK_RECORD_ROUTE: Final[BedrockRecordRoute] = "bedrock:invoke-model"
Route = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", BedrockRecordRoute]

# ---- key rules ---------------------------------------------------------------------------

JOB_ID_MAX_LEN: Final = 128
CUSTOM_ID_MAX_LEN: Final = 512
#: DynamoDB's limit on a sort key, in UTF-8 bytes.
SORT_KEY_MAX_BYTES: Final = 1024
#: A custom_id is the results table's sort key, and part of one in the jobs table: the
#: ``retry#`` note of a request being retried (the longest such prefix; ``dead#`` is the
#: other). 512 characters can be 2,048 bytes, so the bytes are limited too.
CUSTOM_ID_MAX_BYTES: Final = SORT_KEY_MAX_BYTES - len("retry#")
#: S3's limit on an object key (``body_ref``), in UTF-8 bytes.
OBJECT_KEY_MAX_BYTES: Final = 1024
#: An endpoint's name becomes a metrics dimension and a CLI argument: keep it plain.
ENDPOINT_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The largest ``line`` and ``receives``: every JSON reader holds it exactly, and it fits
#: DynamoDB's 38-digit numbers.
JSON_SAFE_INT_MAX: Final = 2**53 - 1
#: How deep a body may nest (objects and arrays); bodies of real requests nest a few levels.
MAX_BODY_NESTING: Final = 64

# ---- membership -------------------------------------------------------------------------

#: A job's signing key: 32 hex digits (128 random bits).
SIGN_KEY_HEX_LEN: Final = 32
#: A message's ``sig``: the first 32 hex digits of the HMAC-SHA256.
SIG_HEX_LEN: Final = 32
SIG_PATTERN: Final = rf"^[0-9a-f]{{{SIG_HEX_LEN}}}$"


UNICODE_ONLY: Final = "must be valid Unicode text (it holds a lone surrogate)"


def _utf8_key(max_bytes: int) -> AfterValidator:
    """Text DynamoDB (or S3) can take as a key: valid Unicode, at most ``max_bytes`` as UTF-8."""

    def check(value: str) -> str:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(UNICODE_ONLY) from None
        if size > max_bytes:
            raise ValueError(f"must be at most {max_bytes} bytes as UTF-8, got {size}")
        return value

    return AfterValidator(check)


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: a number without a fraction (``7.0`` is 7), never a boolean
    (``true == 1`` in Python, not in JSON)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInteger = BeforeValidator(_json_integer)
JobId = Annotated[str, Field(min_length=1, max_length=JOB_ID_MAX_LEN), _utf8_key(SORT_KEY_MAX_BYTES)]
CustomId = Annotated[str, Field(min_length=1, max_length=CUSTOM_ID_MAX_LEN), _utf8_key(CUSTOM_ID_MAX_BYTES)]
Line = Annotated[int, Field(ge=1, le=JSON_SAFE_INT_MAX), JsonInteger]
Sig = Annotated[str, Field(pattern=SIG_PATTERN)]

_STRICT: Final = ConfigDict(strict=True)
_JOB_ID: Final = TypeAdapter(JobId, config=_STRICT)
_CUSTOM_ID: Final = TypeAdapter(CustomId, config=_STRICT)
_LINE: Final = TypeAdapter(Line, config=_STRICT)
_SIG: Final = TypeAdapter(Sig, config=_STRICT)


class JobLine(BaseModel):
    """One line of a job file, in the OpenAI Batch input format."""

    model_config = ConfigDict(extra="forbid", strict=True)

    custom_id: CustomId
    method: Literal["POST"]
    url: Route
    body: dict[str, Any]


class BedrockRecordLine(BaseModel):
    """One line of Amazon Bedrock's batch-inference input format, so such a file runs
    unchanged: the record id is the request's custom_id, the model input its body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    record_id: CustomId = Field(alias="recordId")
    model_input: dict[str, Any] = Field(alias="modelInput")

    def to_job_line(self) -> JobLine:
        return JobLine(custom_id=self.record_id, method="POST", url=BEDROCK_RECORD_ROUTE, body=self.model_input)


class RequestMessage(BaseModel):
    """The body of one SQS message: one request of one job (schema version 1)."""

    # Strict: the worker accepts exactly what the published schema does ("7" is not a line).
    model_config = ConfigDict(extra="forbid", strict=True)

    v: Annotated[Literal[1], JsonInteger] = Field(description="Schema version of this message.")
    job_id: JobId = Field(description="The job this request belongs to.")
    custom_id: CustomId = Field(
        description=f"The caller's id, unique within the job: at most {CUSTOM_ID_MAX_LEN} characters "
        f"and {CUSTOM_ID_MAX_BYTES} bytes as UTF-8."
    )
    line: Line = Field(description="1-based line number in the job file; orders the results.")
    url: Route = Field(
        description="The OpenAI-compatible route to call, or bedrock:invoke-model for a Bedrock batch record "
        "(body: the model's native input)."
    )
    body: dict[str, Any] = Field(
        description=f"The request body, passed to the endpoint unchanged (nested at most {MAX_BODY_NESTING} "
        "levels; numbers finite)."
    )
    endpoint: str = Field(
        default="default", pattern=ENDPOINT_NAME_PATTERN.pattern, description="Name of a configured endpoint."
    )
    body_ref: Annotated[str, Field(min_length=1), _utf8_key(OBJECT_KEY_MAX_BYTES)] | None = Field(
        default=None,
        description="Set when the body was too big for a message: its key in the stack's payload bucket "
        "(the body field is then empty).",
    )
    sig: Sig | None = Field(
        default=None,
        description="Proof the request belongs to its job: the first 32 hex digits of "
        "HMAC-SHA256(job key, job_id + '\\n' + custom_id + '\\n' + line). Required by jobs that have a key.",
    )
    receives: Annotated[int, JsonInteger] = Field(
        default=0,
        ge=0,
        le=JSON_SAFE_INT_MAX,
        description="Receives of earlier copies of this message that counted as attempts (set by the worker "
        "when it re-sends a request whose call never started); left out when 0.",
    )

    @classmethod
    def from_job_line(
        cls, line: JobLine, *, job_id: str, line_no: int, endpoint: str, sign_key: str = ""
    ) -> RequestMessage:
        """The message ``submit`` sends for ``line``, signed with the job's key when it has one."""
        return cls(
            v=MESSAGE_VERSION,
            job_id=job_id,
            custom_id=line.custom_id,
            line=line_no,
            url=line.url,
            body=line.body,
            endpoint=endpoint,
            sig=sign(sign_key, job_id, line.custom_id, line_no) if sign_key else None,
        )

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True, exclude={"receives"} if not self.receives else None)


# ---- signing ---------------------------------------------------------------------------


def new_sign_key() -> str:
    """A job's signing key (kept in its record; never logged)."""
    return secrets.token_hex(SIGN_KEY_HEX_LEN // 2)


def sign(key: str, job_id: str, custom_id: str, line: int) -> str:
    """A message's ``sig``: HMAC-SHA256 keyed with the key's text (UTF-8) over
    ``f"{job_id}\\n{custom_id}\\n{line}"`` (UTF-8), its first 32 hex digits."""
    text = f"{job_id}\n{custom_id}\n{line}".encode()
    return hmac.new(key.encode(), text, hashlib.sha256).hexdigest()[:SIG_HEX_LEN]


def signed_by(key: str, job_id: str, custom_id: str, line: int, sig: str | None) -> bool:
    """Whether the claims (``job_id``, ``custom_id``, ``line``) carry ``key``'s signature.

    A job without a key (created before jobs had one) takes every claim. Never raises.
    """
    if not key:
        return True
    number = _read(_LINE, line)
    if not sig or not _valid(_SIG, sig) or number is None:
        return False
    try:
        expected = sign(key, job_id, custom_id, number)
    except UnicodeEncodeError:  # a lone surrogate: never one of ours
        return False
    return hmac.compare_digest(expected, sig)


class _Claims(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def custom_id(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def sig(self) -> str | None: ...


def verify(key: str, msg: _Claims) -> bool:
    """Whether ``msg`` is signed with ``key`` (False when either is missing)."""
    return bool(key) and signed_by(key, msg.job_id, msg.custom_id, msg.line, msg.sig)


def belongs_to(meta_sign_key: str, msg: _Claims) -> bool:
    """Whether ``msg`` is a request of the job whose key is ``meta_sign_key``: its signature
    verifies, or the job has no key (created before jobs had one)."""
    return signed_by(meta_sign_key, msg.job_id, msg.custom_id, msg.line, msg.sig)


# ---- decoding ---------------------------------------------------------------------------


def parse_json(raw: str) -> tuple[Any, bool]:
    """``json.loads``, and whether every number read is finite (JSON has no NaN or
    Infinity, but Python reads them, and ``1e999`` as infinity; neither DynamoDB nor most
    servers take them). Every failure is a ``ValueError`` with a readable reason: bad
    syntax, nesting too deep for the parser, a number of too many digits."""
    finite = True

    def number(text: str) -> float:
        nonlocal finite
        value = float(text)
        finite = finite and math.isfinite(value)
        return value

    try:
        return json.loads(raw, parse_float=number, parse_constant=number), finite
    except json.JSONDecodeError as e:
        raise ValueError(f"{e.msg} (line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    except ValueError as e:  # int() of a number over sys.get_int_max_str_digits(), the only other known
        if "digits" in str(e):
            raise ValueError(f"a number has more than {sys.get_int_max_str_digits()} digits") from None
        raise ValueError(readable(str(e), 200)) from None
    except TypeError:
        raise ValueError("not text") from None


NOT_FINITE: Final = "the body holds a number that is not finite (NaN, Infinity, or beyond 1.8e308)"


#: Where a lone surrogate could be: a \uD800-\uDFFF escape, or one in the text itself.
_SURROGATE_HINT: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|[\ud800-\udfff]")


def body_problem(body: Any, raw: str | None = None) -> str | None:
    """Why ``body`` (as parsed from ``raw``) cannot travel: nested more than
    ``MAX_BODY_NESTING`` levels, a lone surrogate in a key or a string (not UTF-8: neither
    DynamoDB nor the endpoint would take it), or a number that is not finite. None if it can.

    With ``raw``, the body is walked only when the text could hide a problem (numbers that
    are not finite are then the parser's to notice: :func:`parse_json`): a request of any
    size with neither surrogate escapes nor many brackets costs a few scans in C.
    """
    check_text = raw is None or _SURROGATE_HINT.search(raw) is not None
    if raw is not None and not check_text and raw.count("{") + raw.count("[") <= MAX_BODY_NESTING:
        return None
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_BODY_NESTING:
            return f"the body is nested more than {MAX_BODY_NESTING} levels deep"
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if check_text and isinstance(key, str) and not _is_unicode(key):
                return "the body holds a lone surrogate (not valid Unicode) in a key"
            if isinstance(value, dict | list):
                pending.append((value, depth + 1))
            elif isinstance(value, str):
                if check_text and not _is_unicode(value):
                    return "the body holds a lone surrogate (not valid Unicode)"
            elif isinstance(value, float) and not math.isfinite(value):
                return NOT_FINITE
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_message(raw: str) -> RequestMessage:
    """Parse and validate an SQS message body. Total: any input at all either decodes
    (and then encodes again) or raises :class:`InvalidMessageError`.

    Raises
    ------
    InvalidMessageError
        With ``job_id``, ``custom_id``, ``line`` and ``sig`` filled in when each can be read
        and keeps its rules, so the failure can be recorded against the request (if it is
        its job's).
    """
    try:
        return _decode(raw)
    except InvalidMessageError:
        raise
    except Exception as e:  # the promise above, whatever a library raises one day
        raise InvalidMessageError(f"unreadable message: {type(e).__name__}") from e


def _decode(raw: str) -> RequestMessage:
    if not isinstance(raw, str):
        raise InvalidMessageError(f"message body is not text but {type(raw).__name__}")
    try:
        data, finite = parse_json(raw)
    except ValueError as e:
        raise InvalidMessageError(f"message body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidMessageError(f"message body must be a JSON object, not {_json_type(data)}")
    try:
        msg = RequestMessage.model_validate(data)
    except ValidationError as e:
        reason = f"message does not follow schema v{MESSAGE_VERSION}: {describe_validation_error(e)}"
        raise _invalid(data, reason) from e
    # Only the body holds numbers that may be floats (the model is strict): it is the body.
    problem = NOT_FINITE if not finite else body_problem(msg.body, raw)
    if problem is None:
        try:
            msg.encode().encode("utf-8")
        except Exception as e:  # body_problem covers every case known; this keeps the promise
            problem = f"the message cannot be encoded again: {type(e).__name__}"
    if problem is not None:
        raise _invalid(data, f"message does not follow schema v{MESSAGE_VERSION}: {problem}")
    return msg


def decode_body(raw: str | bytes) -> dict[str, Any]:
    """A request body read on its own -- the claim check's object, named by ``body_ref`` --
    by the rules a body inside a message keeps. Total, as :func:`decode_message`.

    Raises
    ------
    InvalidMessageError
        Saying what is wrong with the body (no ids: the caller has the message's).
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body, finite = parse_json(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidMessageError(f"the body at body_ref is not JSON: {readable(str(e), 200)}") from None
    if not isinstance(body, dict):
        raise InvalidMessageError(f"the body at body_ref must be a JSON object, not {_json_type(body)}")
    problem = NOT_FINITE if not finite else body_problem(body, text)
    if problem is not None:
        raise InvalidMessageError(f"the body at body_ref is refused: {problem}")
    return body


def _invalid(data: dict[str, Any], reason: str) -> InvalidMessageError:
    job_id, custom_id = _readable_ids(data)
    return InvalidMessageError(
        reason,
        job_id=job_id,
        custom_id=custom_id,
        line=_read(_LINE, data.get("line")) or 0,
        sig=_read(_SIG, data.get("sig")),
    )


def _read(adapter: TypeAdapter[Any], value: Any) -> Any:
    """``value`` as a whole message would hold it, or None if it breaks the rules."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _valid(adapter: TypeAdapter[Any], value: Any) -> bool:
    return _read(adapter, value) is not None


def _readable_ids(data: Any) -> tuple[str | None, str | None]:
    """The ids of a message that failed, each only if it keeps the key rules a whole
    message's ids keep (so a failure is never recorded under a key DynamoDB refuses)."""
    if not isinstance(data, dict):
        return None, None
    return _read(_JOB_ID, data.get("job_id")), _read(_CUSTOM_ID, data.get("custom_id"))


def _json_type(value: Any) -> str:
    for kind, name in ((list, "an array"), (str, "a string"), (bool, "a boolean"), (int | float, "a number")):
        if isinstance(value, kind):
            return name
    return "null"


def readable(text: str, limit: int = 80) -> str:
    """``text`` safe to show and to store: lone surrogates escaped, at most ``limit`` characters."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def describe_validation_error(e: ValidationError) -> str:
    """One readable line for a pydantic error: ``field: reason; field: reason``. Field names
    come from the input (an unknown field is named), so each is shortened and escaped."""
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(readable(str(p), 60) for p in err["loc"]) or "(root)"
        msg = readable(err["msg"].removeprefix("Value error, "), 200)
        if err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"must be {err['ctx']['expected']}"
        elif err["type"] == "string_unicode":
            msg = UNICODE_ONLY
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def message_json_schema() -> dict[str, Any]:
    schema = RequestMessage.model_json_schema()
    schema["$id"] = f"https://llmbatch.dev/schemas/request-message-v{MESSAGE_VERSION}.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


if __name__ == "__main__":
    print(json.dumps(message_json_schema(), indent=2))
