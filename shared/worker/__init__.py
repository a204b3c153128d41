"""Processing one SQS batch: the container's worker (:mod:`.processor`), one invocation's
records (:mod:`.batch_run`) and what it counted (:mod:`.stats`)."""
