"""Processing one SQS batch: the container's worker (:mod:`.processor`), one invocation's
records (:mod:`.batch_run`), what becomes of each of them (:mod:`.outcomes`) and what it
counted (:mod:`.stats`)."""
