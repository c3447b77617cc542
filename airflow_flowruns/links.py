"""The "Open flow run" button on a task, pointing at the run on the platform.

The task pushes the run's URL to XCom as soon as it knows it (the operator right after the start, the
sensor once it has read the run), so the button works while the task is still waiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

FLOW_RUN_ID_KEY = "flow_run_id"
FLOW_RUN_URL_KEY = "flow_run_url"


class FlowRunLink(BaseOperatorLink):
    name = "Open flow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(ti_key=ti_key, key=FLOW_RUN_URL_KEY) or ""
