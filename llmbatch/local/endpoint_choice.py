"""The model endpoints the local stack can start itself (a light module: the CLI's parser
imports it without loading moto)."""

from __future__ import annotations

from enum import StrEnum


class LocalEndpoint(StrEnum):
    #: Fast, deterministic, fault-injectable: tests, drills and benchmarks.
    SIMULATOR = "simulator"
    #: A real small LLM (SmolLM2-135M-Instruct on llama.cpp's server): real text.
    SMOLLM = "smollm"

    @property
    def description(self) -> str:
        return "endpoint simulator" if self is LocalEndpoint.SIMULATOR else "SmolLM2 model server"
