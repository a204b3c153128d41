"""The client SDK: what an operator does with a deployed (or local) stack.

:class:`LlmbatchClient` submits a job file, reads status and results, cancels, retries, redrives
and changes the stack's limits; :mod:`.stack` finds the stack's resources, :mod:`.jobfile`
reads and checks a job file, :mod:`.cost` estimates a job's cost. The CLI and the console act
through this client only.
"""

from llmbatch.client.client import ExportSummary, LlmbatchClient, ProgressCallback, QueueStats
from llmbatch.client.stack import StackResources, locate_stack

__all__ = ["ExportSummary", "LlmbatchClient", "ProgressCallback", "QueueStats", "StackResources", "locate_stack"]
