"""The operator side's sessions share one data loader: service models are parsed once per process."""

from __future__ import annotations

from llmbatch.client.aws_session import aws_session


def test_sessions_are_separate_but_read_service_models_through_one_loader() -> None:
    first, second = aws_session(), aws_session()
    assert first is not second
    loader = first.get_component("data_loader")
    assert second.get_component("data_loader") is loader
    # a model parsed once is the cached one from then on, whichever session asks
    assert loader.load_service_model("sqs", "service-2") is loader.load_service_model("sqs", "service-2")


async def test_a_client_made_by_such_a_session_works_as_any() -> None:
    async with aws_session().create_client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    ) as sqs:
        assert sqs.meta.service_model.service_name == "sqs"
