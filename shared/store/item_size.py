"""DynamoDB items: the codec between plain values and attribute values, and sizes as
DynamoDB counts them.

One size function (:func:`item_bytes`) serves every limit check: the 400 KB item limit,
the 4 MB a transaction may write, and the write units a job is metered for. DynamoDB
counts UTF-8 bytes of attribute names and values (so a CJK character is three bytes, not
one), numbers by their significant digits, and 3 bytes per list or map plus 1 per element
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_ser = TypeSerializer()
_de = TypeDeserializer()

#: DynamoDB's own limits. An item may hold 400 KB: AWS takes 409,600 bytes, moto (the local
#: stack) 405,000; we keep items to 400,000 so that both take every item we write. A
#: transaction may write 4 MB of items; 4,000,000 bytes likewise.
ITEM_MAX_BYTES = 400_000
TRANSACTION_MAX_ITEMS = 100
TRANSACTION_MAX_BYTES = 4_000_000
PARTITION_KEY_MAX_BYTES = 2048
SORT_KEY_MAX_BYTES = 1024
#: A list or map costs this much besides its elements, and each element one byte more.
_DOCUMENT_BYTES = 3
_ELEMENT_BYTES = 1


def to_ddb(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def from_ddb(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def utf8_bytes(text: str) -> int:
    """UTF-8 length; a lone surrogate (which DynamoDB would refuse) counts as 3 bytes."""
    return len(text.encode("utf-8", "surrogatepass"))


def item_bytes(item: Mapping[str, Any]) -> int:
    """The size DynamoDB gives a plain (not yet typed) item: names plus values.

    Measured on the plain values where they are the common kinds (str, int, Decimal, None,
    bool, dict, list): what typing each value first (boto3's ``TypeSerializer``, a dict per
    value) and then measuring it gives, without the dicts (a worker sizes every result
    several times: its item limit, its transaction's 4 MB, its write units; the typing was
    a tenth of a worker's CPU, issue 12). Any other kind takes the typed path."""
    try:
        return sum(utf8_bytes(name) + _plain_bytes(value) for name, value in item.items())
    except _OtherKind:
        return typed_item_bytes(to_ddb(item))


class _OtherKind(Exception):
    """A value :func:`_plain_bytes` leaves to the typed path."""


def _plain_bytes(value: Any) -> int:
    """:func:`attribute_bytes` of ``to_ddb``'s typing of ``value``, for the common kinds."""
    kind = type(value)
    if kind is str:
        return utf8_bytes(value)
    if value is None or kind is bool:
        return 1
    if kind is int or kind is Decimal:
        return number_bytes(_ser.serialize(value)["N"])  # the typed path's own text of the number
    if kind is dict:
        size = _DOCUMENT_BYTES
        for k, v in value.items():
            if type(k) is not str:
                raise _OtherKind
            size += _ELEMENT_BYTES + utf8_bytes(k) + _plain_bytes(v)
        return size
    if kind is list:
        return _DOCUMENT_BYTES + sum(_ELEMENT_BYTES + _plain_bytes(v) for v in value)
    raise _OtherKind


def typed_item_bytes(item: Mapping[str, Any]) -> int:
    """The size of an item of attribute values (``{"name": {"S": "..."}}``)."""
    return sum(utf8_bytes(name) + attribute_bytes(value) for name, value in item.items())


def attribute_bytes(value: Mapping[str, Any]) -> int:
    """The size of one attribute value, without its name."""
    ((kind, v),) = value.items()
    if kind == "S":
        return utf8_bytes(v)
    if kind == "N":
        return number_bytes(v)
    if kind == "B":
        return _binary_bytes(v)
    if kind == "SS":
        return sum(utf8_bytes(s) for s in v)
    if kind == "NS":
        return sum(number_bytes(n) for n in v)
    if kind == "BS":
        return sum(_binary_bytes(b) for b in v)
    if kind == "L":
        return _DOCUMENT_BYTES + sum(_ELEMENT_BYTES + attribute_bytes(e) for e in v)
    if kind == "M":
        return _DOCUMENT_BYTES + sum(_ELEMENT_BYTES + utf8_bytes(k) + attribute_bytes(e) for k, e in v.items())
    return 1  # NULL, BOOL


def number_bytes(text: str) -> int:
    """1 byte per two significant digits, plus 1 (plus 1 for a sign, to stay on the safe side)."""
    mantissa = text.strip().lower().split("e", 1)[0]
    negative = mantissa.startswith("-")
    digits = mantissa.lstrip("+-").replace(".", "").lstrip("0").rstrip("0")
    return math.ceil(max(1, len(digits)) / 2) + 1 + int(negative)


def _binary_bytes(value: Any) -> int:
    return len(bytes(value))  # bytes, or boto3's Binary


def key_fits(partition: str, sort: str) -> bool:
    """Whether the two key values are valid DynamoDB keys (not empty, not too long)."""
    return 0 < utf8_bytes(partition) <= PARTITION_KEY_MAX_BYTES and 0 < utf8_bytes(sort) <= SORT_KEY_MAX_BYTES
