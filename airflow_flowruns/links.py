"""The "Open flow run" button on a task, pointing at the run on the platform.

The task pushes the run's URL to XCom as soon as it knows it (the operator right after the start, the
sensor once it has read the run). Airflow asks the link for its URL whenever the task stops, when it defers
as well (so the button works while the task waits) and when it fails, and keeps the answer for the button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

FLOW_RUN_ID_KEY = "flow_run_id"
FLOW_RUN_URL_KEY = "flow_run_url"


class FlowRunLink(BaseOperatorLink):
    name = "Open flow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return str(_pushed_url(ti_key) or "")


def _pushed_url(ti_key: TaskInstanceKey) -> Any:
    """The run's URL as the task pushed it; None when it pushed none (it failed before a run existed).

    Airflow logs an error for every XCom read that finds nothing, which would follow the real error of each task
    that failed before starting a run. Its listing of a task's XComs over all map indexes finds nothing quietly,
    so it is asked first; it answers an unmapped task outright.
    """
    pushed = XCom.get_all(key=FLOW_RUN_URL_KEY, dag_id=ti_key.dag_id, task_id=ti_key.task_id, run_id=ti_key.run_id)
    if not pushed:
        return None
    if ti_key.map_index < 0:
        return pushed[0]
    return XCom.get_value(ti_key=ti_key, key=FLOW_RUN_URL_KEY)
