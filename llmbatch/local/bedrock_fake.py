"""A small stand-in for Amazon Bedrock's runtime API, for tests and the local stack.

moto implements only InvokeModel for ``bedrock-runtime`` (answering ``{}``, with no Converse,
no errors and no token-count headers), so the Bedrock endpoint is tested against this
server instead: it speaks the real REST-JSON protocol the AWS SDK uses, so the real
aiobotocore client talks to it unchanged (given ``endpoint_url``):

- ``POST /model/{modelId}/converse``: Converse, with Bedrock's checks (roles alternate, the
  first turn is the user's, no blank text, an embeddings model refused) and its answer
  shape (``output.message``, ``stopReason``, ``usage``, ``metrics``);
- ``POST /model/{modelId}/invoke``: InvokeModel for Titan embeddings (``inputText`` →
  ``embedding``, ``inputTextTokenCount``), Titan text and Anthropic messages bodies, with
  the ``X-Amzn-Bedrock-Input-Token-Count``/``-Output-Token-Count`` headers;
- errors as Bedrock sends them: the status of the error's shape in botocore's model, the
  type in ``x-amzn-ErrorType``, ``{"message": ...}`` as the body.

Requests must be SigV4-signed for the ``bedrock`` service (any key is accepted). Faults are
injected with markers in a request's text: ``[[bedrock:ThrottlingException]]`` fails every
time, ``[[bedrock:fail-first-2:ThrottlingException]]`` the first two attempts of that
request, ``[[bedrock:sleep-1.5]]`` answers after 1.5 s. ``GET /_fake/stats`` counts calls,
attempts and answers per request (its last user text or input text).

Batch inference's control plane (service ``bedrock``: CreateModelInvocationJob, Get, List,
Stop) is served by the same server, see :mod:`llmbatch.local.bedrock_batch_fake`; its jobs
read and write S3 at ``s3_endpoint_url`` and answer each record with the InvokeModel above.

It binds to 127.0.0.1 only. ``python -m llmbatch.local.bedrock_fake --port 0`` prints
``{"url": "http://127.0.0.1:PORT"}`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from llmbatch.local.bedrock_batch_fake import BatchConfig, FakeBatchJobs

LOCALHOST: Final = "127.0.0.1"

#: Bedrock runtime's error shapes and their HTTP status (botocore's bedrock-runtime model).
ERROR_STATUS: Final = {
    "AccessDeniedException": 403,
    "InternalServerException": 500,
    "ModelErrorException": 424,
    "ModelNotReadyException": 429,
    "ModelTimeoutException": 408,
    "ResourceNotFoundException": 404,
    "ServiceQuotaExceededException": 400,
    "ServiceUnavailableException": 503,
    "ThrottlingException": 429,
    "ValidationException": 400,
}
#: Errors of the AWS front door itself (signing), not of Bedrock's model.
AUTH_ERRORS: Final = {"MissingAuthenticationTokenException": 403, "InvalidSignatureException": 403}
_MESSAGES: Final = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "InternalServerException": "The system encountered an unexpected error during processing. Try your request again.",
    "ModelNotReadyException": "Model is not ready to serve inference requests.",
    "ModelTimeoutException": "Model has timed out in processing the request.",
    "ServiceQuotaExceededException": "Your request exceeds the service quota for your account.",
    "ModelErrorException": "The model returned an error.",
}

_MARKER = re.compile(r"\[\[bedrock:([^\]]*)\]\]")
_MODEL_ID = re.compile(r"^(arn:aws:bedrock:[^/]+/)?([a-z0-9-]+\.)?[a-z0-9-]+\.[A-Za-z0-9.:_-]+$")
EMBEDDING_DIM: Final = 8


class BedrockFault(Exception):
    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or _MESSAGES.get(code, code)


@dataclass
class FakeStats:
    calls: Counter[str] = field(default_factory=Counter)
    attempts_by_request: Counter[str] = field(default_factory=Counter)
    answered_by_request: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "calls_total": sum(self.calls.values()),
            "attempts_by_request": dict(self.attempts_by_request),
            "answered_by_request": dict(self.answered_by_request),
        }


@dataclass
class FakeBedrock:
    """The server's state: what it counted, and how slow it is."""

    latency_s: float = 0.0
    stats: FakeStats = field(default_factory=FakeStats)
    #: Where batch jobs read their input and write their output (moto's server); None: AWS's own.
    s3_endpoint_url: str | None = None
    batch_config: BatchConfig = field(default_factory=BatchConfig)
    #: Batch inference's control plane (:mod:`llmbatch.local.bedrock_batch_fake`), answering
    #: each record with this fake's own InvokeModel.
    batch: FakeBatchJobs = field(init=False)

    def __post_init__(self) -> None:
        self.batch = FakeBatchJobs(
            lambda model, body: self._invoke(model, body),
            batch_fault,
            config=self.batch_config,
            s3_endpoint_url=self.s3_endpoint_url,
        )

    def reset(self) -> None:
        self.stats = FakeStats()

    # --- handlers -------------------------------------------------------------------------

    async def converse(self, request: web.Request) -> web.Response:
        return await self._serve(request, "converse", self._converse)

    async def invoke(self, request: web.Request) -> web.Response:
        return await self._serve(request, "invoke", self._invoke)

    async def _serve(
        self,
        request: web.Request,
        operation: str,
        answer: Callable[[str, Any], tuple[dict[str, Any], dict[str, str]]],
    ) -> web.Response:
        self.stats.calls[operation] += 1
        request_id = str(uuid.uuid4())
        try:
            _check_signature(request)
            model = request.match_info["modelId"]
            raw = await request.text()
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as e:
                raise BedrockFault("ValidationException", "Malformed input request, please reformat your input.") from e
            key = _request_key(body)
            self.stats.attempts_by_request[key] += 1
            await self._faults(raw, self.stats.attempts_by_request[key])
            if not _MODEL_ID.match(model):
                raise BedrockFault("ValidationException", "The provided model identifier is invalid.")
            payload, headers = answer(model, body)
        except BedrockFault as fault:
            return _error(fault, request_id)
        self.stats.answered_by_request[key] += 1
        return web.json_response(payload, headers={"x-amzn-RequestId": request_id, **headers})

    async def _faults(self, raw: str, attempt: int) -> None:
        for marker in _MARKER.findall(raw):
            parts = marker.split(":")
            if parts[0].startswith("sleep-"):
                await asyncio.sleep(float(parts[0].removeprefix("sleep-")))
            elif parts[0].startswith("fail-first-") and len(parts) == 2:
                if attempt <= int(parts[0].removeprefix("fail-first-")):
                    raise BedrockFault(parts[1])
            else:
                raise BedrockFault(parts[0])
        if self.latency_s:
            await asyncio.sleep(self.latency_s)

    def _converse(self, model: str, body: Any) -> tuple[dict[str, Any], dict[str, str]]:
        if "embed" in model:
            raise BedrockFault("ValidationException", "This action doesn't support the model that you provided.")
        messages = body.get("messages") if isinstance(body, dict) else None
        _check_conversation(messages)
        assert isinstance(messages, list)
        system = " ".join(block.get("text", "") for block in body.get("system", []))
        config = body.get("inferenceConfig", {})
        last_user = _text_of(messages[-1]) if messages[-1]["role"] == "user" else ""
        words = ("echo: " + _MARKER.sub("", last_user).strip()).split()
        stop_reason = "end_turn"
        max_tokens = config.get("maxTokens")
        if isinstance(max_tokens, int) and len(words) > max_tokens:
            words, stop_reason = words[:max_tokens], "max_tokens"
        text = " ".join(words)
        for stop in config.get("stopSequences", []):
            if stop and stop in text:
                text, stop_reason = text[: text.index(stop)], "stop_sequence"
        prompt = len(system.split()) + sum(len(_text_of(m).split()) for m in messages)
        completion = len(text.split())
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": stop_reason,
            "usage": {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion},
            "metrics": {"latencyMs": int(self.latency_s * 1000)},
        }, {}

    def _invoke(self, model: str, body: Any) -> tuple[dict[str, Any], dict[str, str]]:
        if not isinstance(body, dict):
            raise BedrockFault("ValidationException", "Malformed input request, please reformat your input.")
        if "embed" in model:
            answer, prompt, completion = _titan_embedding(body)
        elif model.startswith("anthropic.") or ".anthropic." in model:
            answer, prompt, completion = _anthropic_messages(body)
        elif model.startswith("amazon.titan-text"):
            answer, prompt, completion = _titan_text(body)
        else:
            raise BedrockFault("ValidationException", f"The fake does not know the body format of {model}.")
        return answer, {
            "X-Amzn-Bedrock-Input-Token-Count": str(prompt),
            "X-Amzn-Bedrock-Output-Token-Count": str(completion),
            "X-Amzn-Bedrock-Invocation-Latency": str(int(self.latency_s * 1000)),
        }


def batch_fault(raw: str) -> tuple[str, str] | None:
    """The fault a batch record's markers ask for: a batch job tries each record once, so
    ``fail-first-N`` fails it; ``sleep`` markers are ignored."""
    for marker in _MARKER.findall(raw):
        parts = marker.split(":")
        if parts[0].startswith("sleep-"):
            continue
        fault = BedrockFault(parts[1] if parts[0].startswith("fail-first-") and len(parts) == 2 else parts[0])
        return fault.code, fault.message
    return None


def _check_signature(request: web.Request) -> None:
    auth = request.headers.get("Authorization", "")
    if not auth:
        raise BedrockFault("MissingAuthenticationTokenException", "Missing Authentication Token")
    # Bedrock's runtime is signed for the service name "bedrock" (botocore's signingName).
    if not auth.startswith("AWS4-HMAC-SHA256 ") or "/bedrock/aws4_request" not in auth:
        raise BedrockFault("InvalidSignatureException", "The request signature we calculated does not match.")


def _check_conversation(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise BedrockFault("ValidationException", "A conversation must start with a user message.")
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise BedrockFault("ValidationException", f"messages.{i}.role: must be user or assistant")
        if i == 0 and role != "user":
            raise BedrockFault("ValidationException", "A conversation must start with a user message.")
        if role == previous:
            raise BedrockFault(
                "ValidationException",
                "A conversation must alternate between user and assistant roles. "
                "Make sure the conversation alternates between user and assistant roles and try again.",
            )
        previous = role
        for j, block in enumerate(message.get("content") or []):
            if "text" in block and not str(block["text"]).strip():
                raise BedrockFault(
                    "ValidationException",
                    f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. "
                    "Add text to the text field, and try again.",
                )


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text", "")) for b in content or [] if isinstance(b, dict))


def _request_key(body: Any) -> str:
    """What the stats count a request by: its last user text, or its input text."""
    if isinstance(body, dict):
        if isinstance(body.get("inputText"), str):
            return str(body["inputText"])
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            return _text_of(messages[-1])
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _titan_embedding(body: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise BedrockFault("ValidationException", "Malformed input request: #: required key [inputText] not found")
    dim = body.get("dimensions", EMBEDDING_DIM)
    digest = hashlib.sha256(text.encode()).digest()
    vector = [round((digest[i % len(digest)] - 128) / 128, 6) for i in range(int(dim))]
    tokens = len(text.split())
    return {"embedding": vector, "inputTextTokenCount": tokens}, tokens, 0


def _anthropic_messages(body: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    for required in ("anthropic_version", "max_tokens", "messages"):
        if required not in body:
            raise BedrockFault(
                "ValidationException", f"Malformed input request: #: required key [{required}] not found"
            )
    messages = body["messages"]
    _check_conversation(messages)
    words = ("echo: " + _MARKER.sub("", _text_of(messages[-1])).strip()).split()[: int(body["max_tokens"])]
    prompt = len(str(body.get("system", "")).split()) + sum(len(_text_of(m).split()) for m in messages)
    answer = {
        "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [{"type": "text", "text": " ".join(words)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": len(words)},
    }
    return answer, prompt, len(words)


def _titan_text(body: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    text = body.get("inputText")
    if not isinstance(text, str):
        raise BedrockFault("ValidationException", "Malformed input request: #: required key [inputText] not found")
    words = ("echo: " + _MARKER.sub("", text).strip()).split()
    prompt = len(text.split())
    answer = {
        "inputTextTokenCount": prompt,
        "results": [{"tokenCount": len(words), "outputText": " ".join(words), "completionReason": "FINISH"}],
    }
    return answer, prompt, len(words)


def _error(fault: BedrockFault, request_id: str) -> web.Response:
    status = ERROR_STATUS.get(fault.code) or AUTH_ERRORS.get(fault.code) or 400
    body: dict[str, Any] = {"message": fault.message}
    if fault.code == "ModelErrorException":
        body |= {"originalStatusCode": 500, "resourceName": "fake-model"}
    return web.json_response(
        body,
        status=status,
        headers={
            "x-amzn-ErrorType": f"{fault.code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": request_id,
        },
    )


def build_app(fake: FakeBedrock | None = None) -> web.Application:
    fake = fake or FakeBedrock()
    app = web.Application()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(fake.stats.to_dict())

    async def reset(_: web.Request) -> web.Response:
        fake.reset()
        return web.json_response({})

    app.router.add_post("/model/{modelId}/converse", fake.converse)
    app.router.add_post("/model/{modelId}/invoke", fake.invoke)
    app.router.add_get("/_fake/stats", stats)
    app.router.add_post("/_fake/reset", reset)
    fake.batch.routes(app)
    return app


@dataclass
class RunningFake:
    runner: web.AppRunner
    fake: FakeBedrock
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_bedrock_fake(fake: FakeBedrock | None = None, *, port: int = 0) -> RunningFake:
    """Serve on 127.0.0.1 (``port`` 0: any free port) and return once listening."""
    fake = fake or FakeBedrock()
    # A client that gives up (a timed-out call) cancels its handler, as a real server would.
    runner = web.AppRunner(build_app(fake), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, LOCALHOST, port)
    await site.start()
    return RunningFake(runner=runner, fake=fake, port=int(runner.addresses[0][1]))


class BedrockFakeThread:
    """The fake on its own loop in a daemon thread, for tests whose workers run elsewhere."""

    def __init__(self, fake: FakeBedrock | None = None) -> None:
        self.fake = fake or FakeBedrock()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._running: RunningFake | None = None

    @property
    def url(self) -> str:
        assert self._running is not None, "the fake is not started"
        return self._running.url

    def start(self, timeout_s: float = 10.0) -> str:
        self._thread = threading.Thread(target=self._loop.run_forever, name="bedrock-fake", daemon=True)
        self._thread.start()
        self._running = self._run(start_bedrock_fake(self.fake), timeout_s)
        return self.url

    def _run(self, coro: Awaitable[Any], timeout_s: float = 10.0) -> Any:
        async def wrapper() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout_s)

    def stats(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.fake.stats.to_dict()

        return dict(self._run(read()))

    def reset(self) -> None:
        async def do() -> None:
            self.fake.reset()

        self._run(do())

    # --- batch inference, driven from the test's thread ------------------------------------

    def use_s3(self, s3_endpoint_url: str) -> None:
        """Batch jobs read and write S3 at ``s3_endpoint_url`` (a stack started after the fake)."""
        self._run(self.fake.batch.use_s3(s3_endpoint_url))

    def configure_batch(self, **changes: Any) -> None:
        """Change the batch quotas and speed (as ``POST /_fake/batch/config``); every unfinished
        job takes its next step now, then waits the new ``step_s`` between steps."""

        async def do() -> None:
            self.fake.batch.config.update(changes)
            for job_id in list(self.fake.batch.jobs):
                self.fake.batch.step(job_id)

        self._run(do())

    def step_batch_job(self, job_id: str) -> None:
        """Take one batch job's next step now."""

        async def do() -> None:
            self.fake.batch.step(job_id)

        self._run(do())

    def batch_jobs(self) -> list[dict[str, Any]]:
        """Every batch job as GetModelInvocationJob describes it, in submit order."""

        async def read() -> list[dict[str, Any]]:
            jobs = sorted(self.fake.batch.jobs.values(), key=lambda j: j.submit_time)
            return [j.describe() for j in jobs]

        return list(self._run(read()))

    def stop(self) -> None:
        if self._running is not None:
            with contextlib.suppress(Exception):
                self._run(self._running.close())
            self._running = None
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
            self._loop.close()

    def __enter__(self) -> BedrockFakeThread:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--s3-endpoint-url", default=None, help="Where batch jobs read and write (moto's server).")
    parser.add_argument("--batch-step-s", type=float, default=BatchConfig.step_s, help="Seconds per batch job step.")
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeBedrock(
            latency_s=args.latency_s,
            s3_endpoint_url=args.s3_endpoint_url,
            batch_config=BatchConfig(step_s=args.batch_step_s),
        )
        running = await start_bedrock_fake(fake, port=args.port)
        print(json.dumps({"url": running.url, "port": running.port}), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await running.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
