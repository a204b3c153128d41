"""The interface every endpoint kind implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from shared.errors import PermanentError
from shared.results import Usage


def invalid(message: str, code: str = "invalid_request") -> PermanentError:
    """A request no endpoint kind can send as it is, recorded with the status a server would
    answer (a translation refusing what the model's API cannot express, say)."""
    return PermanentError(message, status_code=HTTPStatus.BAD_REQUEST, code=code)


def content_texts(content: Any, *, where: str, destination: str) -> list[str]:
    """The texts of an OpenAI chat message's ``content``: a string, or a list of text parts.

    Raises
    ------
    PermanentError
        ``invalid_request`` for any other part (an image, say), naming ``where`` it is and
        ``destination`` (what it cannot be put in).
    """
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise invalid(f"{where}.content[{j}]: only text parts can be {destination}, got {kind!r}")
            texts.append(part["text"])
        return texts
    raise invalid(f"{where}.content must be a string or a list of text parts")


@dataclass(frozen=True)
class EndpointReply:
    """A successful answer (2xx)."""

    status_code: int
    body: Any
    usage: Usage
    request_id: str | None = None


class Endpoint(Protocol):
    name: str

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        """Make one model call.

        Raises
        ------
        PermanentError
            The request itself is wrong (4xx other than 408/409/429).
        TransientError
            Worth trying again later (timeouts, connection errors, 408, 409, 429, 5xx).
        """
        ...
