"""The demo's jobs: a mix of chat completions, completions and embeddings for the simulator,
and short questions for a real model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOPICS = ["the sea", "a lighthouse", "autumn", "a train at night", "bread", "the moon", "a city", "rain"]


def write_sample_job(path: Path, requests: int, *, model: str = "sim-model") -> Path:
    with path.open("w") as fh:
        for i in range(requests):
            topic = TOPICS[i % len(TOPICS)]
            kind = i % 10
            if kind < 8:
                line = {
                    "custom_id": f"request-{i:05d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": model,
                        "messages": [
                            {"role": "system", "content": "You are a concise poet."},
                            {"role": "user", "content": f"Write one line about {topic} (#{i})."},
                        ],
                        "max_tokens": 24,
                    },
                }
            elif kind == 8:
                line = {
                    "custom_id": f"request-{i:05d}",
                    "method": "POST",
                    "url": "/v1/completions",
                    "body": {"model": model, "prompt": f"A short fact about {topic}:", "max_tokens": 16},
                }
            else:
                line = {
                    "custom_id": f"request-{i:05d}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": model, "input": f"{topic} #{i}"},
                }
            fh.write(json.dumps(line) + "\n")
    return path


#: The real-model demo's job: short questions a 135M-parameter model can answer in a sentence.
QUESTIONS = (
    "What is the capital of France?",
    "Why is the sky blue?",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is photosynthesis?",
    "Name one planet in our solar system.",
    "At what temperature does water boil, in Celsius?",
    "Who wrote Romeo and Juliet?",
    "What is a haiku?",
    "Give one tip for sleeping well.",
    "What is the largest ocean on Earth?",
    "What does a thermometer measure?",
    "Why do leaves change colour in autumn?",
    "What is the main ingredient of bread?",
    "Suggest a name for a friendly robot.",
    "What is the opposite of hot?",
)
QUESTION_SYSTEM_PROMPT = "You are a helpful assistant. Answer in one short sentence."
#: Enough for a sentence; at ~120 tokens/s on 2 cores the 16 answers take a few seconds each way.
QUESTION_MAX_TOKENS = 48


def question_lines(requests: int, *, model: str, max_tokens: int = QUESTION_MAX_TOKENS) -> list[dict[str, Any]]:
    """``requests`` chat requests, going round QUESTIONS."""
    return [
        {
            "custom_id": f"question-{i:03d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [
                    {"role": "system", "content": QUESTION_SYSTEM_PROMPT},
                    {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
                ],
                "max_tokens": max_tokens,
            },
        }
        for i in range(requests)
    ]


def write_question_job(path: Path, requests: int, *, model: str, max_tokens: int = QUESTION_MAX_TOKENS) -> Path:
    path.write_text(
        "".join(json.dumps(line) + "\n" for line in question_lines(requests, model=model, max_tokens=max_tokens))
    )
    return path
