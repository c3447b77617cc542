"""The bundled emulator as tests drive it (its control API), and the connections and task instances tests give
the provider."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import MagicMock

import httpx
import pytest
from pytest_mock import MockerFixture

API_KEY = "emulator-key"
# Retries stay on in tests, only with short waits, so retry paths run without slowing the suite.
FAST_RETRIES: dict[str, Any] = {"retry_min_wait": 0.01, "retry_max_wait": 0.05, "max_retries": 2, "timeout": 10}


class Emulator:
    """The emulator's control API, as tests use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.control = httpx.Client(base_url=f"{url}/_emulator", timeout=10)

    def reset(self) -> None:
        self.control.post("/reset").raise_for_status()

    def runs(self) -> list[dict[str, Any]]:
        return self.control.get("/runs").json()

    def requests(self) -> list[dict[str, Any]]:
        return self.control.get("/requests").json()

    def clear_requests(self) -> None:
        """Forget the requests logged so far, so a test counts only its own."""
        self.control.delete("/requests").raise_for_status()

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        body = {"status": status, "error": error, "message": error}
        self.control.post(f"/runs/{run_id}/status", json=body).raise_for_status()

    def fault(
        self,
        path: str,
        status: int,
        body: str = "",
        *,
        method: str | None = None,
        count: int = 1,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        spec = {
            "kind": kind,
            "method": method,
            "path": path,
            "status": status,
            "body": body,
            "count": count,
            "content_type": content_type,
            "headers": headers or {},
        }
        self.control.post("/faults", json=spec).raise_for_status()

    def scenario(self, flow_id: str, platform: str = "tableflow", **scenario: Any) -> None:
        self.control.put(f"/{platform}/flows/{flow_id}/scenario", json=scenario).raise_for_status()


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn_type: str, url: str, **extra: Any) -> str:
    conn = {
        "conn_type": conn_type,
        "password": extra.pop("password", API_KEY),
        "host": url,
        "extra": {**FAST_RETRIES, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def task_instance(mocker: MockerFixture, try_number: int = 1, **identity: Any) -> MagicMock:
    """A task instance as the operator reads it (unmapped unless ``map_index`` says otherwise); a test reads what
    the operator pushed to XCom from its ``xcom_push`` calls."""
    names = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1, **identity}
    return mocker.MagicMock(try_number=try_number, **names)


def pushed(ti: MagicMock) -> dict[str, list[Any]]:
    """Every value the operator pushed to XCom through ``ti``, by key, in order."""
    values: dict[str, list[Any]] = {}
    for call in ti.xcom_push.call_args_list:
        values.setdefault(call.kwargs["key"], []).append(call.kwargs["value"])
    return values
