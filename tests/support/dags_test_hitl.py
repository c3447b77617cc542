"""``airflow dags test`` made to treat a Required Action as a deployment does; loaded by a DAG file under test.

``airflow dags test`` runs each task, and each trigger it defers to, in its own process through Airflow's test
supervisor (``InProcessTestSupervisor``), the worker's supervisor with its socket replaced by a queue. Two of
its departures from a deployment decide what a review test can show:

- a trigger there is served as a task is, and a task's supervisor has no answer to reading or answering a
  Required Action (``GetHITLDetailResponse``, ``UpdateHITLDetail``): in a deployment the triggerer's supervisor
  serves both, which is what Airflow's own ``HITLTrigger`` relies on;
- a request the supervisor refuses comes back as ``None`` instead of raising ``AirflowRuntimeError`` as it
  does over a worker's socket, so a call that a deployed worker refuses would pass without a trace.

:func:`install` gives the inline trigger the triggerer's two answers and makes a refused request raise, on
Airflow 3.1 to 3.3, whose test supervisors are alike in both respects. On Airflow 3.3 it also plays the API
server's part in an answer, which ``airflow dags test`` lacks: a person's answer recorded in the Required Action
ends the inline trigger with the event the API server resumes the task with (``as_resume_event_payload``), as a
deployment's triggerer cancels the trigger of a task the API server resumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

ANSWER_POLL_SECONDS = 0.2


def install() -> None:
    """Patch Airflow's test supervisor in this process (once; a DAG file is parsed more than once)."""
    from airflow.sdk.execution_time import supervisor

    if getattr(supervisor, "flowruns_hitl_installed", False):
        return
    supervisor.flowruns_hitl_installed = True  # type: ignore[attr-defined]
    tested = supervisor.InProcessTestSupervisor
    run_trigger = tested.run_trigger_in_process.__func__  # type: ignore[attr-defined]

    class TriggerSupervisor(tested):  # type: ignore[misc, valid-type]
        """The inline trigger's supervisor, answering a Required Action's reads and answers as the triggerer's."""

        def _handle_request(self, msg: Any, log: Any, req_id: int) -> None:
            from airflow.jobs.triggerer_job_runner import HITLDetailResponseResult
            from airflow.sdk.execution_time.comms import GetHITLDetailResponse, UpdateHITLDetail

            if isinstance(msg, UpdateHITLDetail):
                detail = self.client.hitl.update_response(
                    ti_id=msg.ti_id, chosen_options=msg.chosen_options, params_input=msg.params_input
                )
            elif isinstance(msg, GetHITLDetailResponse):
                detail = self.client.hitl.get_detail_response(ti_id=msg.ti_id)
            else:
                super()._handle_request(msg, log, req_id)
                return
            self.send_msg(HITLDetailResponseResult.from_api_response(response=detail), request_id=req_id)

    def run_trigger_in_process(cls: type, *, trigger: Any, ti: Any) -> Any:
        from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS

        served = ResumedOnAnswer(trigger, ti.id) if AIRFLOW_V_3_3_PLUS else trigger
        return run_trigger(TriggerSupervisor, trigger=served, ti=ti)

    def send_msg(self: Any, msg: Any, request_id: int, error: Any = None, **dump_opts: Any) -> None:
        self.comms.messages.append(Refusal(error) if msg is None and error is not None else msg)

    tested.run_trigger_in_process = classmethod(run_trigger_in_process)  # type: ignore[method-assign, assignment]
    tested.send_msg = send_msg  # type: ignore[method-assign]
    supervisor.InProcessSupervisorComms.send = _send_raising_refusals  # type: ignore[method-assign]


class ResumedOnAnswer:
    """A trigger whose run also ends when a person answers the task's Required Action, with the API server's
    resume event (Airflow 3.3 resumes such a task on the answer, without the trigger)."""

    def __init__(self, trigger: Any, ti_id: Any) -> None:
        self.trigger = trigger
        self.ti_id = ti_id

    async def run(self) -> AsyncIterator[Any]:
        from airflow.triggers.base import TriggerEvent

        first = asyncio.ensure_future(anext(self.trigger.run(), None))
        while not (await asyncio.wait({first}, timeout=ANSWER_POLL_SECONDS))[0]:
            answer = await asyncio.to_thread(person_answer, self.ti_id)
            if answer is not None:
                first.cancel()
                yield TriggerEvent(answer)
                return
        if (event := first.result()) is not None:
            yield event


def person_answer(ti_id: Any) -> dict[str, Any] | None:
    """The resume event of the task's Required Action once a person answered it (not the provider's close)."""
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session

    with create_session() as session:
        detail = session.get(HITLDetail, ti_id)
        if detail is None or detail.responded_by_user is None:
            return None
        return dict(detail.as_resume_event_payload())


class Refusal:
    """A response frame's error part (an answer's body can be an ``ErrorResponse`` too, which is no refusal)."""

    def __init__(self, error: Any) -> None:
        self.error = error


def _send_raising_refusals(self: Any, msg: Any) -> Any:
    """Send a request as a task does over its socket: a refusal, or the API's error, raises AirflowRuntimeError."""
    from airflow.sdk.api.client import ServerResponseError
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse
    from airflow.sdk.execution_time.supervisor import log, set_supervisor_comms

    with set_supervisor_comms(None):
        try:
            self.supervisor._handle_request(msg, log, 0)
        except ServerResponseError as exc:  # the supervisor's request loop makes an error frame of these
            detail = {"status_code": exc.response.status_code, "message": str(exc)}
            self.messages.append(Refusal(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail=detail)))
    response = self.messages.popleft()
    if isinstance(response, Refusal):
        raise AirflowRuntimeError(error=response.error)
    return response
