"""The batch lane: jobs that run on an endpoint's native batch API (see :mod:`shared.lanes.native`)."""
