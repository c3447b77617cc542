"""Drive the emulator with Extend's official SDK (``extend-ai``), run in the separate SDK virtualenv.

Every answer must parse into the SDK's own models; the script prints what it saw as one JSON line.
"""

import json
import sys
from pathlib import Path

from extend_ai import Extend

url, key, workflow_id, path = sys.argv[1:5]
client = Extend(token=key, base_url=url)
uploaded = client.files.upload(file=(Path(path).name, Path(path).read_bytes(), "application/pdf"))
created = client.workflow_runs.create(workflow={"id": workflow_id}, file={"id": uploaded.id}, metadata={"k": "v"})
retrieved = client.workflow_runs.retrieve(created.id)
listed = client.workflow_runs.list(workflow_id=workflow_id, max_page_size=10)
cancelled = client.workflow_runs.cancel(created.id)
second = client.files.upload(file=("second.pdf", Path(path).read_bytes(), "application/pdf"))
package = client.workflow_runs.create(
    workflow={"id": workflow_id}, package={"files": [{"id": uploaded.id}, {"id": second.id}]}
)
print(
    json.dumps(
        {
            "file_id": uploaded.id,
            "run_id": created.id,
            "retrieved": [retrieved.id, retrieved.status, retrieved.dashboard_url],
            "listed": [run.id for run in listed.data],
            "cancelled": cancelled.status,
            "package": [package.id, [f.name for f in package.files]],
            "types": [type(x).__name__ for x in (uploaded, created, retrieved, listed, cancelled)],
        }
    )
)
