"""The error types of llmbatch.

Every failure is classified where it is first seen: a :class:`PermanentError` is recorded
as the request's final answer and never retried; a :class:`TransientError` goes back to SQS
(a batch item failure) and is delivered again later.
"""

from __future__ import annotations


class LlmbatchError(Exception):
    """Base of every error llmbatch raises on purpose."""

    #: A short title for the console's notices.
    title: str = "llmbatch error"


class PermanentError(LlmbatchError):
    """A failure that will not go away on retry (bad request, auth, invalid message)."""

    title = "Request failed"

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code


class TransientError(LlmbatchError):
    """A failure worth retrying through SQS (timeouts, throttling, 5xx, deadline)."""

    title = "Retrying"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.retry_after_s = retry_after_s


class EndpointHTTPError(TransientError):
    """The endpoint answered 408, 409, 429 or 5xx."""


class EndpointTimeoutError(TransientError):
    """A model call did not finish within its timeout."""


class EndpointConnectionError(TransientError):
    """The endpoint could not be reached."""


class BudgetExhaustedError(TransientError):
    """The invocation's deadline left no time to start (or finish) this call."""


class InvalidMessageError(PermanentError):
    """An SQS message that does not follow the message schema."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        custom_id: str | None = None,
        line: int = 0,
        sig: str | None = None,
    ) -> None:
        super().__init__(message, code="invalid_message")
        #: What could still be read of the message (each only if it passed its own rules),
        #: so the failure can be recorded against its request, if the request is its job's.
        self.job_id = job_id
        self.custom_id = custom_id
        self.line = line
        self.sig = sig


class UnreadableMessageError(TransientError):
    """A message whose job or request id cannot be read: nothing can be recorded for it,
    so it is left to reach the dead-letter queue, where it stays for inspection."""


class JobFileError(LlmbatchError):
    """A job file that failed validation; carries every problem found."""

    title = "Invalid job file"

    def __init__(self, problems: list[str], total_problems: int) -> None:
        super().__init__(f"{total_problems} problem(s) in the job file")
        self.problems = problems
        self.total_problems = total_problems


class StackNotFoundError(LlmbatchError):
    """No local stack is running and no deployed stack was named."""

    title = "Stack not found"


class JobNotFoundError(LlmbatchError):
    """The job id is not in the jobs table."""

    title = "Job not found"


class ConfigError(LlmbatchError):
    """Configuration that is missing or out of range."""

    title = "Invalid configuration"
