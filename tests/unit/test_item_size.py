"""Item sizes as DynamoDB counts them (shared/store/item_size.py) and fitting a result to one item
without a payload bucket (shared/store/result_fit.py): pure functions, no AWS."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared.results import RequestResult, RequestStatus, Usage
from shared.store.item_size import (
    ITEM_MAX_BYTES,
    attribute_bytes,
    item_bytes,
    key_fits,
    number_bytes,
    to_ddb,
    typed_item_bytes,
)
from shared.store.result_fit import (
    REQUEST_MESSAGE_INLINE_MAX_BYTES,
    RESPONSE_TOO_LARGE,
    STORE_REFUSED,
    fit_item,
    refused_item,
    response_key,
    result_bytes,
)

CJK = "数据库"  # three characters, nine UTF-8 bytes


def a_result(**kw: Any) -> RequestResult:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "custom_id": "r-1",
        "line": 1,
        "status": RequestStatus.SUCCEEDED,
        "attempt": 1,
        "endpoint": "default",
    }
    return RequestResult(**{**fields, **kw})


def test_strings_count_their_utf8_bytes_and_names_count_too() -> None:
    # GIVEN / WHEN items of ASCII and of CJK text of the same length in characters
    ascii_item = {"ab": "x" * 9}
    cjk_item = {"ab": CJK * 3}

    # THEN the name's bytes are counted, and each CJK character is three bytes
    assert item_bytes(ascii_item) == 2 + 9
    assert item_bytes(cjk_item) == 2 + 27
    assert item_bytes({"名": "x"}) == 3 + 1


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 2), ("7", 2), ("12", 2), ("123", 3), ("1000000", 2), ("0.00125", 3), ("-5", 3), ("1" * 38, 20)],
)
def test_numbers_count_one_byte_per_two_significant_digits_plus_one(text: str, size: int) -> None:
    # GIVEN / WHEN / THEN leading and trailing zeroes are trimmed; a sign costs a byte (kept safe)
    assert number_bytes(text) == size


def test_lists_and_maps_cost_three_bytes_plus_one_per_element() -> None:
    # GIVEN a map holding a list of two strings and a boolean
    value = to_ddb({"v": {"xs": ["ab", "c"], "ok": True}})["v"]

    # WHEN / THEN map: 3 + (1 + "xs" + list) + (1 + "ok" + 1); list: 3 + (1 + 2) + (1 + 1)
    list_size = 3 + (1 + 2) + (1 + 1)
    assert attribute_bytes(value) == 3 + (1 + 2 + list_size) + (1 + 2 + 1)


def test_a_lone_surrogate_is_counted_rather_than_crashing_the_count() -> None:
    # GIVEN / WHEN / THEN a string DynamoDB would refuse still has a size
    assert item_bytes({"e": "\ud800"}) == 1 + 3


def test_keys_must_be_non_empty_and_within_dynamodbs_key_limits() -> None:
    # GIVEN / WHEN / THEN partition keys up to 2,048 bytes, sort keys up to 1,024 bytes, UTF-8
    assert key_fits("j" * 2048, "c" * 1024)
    assert not key_fits("j" * 2049, "c")
    assert not key_fits("j", CJK * 114)  # 1,026 bytes in 342 characters
    assert not key_fits("", "c") and not key_fits("j", "")


async def test_a_cjk_answer_under_the_limit_in_characters_but_over_it_in_bytes_does_not_fit() -> None:
    # GIVEN an answer of 140,000 CJK characters: 140 KB of text, far more in stored bytes
    result = a_result(status_code=200, response_body={"text": "数" * 140_000})

    # WHEN it is fitted with no payload bucket
    fitted = await fit_item(result, None)

    # THEN it was recognised as too big, and is recorded as failed within the item limit
    assert result_bytes(result) > ITEM_MAX_BYTES
    assert fitted.status is RequestStatus.FAILED and fitted.error_code == RESPONSE_TOO_LARGE
    assert fitted.response_body is None and fitted.status_code == 200
    assert result_bytes(fitted) <= ITEM_MAX_BYTES


async def test_a_big_failed_request_without_a_bucket_is_kept_without_its_message_and_says_so() -> None:
    # GIVEN a failed request whose message is over the inline limit (in UTF-8 bytes, not characters)
    message = '{"v": 1, "body": "' + CJK * (REQUEST_MESSAGE_INLINE_MAX_BYTES // 9 + 1) + '"}'
    assert len(message) < REQUEST_MESSAGE_INLINE_MAX_BYTES
    failed = a_result(
        status=RequestStatus.FAILED, error_code="bad_request", error_message="400", request_message=message
    )

    # WHEN it is fitted with no payload bucket
    fitted = await fit_item(failed, None)

    # THEN the message is dropped, the error says retry cannot resend it, the rest is kept
    assert fitted.request_message is None and fitted.request_ref is None
    assert fitted.error_code == "bad_request"
    assert (fitted.error_message or "").startswith("400; ")
    assert "retry cannot resend it" in (fitted.error_message or "")


async def test_a_huge_error_message_is_cut_to_fit_the_item() -> None:
    # GIVEN a failure whose error text (an endpoint echoing a request) is 600 KB
    failed = a_result(status=RequestStatus.FAILED, error_code="bad_request", error_message="e" * 600_000)

    # WHEN it is fitted
    fitted = await fit_item(failed, None)

    # THEN the item fits, and the text says it was cut
    assert result_bytes(fitted) <= ITEM_MAX_BYTES
    assert (fitted.error_message or "").endswith("[truncated]")


async def test_a_small_result_is_stored_as_given() -> None:
    # GIVEN a result well within the limits, with a small failed message
    failed = a_result(status=RequestStatus.FAILED, error_code="x", error_message="m", request_message='{"v": 1}')

    # WHEN / THEN fitting changes nothing
    assert await fit_item(failed, None) == failed


def test_a_refused_result_is_recorded_as_failed_without_bodies_keeping_ids_and_tokens() -> None:
    # GIVEN a result with an answer and a message
    result = a_result(
        status_code=200, response_body={"a": 1}, request_message="{}", usage=Usage(5, 7), request_id="req-9"
    )

    # WHEN it stands refused
    stand_in = refused_item(result, "ValidationError: Item size has exceeded the maximum allowed size")

    # THEN it is failed with the reason, has no bodies, and keeps its ids and tokens
    assert stand_in.status is RequestStatus.FAILED and stand_in.error_code == STORE_REFUSED
    assert "Item size has exceeded" in (stand_in.error_message or "")
    assert stand_in.response_body is None and stand_in.request_message is None
    assert (stand_in.custom_id, stand_in.line, stand_in.request_id, stand_in.usage) == ("r-1", 1, "req-9", Usage(5, 7))


def test_an_answer_key_uses_the_id_unless_that_would_be_too_long_for_s3() -> None:
    # GIVEN / WHEN / THEN a usual id names the object; one that makes a key over S3's 1,024 bytes is hashed
    assert response_key("job-1", "huge-answer") == "results/job-1/huge-answer.json"
    assert response_key("job-1", "c" * 1005).endswith("c.json")
    long_key = response_key("job-1", "c" * 1006)
    assert long_key.startswith("results/job-1/") and len(long_key) == len("results/job-1/") + 64 + len(".json")


class _Label(str):
    """A str subclass (as a StrEnum's members are): the typed path measures it."""


#: Items of every kind a result or a dead letter holds, and kinds only the typed path measures.
SIZED_ITEMS: list[dict[str, Any]] = [
    {},
    {"pk": "job-1", "sk": "r-1", "n": 0, "neg": -120, "big": 10**37, "dec": Decimal("-0.000120")},
    {"none": None, "yes": True, "no": False, "empty": "", "cjk": CJK, "lone": "\ud800x"},
    {
        "response_body": {
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": CJK * 40}, "logprobs": None}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
            "nested": [[], {}, [[1, 2], {"a": [None, True]}]],
        }
    },
    {"set_s": {"a", "bb"}, "set_n": {1, Decimal("2.5")}, "bin": b"\x00\xff", "bset": {b"a", b"bc"}},
    {"tuple": ("a", 1), "label": _Label("x" * 5), "in_map": {"label": _Label("yy"), "t": (1,)}},
    {"list_of_sets": [{"a"}, b"x"], "map_in_list": [{"k": Decimal("1e3")}]},
]


@pytest.mark.parametrize("item", SIZED_ITEMS)
def test_an_items_size_from_its_plain_values_is_the_size_of_its_typed_values(item: dict[str, Any]) -> None:
    # GIVEN an item of plain values / WHEN sized from them and from boto3's typing of them
    typed = typed_item_bytes(to_ddb(item))

    # THEN the same number
    assert item_bytes(item) == typed


@pytest.mark.parametrize("value", [1.5, float("nan"), Decimal("Infinity"), object(), {1: "non-str key"}])
def test_a_value_dynamodb_cannot_hold_is_refused_as_the_typed_path_refuses_it(value: Any) -> None:
    # GIVEN a value boto3 refuses to type (or, a map keyed by a number, to measure)
    with pytest.raises(Exception) as typed:
        typed_item_bytes(to_ddb({"v": value}))

    # WHEN it is sized / THEN the same kind of error
    with pytest.raises(type(typed.value)):
        item_bytes({"v": value})


def test_a_result_is_sized_once_and_a_replaced_one_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from shared.store import item_size
    from shared.store.terminal_writes import result_write_bytes

    sized: list[int] = []

    def counted(item: dict[str, Any]) -> int:
        sized.append(1)
        return item_bytes(item)

    monkeypatch.setattr(item_size, "item_bytes", counted)
    result = a_result(response_body={"text": CJK * 100})
    # WHEN the worker asks its size for each of its checks (transaction, item limit, ...)
    sizes = {result_write_bytes(result), result_bytes(result), result.item_bytes}
    # THEN each gets the item's size, worked out once
    assert sizes == {item_bytes(result.to_item())} and len(sized) == 1
    # ... and a changed copy is sized as it now is, not as the result it was made from
    longer = dataclasses.replace(result, error_message="x" * 1000)
    assert result_bytes(longer) == item_bytes(longer.to_item()) == result.item_bytes + len("error_message") + 1000
    assert len(sized) == 2
