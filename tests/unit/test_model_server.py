"""ModelServer's failure paths: a clear error, and no process left behind."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from llmbatch.local import model_server
from llmbatch.local.model_server import INSTALL_HINT, ModelServer, ModelServerError


def test_a_missing_model_file_is_named_and_nothing_is_started(tmp_path: Path) -> None:
    # GIVEN a model path with no file behind it
    server = ModelServer(model_path=tmp_path / "absent.gguf", log_path=tmp_path / "model-server.log")

    # WHEN it starts THEN the error names the path, and no process was made
    with pytest.raises(ModelServerError, match=r"absent\.gguf"):
        server.start()
    assert server.process is None


def test_without_the_extra_the_error_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the weights' package is not installed (as without the local extra)
    monkeypatch.setattr(model_server, "SMOLLM_PACKAGE", "llmbatch_no_such_weights_package")

    # WHEN the server looks for its model THEN it says how to install it
    with pytest.raises(ModelServerError) as caught:
        ModelServer().start()
    assert INSTALL_HINT in str(caught.value)


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in model_server.SERVER_MODULES),
    reason="needs the real llama.cpp server (the local-model extra); the test extra leaves it out",
)
def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    # GIVEN a file that is not a GGUF model, so the real llama.cpp server fails to load it
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a model\n" * 64)
    log = tmp_path / "model-server.log"
    server = ModelServer(model_path=bogus, log_path=log)

    # WHEN it starts
    with pytest.raises(ModelServerError, match="exited with code") as caught:
        server.start()

    # THEN the error carries the end of the server's own log, and its process is gone
    assert str(log) in str(caught.value)
    assert log.read_text().strip()
    assert server.process is not None
    assert server.process.poll() is not None


class _Silent(ModelServer):
    """A process that never listens: the server hung while loading."""

    def command(self, model_path: Path, port: int) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(600)"]


def test_a_server_that_never_answers_is_stopped_after_the_startup_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a model file and a server process that never answers (a stand-in: llama.cpp need
    # not be installed)
    monkeypatch.setattr(model_server, "SERVER_MODULES", ())
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    server = _Silent(model_path=model, log_path=tmp_path / "model-server.log", startup_timeout_s=1.0)

    # WHEN it starts THEN it gives up with a clear error, and has stopped the process
    with pytest.raises(ModelServerError, match="did not answer within"):
        server.start()
    assert server.process is not None
    assert server.process.poll() is not None
