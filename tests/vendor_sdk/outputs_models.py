"""Validate run objects with the official SDKs' own models; prints, per run, the model type of each result.

Usage: outputs_models.py extend|noxus RUN.json [...]
"""

from __future__ import annotations

import json
import sys


def extend(run: dict) -> list[str]:
    from extend_ai.types import WorkflowRun

    return _result_types(WorkflowRun.model_validate(run).step_runs)


def _result_types(step_runs: list) -> list[str]:
    return [f"{type(s.result).__name__}:{type(next(iter(vars(s.result).values()))).__name__}" for s in step_runs]


def noxus(run: dict) -> list[str]:
    from noxus_sdk.client import Client
    from noxus_sdk.files import File
    from noxus_sdk.resources.runs import Run

    Run.model_validate(
        {**run, "client": Client("unused", base_url="http://127.0.0.1:9", load_nodes=False, load_me=False)}
    )
    found = []
    for value in (run.get("output") or {}).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "uri" in item:
                found.append(File.model_validate(item).id or "")
    return found


if __name__ == "__main__":
    check = {"extend": extend, "noxus": noxus}[sys.argv[1]]
    for path in sys.argv[2:]:
        with open(path) as f:
            print(json.dumps(check(json.load(f))))
