"""Perform a platform's ``ApiCall``\\ s over HTTP: one retry policy and one error translation,
shared by the sync client (workers) and the async client (triggerer).

One job per module: ``options`` (the connection's client settings), ``errors`` (an answer or a failure
turned into the provider's own error), ``retry`` (retry policy and pacing), ``listing`` (the walk through
a paged listing), ``sync_client`` and ``async_client`` (the two drivers, kept thin).
"""

from airflow_flowruns.client.async_client import AsyncFlowRunsClient
from airflow_flowruns.client.errors import decode
from airflow_flowruns.client.options import KEEPALIVE_SECONDS, HttpOptions
from airflow_flowruns.client.sync_client import FlowRunsClient

__all__ = ["KEEPALIVE_SECONDS", "AsyncFlowRunsClient", "FlowRunsClient", "HttpOptions", "decode"]
