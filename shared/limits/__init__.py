"""How fast the worker may call the model: calls in flight (:mod:`.limiter`, sized by
:mod:`.adaptive`), the endpoint's global rate limits (:mod:`.rate_math`, :mod:`.rate_bucket`,
:mod:`.throttle`) and where the stack's limits are read from (:mod:`.source`)."""
