"""Options several commands share, declared once so their names and help cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from llmbatch.local.endpoint_choice import LocalEndpoint

F = TypeVar("F", bound=Callable[..., Any])


def stack_options(f: F) -> F:
    """``--stack``/``--region``: a deployed stack, else the running local stack."""
    f = click.option("--region", help="AWS region of the deployed stack")(f)
    return click.option("--stack", help="a deployed stack's name (default: the running local stack)")(f)


def endpoint_options(default: LocalEndpoint) -> Callable[[F], F]:
    """``--endpoint`` or ``--endpoint-url`` (not both: see :func:`local_endpoint`)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--endpoint-url", help="an OpenAI-compatible base URL instead, e.g. http://127.0.0.1:11434/v1"
        )(f)
        # No click default: it would hide `--endpoint X --endpoint-url Y` from the exclusion check.
        return click.option(
            "--endpoint",
            type=click.Choice([e.value for e in LocalEndpoint]),
            help=f"the model endpoint the local stack starts (default {default.value})",
        )(f)

    return decorate


def local_endpoint(endpoint: str | None, endpoint_url: str | None, default: LocalEndpoint) -> LocalEndpoint:
    """The endpoint chosen, refusing ``--endpoint`` together with ``--endpoint-url``."""
    if endpoint is not None and endpoint_url is not None:
        raise click.UsageError("--endpoint-url: not allowed with --endpoint")
    return LocalEndpoint(endpoint or default)


def stack_parameter(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (``VALUE`` ``@path``: the file's text) for ``local up --parameter``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text().strip()
        except OSError as e:
            raise ValueError(f"{name}: cannot read {value[1:]}: {e.strerror}") from e
    return name.strip(), value


class StackParameter(click.ParamType):
    """``local up --parameter NAME=VALUE``, refused as a usage error when malformed."""

    name = "NAME=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        try:
            return stack_parameter(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
