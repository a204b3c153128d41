"""App-wide messages, posted to the app and handled there."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class JobSubmitted(Message):
    """A job was created and all its requests enqueued."""

    job_id: str


@dataclass
class OpenJob(Message):
    """Show one job's detail screen."""

    job_id: str


@dataclass
class ActionFailed(Message):
    """An AWS or llmbatch call failed; the app shows it as an error notice."""

    error: BaseException
    context: str = ""
