"""The aiohttp application: the OpenAI routes and the ``/_sim/*`` control routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from llmbatch.local.simulator.batch_api import BatchService, add_batch_routes
from llmbatch.local.simulator.config import _CLIENT_MAX_SIZE, MISSING_MODEL, SimulatorConfig
from llmbatch.local.simulator.core import Simulator, _read_json
from llmbatch.local.simulator.openai_api import (
    _invalid,
    _parse_chat,
    _parse_completion,
    _parse_embeddings,
    _require_model,
)

# --------------------------------------------------------------------------------------------
# The aiohttp application
# --------------------------------------------------------------------------------------------

SIMULATOR_KEY: web.AppKey[Simulator] = web.AppKey("llmbatch_simulator", Simulator)


def build_app(config: SimulatorConfig | None = None) -> web.Application:
    """The aiohttp app; its :class:`Simulator` is at ``app[SIMULATOR_KEY]``.

    Serve it with ``handler_cancellation=True`` (as :func:`start_simulator` does) so a client
    that gives up frees its slot instead of leaving a ghost request running.
    """
    sim = Simulator(config)

    @web.middleware
    async def simulator_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await sim.dispatch(request, handler)

    app = web.Application(middlewares=[simulator_middleware], client_max_size=_CLIENT_MAX_SIZE)
    app[SIMULATOR_KEY] = sim

    async def chat(request: web.Request) -> web.Response:
        return await sim.handle_generation(request, _parse_chat)

    async def completions(request: web.Request) -> web.Response:
        return await sim.handle_generation(request, _parse_completion)

    async def embeddings(request: web.Request) -> web.Response:
        return await sim.handle_generation(request, _parse_embeddings)

    async def list_models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [_model_object(m) for m in sim.config.models]})

    async def get_model(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model == MISSING_MODEL:
            _require_model({"model": model})
        return web.json_response(_model_object(model))

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response(sim.stats())

    async def post_reset(_request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response(sim.stats())

    async def get_config(_request: web.Request) -> web.Response:
        return web.json_response(sim.config.to_dict())

    async def post_config(request: web.Request) -> web.Response:
        changes = await _read_json(request)
        try:
            new = sim.update_config(changes)
        except ValueError as exc:
            raise _invalid(str(exc), None) from exc
        return web.json_response(new.to_dict())

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    add_batch_routes(app, BatchService(lambda: sim.config, lambda: sim._fail_first_calls), _read_json)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", post_config)
    app.on_shutdown.append(sim.on_shutdown)
    return app


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "llmbatch-simulator"}
