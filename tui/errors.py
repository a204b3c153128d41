"""Turning a failure into a notice: a title and a short message, never a secret."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import JobFileError, LlmbatchError

MAX_MESSAGE_CHARS = 300


def describe_error(error: BaseException) -> tuple[str, str]:
    """``(title, message)`` for ``App.notify``."""
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        op = getattr(error, "operation_name", "") or "AWS call"
        return f"AWS error in {op}", _short(f"{err.get('Code', 'Unknown')}: {err.get('Message', '')}")
    if isinstance(error, BotoCoreError):
        # EndpointConnectionError and friends: their text names the URL, not credentials.
        return "AWS unreachable", _short(str(error))
    if isinstance(error, JobFileError):
        return error.title, _short("\n".join([str(error), *error.problems[:3]]))
    if isinstance(error, LlmbatchError):
        return error.title, _short(str(error))
    if isinstance(error, OSError):
        return "File error", _short(str(error))
    return "Unexpected error", _short(f"{type(error).__name__}: {error}")


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"
