"""What Extend's emulator knows of a file it is given: its type, and the pages of a PDF.

Both go into the ``FileSummary`` a run lists (extend-ai 1.20.0, ``types/file_summary.py``): ``type`` a
``FileType``, ``metadata.pageCount`` "the number of pages in the file", set for PDF and DOCX files only. The
emulator counts the pages of PDFs and leaves DOCX files without a count, which the SDK allows.
"""

from __future__ import annotations

import re

from starlette.datastructures import UploadFile

FILE_TYPES = {
    "pdf": "PDF",
    "csv": "CSV",
    "png": "IMG",
    "jpg": "IMG",
    "jpeg": "IMG",
    "txt": "TXT",
    "docx": "DOCX",
    "xlsx": "EXCEL",
    "xml": "XML",
    "html": "HTML",
}
PAGE_OBJECT = re.compile(rb"/Type\s{0,8}/Page[^a-zA-Z]")
PAGE_OBJECT_BYTES = 32
"""More than the longest match of ``PAGE_OBJECT``: carried from one chunk to the next, so a match across two
is found, and counted once."""


def file_type(name: str) -> str | None:
    """The SDK's ``FileType`` of a file name, by extension, as Extend derives it."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return FILE_TYPES.get(suffix)


async def pdf_pages(upload: UploadFile) -> int:
    """The ``pageCount`` of an uploaded PDF: its page objects, read a MiB at a time; at least one (the stub
    PDFs of tests have none)."""
    count, carried = 0, b""
    while chunk := await upload.read(1 << 20):
        data = carried + chunk
        count += sum(1 for match in PAGE_OBJECT.finditer(data) if match.end() > len(carried))
        carried = data[-PAGE_OBJECT_BYTES:]
    return max(count, 1)
