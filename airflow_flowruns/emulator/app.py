"""The emulator's ASGI app: every platform's routes, the control API, the request log and faults."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from airflow_flowruns.emulator import control, presigned
from airflow_flowruns.emulator.config import EmulatorConfig
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.faults import ErrorBody
from airflow_flowruns.emulator.ratelimit import retry_after_header
from airflow_flowruns.emulator.state import EmulatorState
from airflow_flowruns.platforms import emulator_parts


def platform_of(parts: list[ModuleType], path: str) -> ModuleType | None:
    """The emulator part of the platform whose API serves ``path``."""
    return next((m for m in parts if path.startswith(m.PATH_PREFIXES)), None)


def _error_body(module: ModuleType | None) -> ErrorBody:
    def body(status: int, title: str, message: str) -> dict[str, Any]:
        error = ApiError(status, title, message)
        return module.error_body(error) if module else {"error": title, "message": message}

    return body


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    config = config or EmulatorConfig()
    parts = emulator_parts()
    app = FastAPI(title="flowruns emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.emulator = EmulatorState(
        {(m.PLATFORM, flow_id): scenario for m in parts for flow_id, scenario in m.scenarios(config)},
        config.fault_mode,
        config.rate_limit,
    )
    app.state.platforms = {m.PLATFORM: m for m in parts}
    app.state.presigned = presigned.PresignedStore()
    app.include_router(control.router)
    app.include_router(presigned.router)
    for module in parts:
        app.include_router(module.router)

    @app.middleware("http")
    async def log_and_inject_faults(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path.startswith(control.router.prefix):
            return await call_next(request)
        state: EmulatorState = app.state.emulator
        module = platform_of(parts, path)
        fault = state.take_fault(request.method, path)
        kind = fault.kind if fault is not None else state.injector.pick()
        wait = state.buckets.retry_after(request)
        if wait is not None:
            body = _error_body(module)(429, "Too Many Requests", "Request rate limit exceeded")
            response: Response = JSONResponse(body, 429, {"Retry-After": retry_after_header(wait)})
        elif kind is not None:
            response = await state.injector.respond(kind, request, call_next, _error_body(module))
        elif fault is not None:
            response = Response(fault.body, fault.status, fault.headers, media_type=fault.content_type)
        else:
            response = await call_next(request)
        entry = {
            "method": request.method,
            "path": path,
            "query": request.url.query,
            "status": response.status_code,
            "platform": module.PLATFORM if module else None,
            "fault": "rate_limit" if wait is not None else kind or (fault is not None and "scripted") or None,
            "credentials": presigned.carries_credentials(request),
        }
        state.log_request(entry, (request.client.host, request.client.port) if request.client else None)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        module = platform_of(parts, request.url.path)
        body = module.error_body(exc) if module else {"error": exc.title, "message": exc.message}
        return JSONResponse(body, exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return await api_error(request, ApiError(exc.status_code, str(exc.detail), str(exc.detail)))

    return app
