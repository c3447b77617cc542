"""Start a batch on the emulator with Extend's official SDK (``extend-ai``) and list its runs, run in the SDK
virtualenv.

The SDK sends its own request body and parses every answer into its models; the script prints what it saw as
one JSON line.
"""

import json
import sys
from pathlib import Path

from extend_ai import Extend

url, key, workflow_id, path = sys.argv[1:5]
client = Extend(token=key, base_url=url)
uploaded = client.files.upload(file=(Path(path).name, Path(path).read_bytes(), "application/pdf"))
batch = client.workflow_runs.create_batch(
    workflow={"id": workflow_id},
    inputs=[
        {"file": {"id": uploaded.id}, "metadata": {"document": "by-id"}},
        {"file": {"url": "https://example.com/invoice1.pdf"}, "metadata": {"document": "by-url"}},
        {"file": {"url": "https://example.com/invoice2.pdf", "name": "named.pdf"}},
    ],
    priority=10,
)
listed = client.workflow_runs.list(batch_id=batch.batch_id, sort_by="createdAt", sort_dir="asc")
print(
    json.dumps(
        {
            "batch_id": batch.batch_id,
            "listed": [[run.id, run.batch_id, [f.name for f in run.files]] for run in listed.data],
            "types": [type(x).__name__ for x in (batch, listed)],
        }
    )
)
