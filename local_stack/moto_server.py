"""moto in server mode on 127.0.0.1: every AWS call of the local stack goes over real HTTP."""

from __future__ import annotations

import logging
import threading
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
    _patched = True


class MotoServer:
    def __init__(self, port: int = 0) -> None:
        # moto logs one line per request through werkzeug: far too loud for a console.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _serialize_dynamodb()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
