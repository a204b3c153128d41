"""DynamoDB: the jobs and results tables (:mod:`.tables`), the item size limit
(:mod:`.item_size`, :mod:`.result_fit`), retrying unprocessed items (:mod:`.retry`) and the
worker's batched, conditional result writes (:mod:`.terminal_writes`, :mod:`.result_writer`)."""
