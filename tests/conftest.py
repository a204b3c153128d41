"""Fixtures every tier uses."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def llmbatch_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` that sees our ``llmbatch.*`` loggers even after a handler module has been
    imported: the worker's handler gives those loggers Powertools' JSON handler and stops
    their propagation (``copy_config_to_registered_loggers``), as it should in Lambda."""
    loggers = [logging.getLogger("llmbatch")] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("llmbatch.")
    ]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.propagate = True
    try:
        yield caplog
    finally:
        for lg, propagate in saved:
            lg.propagate = propagate
