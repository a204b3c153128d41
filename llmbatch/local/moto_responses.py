"""moto's request and response layer, shared by every service, without its per-request lookups.

Profiled on the local stack's SQS process during a submit (py-spy, only the thread holding the
interpreter lock; issue 12, target 3): a SendMessageBatch took ~5 ms of the server's CPU, of
which ~18% went to moto's serializer *finding* each response member and ~5% to finding the
action's method, answers that depend only on things fixed for the process's life:

* ``BaseResponse.call_action`` lists the response class's methods with ``inspect.getmembers``
  on every request, to check that the action names one of them.
* ``BaseResponse._enrich_response`` writes the request id into the body's ``<RequestId>`` with a
  regular expression on every response, a JSON one (which has no such element) and a
  ReceiveMessage of ten message bodies included (~6% of that call's CPU).
* The serializer asks its attribute picker, for every member of every structure in a response,
  which keys the value may hold it under (the member's name, its model name, its shape's name,
  prefixes stripped, snake_case forms), building a context object and six alias providers each
  time. For a plain ``dict`` value (what SQS's, SSM's and Lambda's responses are built from) those
  keys depend only on the member's name, its shape, the shape's parent and the picker's kind.

The request id is written only into a body that holds a ``<RequestId>``; the lookups are
computed once and remembered here; what moto does with them is unchanged (the same
keys, tried in the same order, against the same value). Pickers with response transformers
(which depend on the path in the response) and values that are not plain dicts (model objects,
whose aliases may depend on their class or a ``Meta``) take moto's own path.
"""

from __future__ import annotations

import functools
from typing import Any

_applied = False
#: Members whose keys are remembered at most (a service model has a few thousand).
KNOWN_MAX = 20_000


def remember_action_names() -> None:
    """``method_names_from_class`` once per response class (its methods do not change)."""
    from moto.core import responses
    from moto.core.utils import method_names_from_class

    @functools.cache
    def names(cls: type) -> frozenset[str]:
        return frozenset(method_names_from_class(cls))

    responses.method_names_from_class = names  # type: ignore[assignment]


def pick_dict_members_by_remembered_keys() -> None:
    """The serializer's keys for a member of a plain dict, found once per member and shape."""
    from moto.core.serialize import (
        DEFAULT_ALIAS_PROVIDERS,
        AttributePicker,
        AttributePickerContext,
        ResponseSerializer,
        XFormedAttributePicker,
    )
    from moto.core.utils import MISSING, get_value

    original = ResponseSerializer.get_value
    plain_pickers = (AttributePicker, XFormedAttributePicker)
    #: (picker's class, member name, member shape, its parent shape) -> keys, in moto's order.
    #: Bounded by the service models' members (shapes compare by identity and stay alive here),
    #: but for error shapes, which moto builds afresh for every error: so capped.
    known: dict[tuple[type, str, Any, Any], tuple[str, ...]] = {}
    #: Of those, the keys that are paths ("a.b", which ``get_value`` walks).
    paths: set[str] = set()

    def keys_for(self: Any, value: dict[str, Any], key: str, shape: Any) -> tuple[str, ...] | None:
        picker = self._value_picker
        if type(picker) not in plain_pickers or picker.response_transformers:
            return None
        if picker.alias_providers is not DEFAULT_ALIAS_PROVIDERS:
            return None
        found = (type(picker), key, shape, getattr(shape, "parent", None))
        keys = known.get(found)
        if keys is None:
            context = AttributePickerContext(
                obj=value,
                key=key,
                shape=shape,
                operation_model=self.operation_model,
                service_model=self.service_model,
                key_path=".".join(self.path),
            )
            try:
                keys = tuple(picker.get_possible_keys(context))
            except Exception:  # an alias provider moto's lazy walk would not have reached
                return None
            paths.update(k for k in keys if "." in k)
            if len(known) >= KNOWN_MAX:
                known.clear()
            known[found] = keys
        return keys

    def get_value_of_member(self: Any, value: Any, key: str, shape: Any) -> Any:
        if type(value) is dict:
            keys = keys_for(self, value, key, shape)
            if keys is not None:
                for possible in keys:
                    picked = get_value(value, possible, MISSING) if possible in paths else value.get(possible, MISSING)
                    if picked is not MISSING:
                        return picked
                return None
        return original(self, value, key, shape)

    get_value_of_member.__wrapped__ = original  # type: ignore[attr-defined]  # moto's own, for the tests
    ResponseSerializer.get_value = get_value_of_member  # type: ignore[method-assign]


def substitute_request_ids_only_where_present() -> None:
    """moto's ``_enrich_response``, its regular expression run only on a body that holds the
    element it replaces (elsewhere it changes nothing: a body without ``<RequestId>``, or bytes,
    which the substitution raises on and moto ignores)."""
    from moto.core.responses import BaseResponse

    original = BaseResponse._enrich_response

    def _enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
        if isinstance(body, str) and "<RequestId>" in body:
            return original(headers, body)
        enriched, _ = original(headers, "")  # the headers' part: status as text, a request id
        return enriched, body

    BaseResponse._enrich_response = staticmethod(_enrich_response)  # type: ignore[method-assign,assignment]


def remember_per_process_lookups() -> None:
    """All three patches, once per process."""
    global _applied
    if _applied:
        return
    remember_action_names()
    pick_dict_members_by_remembered_keys()
    substitute_request_ids_only_where_present()
    _applied = True
