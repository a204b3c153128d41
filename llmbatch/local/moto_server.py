"""moto in server mode on 127.0.0.1: every AWS call of the local stack goes over real HTTP."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from typing import Any

from moto.server import ThreadedMotoServer

_ddb_lock = threading.RLock()
_patched = False


def _serialize_dynamodb() -> None:
    """Make moto's DynamoDB handle one request at a time.

    moto's server runs each request in a thread, and its TransactWriteItems deep-copies the
    tables while other threads write to them ("dictionary changed size during iteration").
    In AWS every DynamoDB operation is atomic on its own, so serializing them is faithful;
    SQS is left concurrent, since its long polls would otherwise block everything.
    """
    global _patched
    if _patched:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _ddb_lock:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _serialize_sqs()
    _patched = True


_sqs_lock = threading.RLock()


def _serialize_sqs() -> None:
    """Make moto's SQS hand each message to one receiver at a time.

    moto's ReceiveMessage has no lock: two concurrent receivers can both take the same
    visible message. Real SQS does that only rarely (at-least-once delivery), and our
    duplicate handling is tested on purpose elsewhere; a local stack that duplicates under
    every load would blur that. The long-poll wait happens outside the lock, so a waiting
    receiver never blocks the others.
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
        while True:
            with _sqs_lock:
                got = take(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            if got or time.monotonic() >= polling_end:
                return got
            time.sleep(0.05)

    for name in ("delete_message", "change_message_visibility", "send_message", "purge_queue"):
        original = getattr(SQSBackend, name)

        def locked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _sqs_lock:
                return _original(self, *args, **kwargs)

        setattr(SQSBackend, name, locked)
    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def _copy_each_table_once() -> None:
    """moto's TransactWriteItems backs up a table with ``copy.deepcopy`` once per *action*,
    not once per table: a 99-item transaction copies the whole results table 99 times, so
    its cost grows with the table's size times the transaction's (real DynamoDB's does
    not). The copies are identical (nothing changes between them), so copying each table
    once per call is the same behaviour, minus a cost that would swamp the figures of any
    handler that writes in transactions, and slow the local workers past their deadlines
    as a job's table grows. (DynamoDB calls are serialized here, so one memo per call is
    safe.)"""
    import copy

    from moto.dynamodb import models

    original = models.DynamoDBBackend.transact_write_items
    memo: dict[int, object] = {}
    active = [False]

    class _Copy:
        @staticmethod
        def deepcopy(obj: object) -> object:
            if not active[0]:
                return copy.deepcopy(obj)
            if id(obj) not in memo:
                memo[id(obj)] = copy.deepcopy(obj)
            return memo[id(obj)]

    def transact_write_items(self: object, transact_items: list) -> None:
        memo.clear()
        active[0] = True
        try:
            return original(self, transact_items)  # type: ignore[arg-type]
        finally:
            active[0] = False
            memo.clear()

    models.copy = _Copy  # type: ignore[assignment]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


_copied_once = False


class MotoServer:
    def __init__(self, port: int = 0, *, copy_tables_once: bool = True) -> None:
        global _copied_once
        # moto logs one line per request through werkzeug: far too loud for a console.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _serialize_dynamodb()
        if copy_tables_once and not _copied_once:
            _copy_each_table_once()
            _copied_once = True
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
