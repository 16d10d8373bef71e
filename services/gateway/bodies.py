"""Request bodies: decoded by hand so malformed JSON is a 400 and a wrong field a 422, each with a message."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException

T = TypeVar("T", bound=msgspec.Struct)


class UnprocessableContent(HTTPException):
    status_code = 422


async def read_json(request: Request[Any, Any, Any], kind: type[T]) -> T:
    body = await request.body()
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise UnprocessableContent(detail=f"invalid request: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the decoder goes; hostile, never a 500.
        raise HTTPException(status_code=400, detail="the request body is not valid JSON") from None
