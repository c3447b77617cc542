"""Drive the emulator with Noxus's official SDK (``noxus-sdk``), run in the separate SDK virtualenv.

Every answer must parse into the SDK's own models; the script prints what it saw as one JSON line.
"""

import json
import sys

from noxus_sdk.client import Client
from noxus_sdk.resources.runs import Run

url, key, workflow_id, path = sys.argv[1:5]
client = Client(key, base_url=url, load_nodes=False, load_me=False)
with open(path, "rb") as fd:
    uploaded = client.files.save(fd)
document = {"uri": uploaded.uri, "name": uploaded.filename}
# The same request Workflow.run() sends, without fetching the workflow definition first.
started = Run(
    client=client,
    **client.post(f"/v1/workflows/{workflow_id}/runs", {"input": {"document": document, "instructions": "Summarize"}}),
)
fetched = client.runs.get(workflow_id, started.id)
listed = client.runs.list(workflow_id, page=1, page_size=10)
stopped = client.runs.stop(started.id)
print(
    json.dumps(
        {
            "file_id": str(uploaded.id),
            "run_id": started.id,
            "fetched": [fetched.id, fetched.status],
            "listed": [run.id for run in listed],
            "stopped": stopped.status,
            "types": [type(x).__name__ for x in (uploaded, started, fetched, stopped)],
        }
    )
)
