"""Short-lived presigned download URLs, as an object store serves them (Extend's ``presignedUrl``).

The URLs point at ``/_storage/...`` on the emulator, a path no platform API uses, standing for the storage
host. As S3 does, a request that carries credentials as well as the URL's signature is refused (400,
``InvalidArgument``), an unknown or expired signature gets 403 ``AccessDenied``; the request log records
for every request whether it carried an API key (``credentials``).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from airflow_flowruns.emulator.documents import GeneratedFile

PATH_PREFIX = "/_storage/"
LIFETIME_SECONDS = 15 * 60
CREDENTIAL_HEADERS = ("authorization", "x-api-key")

router = APIRouter()


@dataclass(frozen=True)
class Grant:
    file: GeneratedFile
    expires: float


class PresignedStore:
    """The signatures handed out, each for one file until it expires. Files themselves are never stored:
    each platform module finds a file from its id when it is asked for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}

    def sign(self, request: Request, file: GeneratedFile) -> str:
        signature = secrets.token_hex(16)
        now = time.time()
        with self._lock:
            self._grants = {key: grant for key, grant in self._grants.items() if grant.expires > now}
            self._grants[signature] = Grant(file, now + LIFETIME_SECONDS)
        base = str(request.base_url).rstrip("/")
        return f"{base}{PATH_PREFIX}{file.id}/{file.name}?X-Amz-Expires={LIFETIME_SECONDS}&X-Amz-Signature={signature}"

    def redeem(self, signature: str, file_id: str) -> GeneratedFile | None:
        with self._lock:
            grant = self._grants.get(signature)
        if grant is None or grant.expires < time.time() or grant.file.id != file_id:
            return None
        return grant.file


def store(request: Request) -> PresignedStore:
    found: PresignedStore = request.app.state.presigned
    return found


def carries_credentials(request: Request) -> bool:
    return any(header in request.headers for header in CREDENTIAL_HEADERS)


def stream_file(file: GeneratedFile) -> StreamingResponse:
    return StreamingResponse(file.chunks(), media_type=file.content_type, headers={"Content-Length": str(file.size)})


def _s3_error(status: int, code: str, message: str) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(body, status, media_type="application/xml")


@router.get(PATH_PREFIX + "{file_id}/{name}")
def download(request: Request, file_id: str, name: str) -> Response:
    if carries_credentials(request):
        return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
    file = store(request).redeem(request.query_params.get("X-Amz-Signature", ""), file_id)
    if file is None:
        return _s3_error(403, "AccessDenied", "Request has expired or the signature does not match")
    return stream_file(file)
