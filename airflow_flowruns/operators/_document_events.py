"""One asset event per settled document of a batch, so a DAG can be scheduled per document without mapping.

A task's outlet asset gets one event per task; an asset *alias* gets one event per distinct extra added to
it. The batch operator therefore declares an alias of the user's asset as its outlet and adds the asset to
it once per document, each with that document's payload (as the asset watcher's: platform, run id, state,
document key, and where its outputs landed). Consumers schedule on the asset itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AssetAlias

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Asset, Context


def document_alias(asset: Asset) -> AssetAlias:
    """The alias a batch announces ``asset`` through, one per asset."""
    return AssetAlias(name=f"flowruns-documents:{asset.name}")


def document_event(context: Context, asset: Asset, platform: str, flow_id: str) -> Callable[[dict[str, Any]], None]:
    """Announce one document from its manifest item."""
    events = context["outlet_events"][document_alias(asset)]

    def announce(item: dict[str, Any]) -> None:
        extra = {
            "platform": platform,
            "flow_id": flow_id,
            "run_id": item["run_id"],
            "state": item["state"],
            "status": item["status"],
            "document_key": item["document_key"],
            "landing": item["landing"],
        }
        events.add(asset, extra=extra)

    return announce
