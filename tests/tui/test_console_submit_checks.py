"""The console's submit screen checks a file as ``submit`` does (the stack's endpoints, the
routes they serve, the token caps) and shows the ``--dry-run`` estimate before Submit,
against a real moto server."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Input, Static

from llmbatch.client.client import LlmbatchClient
from llmbatch.client.stack import StackResources
from tests.tui.test_console_moto import SIZE, aws
from tui.app import create_app
from tui.pilot import text_of, wait_for
from tui.screens.submit import SubmitScreen


def chat(custom_id: str, **body: object) -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 40}], **body},
    }


def nothing_created_or_sent(stack: StackResources) -> bool:
    url = stack.aws_endpoint_url or ""
    jobs = aws("dynamodb", url).scan(TableName=stack.jobs_table)["Count"]
    queued = aws("sqs", url).get_queue_attributes(
        QueueUrl=stack.request_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    return jobs == 0 and queued == "0"


async def test_the_submit_screen_refuses_what_would_fail_and_estimates_what_would_not(
    stack: StackResources, tmp_path: Path
) -> None:
    # GIVEN a file with a Bedrock record for the stack's OpenAI endpoint and a null cap,
    # and a valid one
    bad, good = tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    bad_lines = [chat("a", max_tokens=8), {"recordId": "r", "modelInput": {}}, chat("c", max_completion_tokens=None)]
    bad.write_text("".join(json.dumps(line) + "\n" for line in bad_lines))
    good.write_text("".join(json.dumps(chat(f"g{i}", max_tokens=8)) + "\n" for i in range(3)))
    app = create_app(lambda: LlmbatchClient(stack), refresh_s=0.2, start_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit screen")
        submit = app.screen
        assert isinstance(submit, SubmitScreen)
        result = submit.query_one("#check-result", Static)

        # WHEN the bad file is checked
        submit.query_one("#submit-path", Input).value = str(bad)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "refused" in text_of(result), what="the check")

        # THEN each line that would fail is named, with the same words as `submit`
        shown = text_of(result)
        assert (
            f"{bad}:2: endpoint 'default' (openai) does not serve bedrock:invoke-model; "
            "it serves /v1/chat/completions, /v1/completions, /v1/embeddings"
        ) in shown
        assert f"{bad}:3: max_completion_tokens is null, which asks for no limit" in shown
        assert f"{bad}:1:" not in shown

        # WHEN the good file is checked on an endpoint the stack does not have
        submit.query_one("#submit-path", Input).value = str(good)
        submit.query_one("#submit-endpoint", Input).value = "nosuch"
        result.update("")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "refused" in text_of(result), what="the check on nosuch")

        # THEN it is refused, naming the endpoints the stack has
        assert f"{good}:1: endpoint 'nosuch' is not configured on this stack (its endpoints: default)" in text_of(
            result
        )

        # WHEN it is checked on the stack's endpoint
        submit.query_one("#submit-endpoint", Input).value = "default"
        result.update("")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "Ready to submit" in text_of(result), what="the estimate")

        # THEN the estimate is shown before anything is submitted
        shown = text_of(result)
        assert "3 request(s), all valid" in shown
        assert "prompt_tokens      ~33 (characters / 4)" in shown
        assert "max_output_tokens  24" in shown
        assert "estimated_cost     ~$" in shown
        assert "expected_duration  ~" in shown
        assert "assumed: no answered job on endpoint 'default' yet" in shown
        assert submit.last_job_id is None
    assert nothing_created_or_sent(stack)
