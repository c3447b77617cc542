"""One exception for every API error the emulator answers; each platform shapes the body its own way."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, title: str, message: str, **fields: object) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.fields = fields
