"""DynamoDB: the one store the functions and the client use (:mod:`.result_store`) over the
jobs table (:mod:`.jobs_table`) and the results table (:mod:`.results_table`), sharing one
counted client (:mod:`.dynamo`); the item codec and size limit (:mod:`.item_size`,
:mod:`.result_fit`), retrying unprocessed items (:mod:`.retry`) and the worker's batched,
conditional result writes (:mod:`.terminal_writes`, :mod:`.result_writer`)."""
