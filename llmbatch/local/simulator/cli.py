"""``python -m llmbatch.local.simulator``: serve on 127.0.0.1 and print the URL as one JSON
line once listening."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from llmbatch.local.simulator.config import SimulatorConfig, _config_hints
from llmbatch.local.simulator.runner import start_simulator

# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_cli_value(name: str, hint: Any, text: str) -> Any:
    """Turn a flag's text into JSON-like data for ``SimulatorConfig.from_dict``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        if text.strip().lower() in ("none", "null", ""):
            return None
        hint = next(arg for arg in args if arg is not type(None))
        origin = typing.get_origin(hint)
    try:
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError as exc:
        raise ValueError(f"--{name.replace('_', '-')}: {exc}") from exc
    if origin is tuple:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmbatch.local.simulator.core",
        description="OpenAI-compatible endpoint simulator (listens on 127.0.0.1 only).",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    parser.add_argument(
        "--config-json", default=None, help="SimulatorConfig as JSON; individual flags override its keys"
    )
    for config_field in dataclasses.fields(SimulatorConfig):
        parser.add_argument(
            f"--{config_field.name.replace('_', '-')}",
            dest=config_field.name,
            default=argparse.SUPPRESS,
            metavar=config_field.name.upper(),
            help=f"default: {config_field.default!r}"
            + (" (comma-separated)" if config_field.name == "models" else "")
            + (" ('none' = unlimited)" if config_field.name.endswith("_limit") else ""),
        )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Defaults, then ``--config-json``, then individual flags."""
    data: dict[str, Any] = {}
    if args.config_json:
        loaded = json.loads(args.config_json)
        if not isinstance(loaded, dict):
            raise ValueError("--config-json must be a JSON object")
        data.update(loaded)
    hints = _config_hints()
    for name, hint in hints.items():
        if hasattr(args, name):
            data[name] = _parse_cli_value(name, hint, getattr(args, name))
    return SimulatorConfig.from_dict(data)


async def _serve(config: SimulatorConfig, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    running = await start_simulator(config, port=port)
    try:
        print(json.dumps({"url": running.url, "port": running.port}), flush=True)
        await stop.wait()
    finally:
        await running.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; prints ``{"url": ..., "port": ...}`` once listening."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(config, args.port))
    except KeyboardInterrupt:  # a second Ctrl-C before the handler was installed
        pass
    except OSError as exc:
        print(f"simulator: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
