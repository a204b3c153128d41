"""The operator side's sessions share one data loader: service models are parsed once per process."""

from __future__ import annotations

from llmbatch.client.aws_session import aws_session


def test_a_service_model_parsed_through_one_session_is_the_one_the_next_session_gets() -> None:
    first, second = aws_session(), aws_session()
    # WHEN each session's loader is asked for the same model / THEN it was parsed once
    model = first.get_component("data_loader").load_service_model("sqs", "service-2")
    assert second.get_component("data_loader").load_service_model("sqs", "service-2") is model


async def test_a_client_made_by_such_a_session_works_as_any() -> None:
    async with aws_session().create_client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    ) as sqs:
        assert sqs.meta.service_model.service_name == "sqs"
