"""Processing one SQS batch (:mod:`.batch_run`)."""
