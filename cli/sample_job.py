"""The sample job the demo runs: chat completions, completions and embeddings."""

from __future__ import annotations

import json
from pathlib import Path

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
