"""moto in server mode on 127.0.0.1: every AWS call of the local stack goes over real HTTP."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from moto.server import ThreadedMotoServer

_ddb_lock = threading.RLock()
_patched = False
#: The JSON protocol's target prefix of every DynamoDB call (``X-Amz-Target``).
DYNAMODB_TARGET = "DynamoDB_20120810."
#: moto's WSGI entry (``DomainDispatcherApplication.__call__``), or a layer around it.
Dispatch = Callable[[Any, dict[str, Any], Any], Any]


def _serialize_dynamodb() -> None:
    """Make moto's DynamoDB handle one request at a time.

    moto's server runs each request in a thread, and moto's models are not thread-safe
    (a transaction must not be seen half-applied; "dictionary changed size during
    iteration"). In AWS every DynamoDB operation is atomic on its own, so serializing them
    is faithful; SQS has a lock of its own (:func:`_serialize_sqs`), so a long poll never
    waits for a table and a transaction never waits for a queue.
    """
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    from llmbatch.local.moto_spill import end_request

    def call_action(self: Any) -> Any:
        with _ddb_lock:
            try:
                return original(self)
            finally:
                end_request()  # the items it changed, written back to disk

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


_sqs_lock = threading.RLock()
#: Notified whenever a queue may have a message to give: a long poll wakes at once.
_sqs_changed = threading.Condition(_sqs_lock)
#: How deep the current thread is in locked SQS calls (a batch calls the single-message one).
_nesting = threading.local()
#: The longest a long poll sleeps before looking again (a delay or a visibility timeout
#: may end meanwhile, which nothing notifies).
LONG_POLL_TICK_S = 0.1


def _serialize_sqs() -> None:
    """Make moto's SQS hand each message to one receiver at a time, and wake long polls.

    moto's ReceiveMessage has no lock: two concurrent receivers can both take the same
    visible message. Real SQS does that only rarely (at-least-once delivery), and our
    duplicate handling is tested on purpose elsewhere; a local stack that duplicates under
    every load would blur that. Every call that reads or changes a queue's messages runs
    under one lock, a batch as a whole (as SQS applies it). The long-poll wait happens
    outside the lock, so a waiting receiver never blocks the others, and it ends as soon as
    a send (or a change of visibility, or a purge) notifies it, as SQS's long polling
    answers as soon as a message arrives.
    """
    from moto.sqs.models import SQSBackend

    take = SQSBackend.receive_message

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        polling_end = time.monotonic() + (wait_seconds_timeout or 0)
        with _sqs_changed:
            while True:
                got = take(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
                left = polling_end - time.monotonic()
                if got or left <= 0:
                    return got
                _sqs_changed.wait(min(left, LONG_POLL_TICK_S))

    for name, notifies in (
        ("send_message", True),
        ("send_message_batch", True),
        ("delete_message", False),
        ("delete_message_batch", False),
        ("change_message_visibility", True),
        ("change_message_visibility_batch", True),
        ("purge_queue", False),
        ("get_queue_attributes", False),
        ("set_queue_attributes", True),
    ):
        original = getattr(SQSBackend, name)

        def locked(self: Any, *args: Any, _original: Any = original, _notifies: bool = notifies, **kwargs: Any) -> Any:
            with _sqs_changed:
                depth = getattr(_nesting, "depth", 0)
                _nesting.depth = depth + 1
                try:
                    result = _original(self, *args, **kwargs)
                finally:
                    _nesting.depth = depth
                if _notifies and depth == 0:  # once per call, not once per message of a batch
                    _sqs_changed.notify_all()
                return result

        setattr(SQSBackend, name, locked)
    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


#: SendMessage and SendMessageBatch calls moto works on at once in one process; the rest wait
#: (:func:`_admit_sends_in_turn`). A send is all CPU once its request is read, so one keeps
#: the process as busy as more would.
SENDS_AT_ONCE: Final = 1
#: The JSON protocol's ``X-Amz-Target`` of the calls that :data:`SENDS_AT_ONCE` admits.
_SEND_TARGETS: Final = ("AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch")


def _admit_sends_in_turn(inner: Dispatch) -> Dispatch:
    """Let a queue's receivers through while a producer floods it with sends.

    In one interpreter, every request in the works takes turns at its lock. ``submit`` keeps
    32 SendMessageBatch calls in flight, and with 32 sends being parsed, dispatched and
    answered at once, each of the poller's ReceiveMessage calls waited behind all of them:
    a short poll took 0.22-0.33 s (the median of each job's, five 2,000-request jobs) while
    the job was submitted, against 0.05-0.08 s with the sends admitted one at a time (same
    sitting, alternating). So the first invocations started later than the messages allowed
    (the first result came 0.3-1.0 s sooner with the sends admitted), and the endpoint
    waited. At SQS a producer's rate does not slow its consumers.

    Here the sends are admitted :data:`SENDS_AT_ONCE` at a time, after their request is
    read; the others wait without taking a turn. Every other call (receives, deletes,
    visibility changes, attributes) goes straight through. Submit alone is no slower for
    it: 1,400 messages/s either way (medians of five, alternating), with the same CPU per
    message: the process could only work on one at a time anyway. Beside a busy poller it
    now shares the process instead of going first (997 against 1,127 messages/s, the means
    of six 2,000-request jobs), still six times what the endpoint answers, while those jobs
    ended sooner (138 against 133 requests/s). A waiting send may be overtaken by a newer
    one (a semaphore keeps no queue); submit keeps 32 in flight, ~5 ms of work each, so a
    wait stays far inside the SDK's 60-s read timeout. Only the JSON protocol, which the
    botocore pinned here speaks to SQS, is told apart; a query-protocol send goes through
    unadmitted, as before. A request without a length (chunked) is read inside moto, so
    under the gate; the SDKs always send one.
    """
    admitted = threading.BoundedSemaphore(SENDS_AT_ONCE)

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET") in _SEND_TARGETS:
            with admitted:
                return inner(self, environ, start_response)
        return inner(self, environ, start_response)

    return __call__


#: The JSON protocol's ``X-Amz-Target`` prefixes of the calls :func:`_dispatch_json_calls_directly`
#: hands to moto's handler: the two services every request of a job goes through.
_DIRECT_TARGETS: Final = ("AmazonSQS.", DYNAMODB_TARGET)


def _dispatch_json_calls_directly(inner: Dispatch) -> Dispatch:
    """Hand a JSON-protocol call (SQS's and DynamoDB's) to moto's handler without Flask.

    moto's server wraps each service's handler in a Flask app: per request an application
    and a request context, URL routing, the request signals, Flask-CORS's after-request hook
    and a response conversion, around the one call that matters, the service's ``dispatch``.
    For the local stack's calls (every one a POST to ``/`` with ``X-Amz-Target``) that frame
    cost more than the call's own work in some cases. moto's CPU per call, measured on moto
    alone (2,000 messages in calls of ten; a 2,000-item table), before and after:
    SendMessageBatch 5.0 -> 3.5 ms, ReceiveMessage 5.0-5.7 -> 3.6, DeleteMessageBatch 3.6 ->
    2.2, GetItem 2.8-3.0 -> 1.4-2.0, a 100-key BatchGetItem 9.6-11 -> 8.2, a 26-action
    TransactWriteItems 13.6 -> 11.8-12.8.

    Here the route is matched once per service (it is the same for every such call), and the
    handler gets the request as Flask would hand it (moto's ``Request``, marked as served by
    a WSGI server); its answer, a ``ClientError`` (400) or a werkzeug HTTP error (moto's
    service errors) become the responses Flask makes of them (Flask's ``Response``, so its
    default content type too). Anything else propagates as it does through Flask in moto's
    debug mode (a ``BadRequestKeyError`` included): werkzeug answers 500. The one difference is
    Flask-CORS's ``Access-Control-Allow-Origin: *`` on every answer, which AWS does not send
    an SDK; a call with an ``Origin`` header (a browser's) goes through Flask and gets it, as
    does every other call (other services', S3's REST, the query protocol, moto's API).
    """
    from botocore.exceptions import ClientError
    from flask import Response
    from moto.core.request import Request
    from moto.core.utils import convert_to_flask_response
    from moto.moto_api import recorder
    from werkzeug.exceptions import BadRequestKeyError, HTTPException

    class ServerRequest(Request):
        from_wsgi_server = True

    #: Per service's Flask app, its view of ``POST /`` (None: not moto's plain handler).
    views: dict[Any, Any] = {}

    def view_of(app: Any, environ: dict[str, Any]) -> Any:
        if app not in views:
            try:
                endpoint, _ = app.url_map.bind_to_environ(environ).match("/", method="POST")
            except HTTPException:  # no such route: Flask's own answer
                endpoint = None
            view = app.view_functions.get(endpoint)
            views[app] = view if isinstance(view, convert_to_flask_response) else None
        return views[app]

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if (
            not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(_DIRECT_TARGETS)
            or "HTTP_ORIGIN" in environ
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("PATH_INFO") != "/"
            or environ.get("QUERY_STRING")
        ):
            return inner(self, environ, start_response)
        view = view_of(self.get_application(environ), environ)
        if view is None:
            return inner(self, environ, start_response)
        request = ServerRequest(environ)
        try:
            recorder._record_request(request)
            result = view.callback(request, request.raw_url, dict(request.headers))
        except ClientError as exc:
            result = 400, {}, exc.response["Error"]["Message"]
        except BadRequestKeyError:
            raise  # Flask in moto's debug mode lets it through: werkzeug answers 500
        except HTTPException as exc:
            return exc(environ, start_response)
        status, headers, content = result if len(result) == 3 else (200, {}, result)
        return Response(response=content, status=status, headers=headers)(environ, start_response)

    return __call__


def _route_calls() -> None:
    """Wrap moto's server entry once in the layers that take some calls before moto's own
    dispatch, outermost first: a DynamoDB call leaves for the DynamoDB process when this one
    forwards them (:func:`forward_dynamodb_to`); a send waits its turn
    (:func:`_admit_sends_in_turn`); SQS's and DynamoDB's calls reach moto's handler without
    Flask (:func:`_dispatch_json_calls_directly`). Each passes on what it does not take. The
    order is written here, not left to the order in which patches were applied."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    call: Dispatch = DomainDispatcherApplication.__call__
    for layer in (_dispatch_json_calls_directly, _admit_sends_in_turn, _forward_dynamodb_calls):
        call = layer(call)
    DomainDispatcherApplication.__call__ = call  # type: ignore[method-assign,assignment]


#: The services whose model instances moto would keep for ever: one per item written (and per
#: copy of one), one per message sent.
_UNTRACKED_SERVICES: Final = frozenset({"dynamodb", "sqs"})


def _forget_model_instances() -> None:
    """Stop moto keeping every DynamoDB item and SQS message it ever made.

    moto's ``BaseModel.__new__`` appends every instance of a model class to the class's
    ``instances_tracked`` list, for its dashboard (``/moto-api/data.json``), and nothing
    removes them until a reset: every ``Item`` a Put made, every copy an UpdateItem or a
    transaction took, every SQS ``Message``, alive for the server's life, deleted or not.
    That, not the tables, was most of the local stack's memory growing with its jobs (issue
    12, target 5: ~4 KB per request in the DynamoDB process alone). The dashboard is not
    part of AWS; the local stack never reads it. Other services' models stay tracked (S3
    closes its objects' files through the list at reset).
    """
    from moto.core.common_models import BaseModel

    original = BaseModel.__new__
    untracked: dict[type, bool] = {}

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        skip = untracked.get(cls)
        if skip is None:
            parts = cls.__module__.split(".")
            skip = untracked[cls] = len(parts) > 1 and parts[0] == "moto" and parts[1] in _UNTRACKED_SERVICES
        return object.__new__(cls) if skip else original(cls, *args, **kwargs)

    BaseModel.__new__ = __new__  # type: ignore[method-assign,assignment]


def _remember_backend_per_host() -> None:
    """Make moto's server find a request's service once per host name, not once per request.

    For every request moto's dispatcher looks the host name up among its service modules by
    listing moto's package directory (``os.listdir`` and an ``isdir`` per entry, some 250),
    then tries every service's URL patterns, all under one lock that every request of every
    service takes: on a busy local stack requests queue there. The answer depends only on
    the host name and moto's installed files, so it is remembered.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.get_backend_for_host
    known: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in known:
            known[host] = original(self, host)
        return known[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]


def _keep_connections_alive() -> None:
    """Make moto's server keep a client's connection open between requests, as AWS's
    endpoints do (HTTP/1.1 keep-alive).

    Werkzeug's development server closes every connection after one response ("Connection:
    close"), because it cannot tell where an unread request body ends; then, before closing,
    it waits 10 ms for any more of the body to arrive and discards it. So every AWS call of
    the local stack paid a new TCP connection on both sides, a new server thread, and 10 ms.
    Here each request's body is read whole before moto sees it (its Content-Length says how
    much), so nothing of it is left on the connection, and the connection stays open for the
    client's next request; the 10-ms drain, which would now eat that next request, goes.
    A request without a length (a chunked upload) is answered and closed as before.
    """
    import io
    import selectors
    import types

    import werkzeug.serving
    from moto.moto_server import threaded_moto_server
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    request_log = logging.getLogger("werkzeug")

    class KeepAliveRequestHandler(MotoRequestHandler):
        #: An idle connection is dropped after this long (the SDKs' pools drop theirs sooner).
        timeout = 300
        #: TCP_NODELAY, as the SDKs set on their side. A kept-alive connection otherwise loses
        #: 40 ms on most responses: the server writes the headers and the body separately,
        #: Nagle's algorithm holds the body until the headers are acknowledged, and the
        #: client delays that acknowledgement (Linux: up to 40 ms). A SendMessageBatch took
        #: 49 ms of wall time for 4.5 ms of the server's CPU.
        disable_nagle_algorithm = True
        _keep_alive = False

        def make_environ(self) -> dict[str, Any]:
            environ = super().make_environ()
            self._keep_alive = False
            if environ.get("wsgi.input_terminated"):  # chunked: no length to read up to
                return environ
            length = int(self.headers.get("Content-Length") or 0)
            environ["wsgi.input"] = io.BytesIO(self.rfile.read(length) if length > 0 else b"")
            self._keep_alive = True
            return environ

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # Werkzeug formats each request's log line (the path decoded, a timestamp, the
            # client's address) before its logger decides to drop it: 2-3% of a call.
            # (MotoServer sets the logger's level; unset, werkzeug would set INFO.)
            if request_log.isEnabledFor(logging.INFO):
                super().log_request(code, size)

        def send_header(self, keyword: str, value: str) -> None:
            if self._keep_alive and keyword.lower() == "connection" and value.lower() == "close":
                return  # (http.server would also mark the connection to be closed)
            super().send_header(keyword, value)

    class _NoDrain:
        """Werkzeug's after-response drain, which only its own handlers' closing needs."""

        def register(self, *args: Any) -> None:
            pass

        def select(self, timeout: float | None = None) -> list[Any]:
            return []

        def close(self) -> None:
            pass

    werkzeug.serving.selectors = types.SimpleNamespace(  # type: ignore[assignment]
        DefaultSelector=_NoDrain, EVENT_READ=selectors.EVENT_READ
    )
    threaded_moto_server.MotoRequestHandler = KeepAliveRequestHandler  # type: ignore[misc]


def apply_patches(*, transactions: bool = True) -> None:
    """Every patch of the local stack's moto, once per process (moto's state is per process).

    * :func:`_serialize_dynamodb`, :func:`_serialize_sqs`: locks (one per service).
    * :func:`_route_calls`, the layers around moto's dispatch: DynamoDB's calls forwarded
      (when :func:`forward_dynamodb_to` says where), a producer's sends admitted in turn so
      they do not hold up the queue's receivers, SQS's and DynamoDB's calls without Flask.
    * :func:`_keep_connections_alive`: HTTP/1.1 keep-alive, as AWS's endpoints; no request
      log line formatted only to be dropped.
    * :func:`_remember_backend_per_host`: the dispatcher's service lookup, once per host.
    * :func:`_forget_model_instances`: no DynamoDB item or SQS message kept after its use.
    * ``llmbatch.local.moto_responses``: the action's method and each response member's keys
      found once per process, not once per request.
    * ``llmbatch.local.moto_sqs``: standard queues O(1) in their depth.
    * ``llmbatch.local.moto_dynamodb``: condition expressions parsed once, items sized once, a
      table Query reading its own partition only, attribute values serialised as the dicts
      they already are; and (``transactions``)
      TransactWriteItems backs up the items it touches, not whole tables, and
      ``llmbatch.local.moto_spill`` keeps the results table's items on disk. Off, moto's own
      (the benchmark's ``--faithful-moto``).
    """
    global _patched
    if _patched:
        return
    from llmbatch.local.moto_responses import remember_per_process_lookups
    from llmbatch.local.moto_sqs import make_standard_queues_constant_time

    make_standard_queues_constant_time()
    remember_per_process_lookups()
    _forget_model_instances()
    _keep_connections_alive()
    _remember_backend_per_host()
    _serialize_dynamodb()
    _serialize_sqs()
    _route_calls()
    from llmbatch.local.moto_dynamodb import (
        back_up_touched_items_only,
        parse_each_condition_once,
        query_one_partition,
        serialize_attribute_values_directly,
        size_each_item_once,
    )

    parse_each_condition_once()
    size_each_item_once()
    query_one_partition()
    serialize_attribute_values_directly()
    if transactions:
        back_up_touched_items_only()
        from llmbatch.local.moto_spill import spill_string_keyed_tables

        spill_string_keyed_tables()
    _patched = True


class MotoServer:
    def __init__(self, port: int = 0, *, patch_transactions: bool = True) -> None:
        # moto logs one line per request through werkzeug: far too loud for a console.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        apply_patches(transactions=patch_transactions)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        # moto keeps its state per process, not per server: start every stack empty.
        urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset", method="POST"), timeout=10).close()
        return self.url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Headers of one hop that a forwarder must not pass on.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}
)


#: Where this process passes DynamoDB's calls on (:func:`forward_dynamodb_to`); None: it
#: answers them itself.
_dynamodb_forward: Callable[[dict[str, Any], Any], Any] | None = None


def forward_dynamodb_to(url: str) -> None:
    """Make this process's moto pass every DynamoDB call on to the moto at ``url``.

    The local stack runs DynamoDB in a moto process of its own, so the workers' writes and
    the queue's sends and receives run on two cores instead of taking turns under one
    interpreter lock (on one core, a submit's SendMessageBatch waited behind the workers'
    TransactWriteItems). The workers call it directly (``AWS_ENDPOINT_URL_DYNAMODB``); the
    stack's one endpoint, which the CLI, the console and the tests use, passes it on here,
    request and answer unchanged, so every client still sees one AWS endpoint. It takes
    effect through the layers :func:`apply_patches` puts around moto's dispatch
    (:func:`_forward_dynamodb_calls`, the outermost), whether called before or after them.
    """
    import http.client
    from urllib.parse import urlsplit

    global _dynamodb_forward
    target = urlsplit(url)
    # One kept-alive connection per server thread (each client connection has its thread).
    local = threading.local()

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[Any, bytes]:
        for attempt in (1, 2):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=300)
            try:
                conn.request(method, path, body, headers)
                resp = conn.getresponse()
                return resp, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()  # the other end dropped an idle connection: once more, on a new one
                local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def forward(environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-"): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["CONTENT-TYPE"] = environ["CONTENT_TYPE"]
        headers["CONTENT-LENGTH"] = str(len(body))
        path = environ.get("PATH_INFO", "/") + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
        resp, data = send(environ["REQUEST_METHOD"], path, body, headers)
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"]
        start_response(f"{resp.status} {resp.reason}", [*kept, ("Content-Length", str(len(data)))])
        return [data]

    _dynamodb_forward = forward


def _forward_dynamodb_calls(inner: Dispatch) -> Dispatch:
    """The outermost layer (:func:`_route_calls`): a DynamoDB call leaves this process, when
    it forwards them, before any other layer would answer it from this process's tables."""

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        forward = _dynamodb_forward
        if forward is not None and str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(DYNAMODB_TARGET):
            return forward(environ, start_response)
        return inner(self, environ, start_response)

    return __call__


class MotoServerProcess:
    """:class:`MotoServer` in a process of its own (``python -m llmbatch.local.moto_server``): its
    CPU and its interpreter lock apart from the poller's, as AWS's services run apart from
    Lambda's pollers. It stops when its stdin closes, so it never outlives the process that
    started it, whichever way that one ends."""

    def __init__(
        self,
        *,
        patch_transactions: bool = True,
        forward_dynamodb: str | None = None,
        warm: Sequence[str] = (),
    ) -> None:
        self._args = [] if patch_transactions else ["--faithful-transactions"]
        if forward_dynamodb:
            self._args += ["--forward-dynamodb", forward_dynamodb]
        if warm:
            self._args += ["--warm", ",".join(warm)]
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> str:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llmbatch.local.moto_server", *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("moto's server did not start")
        self.url = json.loads(line)["url"]
        return self.url

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        # Its state is in memory and goes with it: no need to wait for werkzeug's orderly
        # shutdown (half a second of its poll interval, twice per stack in every test).
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> MotoServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: The services a local stack's template needs (llmbatch/local/provision.py creates their
#: resources), besides DynamoDB, which has a moto process of its own.
LOCAL_STACK_SERVICES: Final = ("sqs", "ssm", "lambda", "s3", "events", "secretsmanager", "scheduler", "iam")


def warm_backends(services: Sequence[str]) -> None:
    """Import moto's models of ``services`` now. moto imports a service's modules on the first
    request for it; SSM's pull in much of EC2's (~1.8 s of CPU), which the stack's provisioning
    then waited for. Run in a thread once the server answers, this overlaps the parent's other
    start-up steps; a request that comes first just waits for the import, as it did before."""
    from moto.backends import get_backend

    for service in services:
        with contextlib.suppress(Exception):  # a name moto does not know: its first request says so
            get_backend(service)  # type: ignore[call-overload]


def _serve() -> None:
    """The entry point of :class:`MotoServerProcess`: prints ``{"url": ...}``, serves until
    stdin closes. Ctrl-C at a terminal reaches the whole process group: the parent stops
    this one (by closing stdin), so a SIGINT of its own is ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent stops us with SIGTERM: exit as from a return, so the exit handlers run
    # (the DynamoDB process's spill file is removed by one).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = MotoServer(patch_transactions="--faithful-transactions" not in sys.argv)
    if "--forward-dynamodb" in sys.argv:
        forward_dynamodb_to(sys.argv[sys.argv.index("--forward-dynamodb") + 1])
    url = server.start()
    print(json.dumps({"url": url}), flush=True)
    if "--warm" in sys.argv:
        services = sys.argv[sys.argv.index("--warm") + 1].split(",")
        threading.Thread(target=warm_backends, args=(services,), daemon=True, name="moto-warm").start()
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()


if __name__ == "__main__":
    _serve()
