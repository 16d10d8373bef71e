"""Request bodies: decoded by hand so malformed JSON is a 400 and a wrong field a 422, each with a message;
and the OpenAPI description of such bodies and of the error answers, which Litestar cannot infer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, RequestBody, Schema

T = TypeVar("T", bound=msgspec.Struct)


class UnprocessableContent(HTTPException):
    status_code = 422


async def read_json(request: Request[Any, Any, Any], kind: type[T]) -> T:
    body = await request.body()
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise UnprocessableContent(detail=f"invalid request: {exc}") from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # RecursionError: JSON nested deeper than the decoder goes. UnicodeDecodeError: a string that is
        # not UTF-8 (msgspec raises it, not a DecodeError). Hostile either way, never a 500.
        raise HTTPException(status_code=400, detail="the request body is not valid JSON") from None


class ErrorBody(msgspec.Struct, frozen=True):
    """What every error answer of the API holds (services/gateway/errors.py)."""

    detail: str


def answers(described: dict[int, str]) -> dict[int, ResponseSpec]:
    """The error answers of an endpoint, for its OpenAPI document: status code → when it is given."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=text, generate_examples=False)
        for code, text in described.items()
    }


def json_body(
    properties: dict[str, Schema | Reference],
    required: list[str],
    description: str,
    *,
    closed: bool = False,
    min_properties: int | None = None,
) -> type[Operation]:
    """The OpenAPI operation of a handler that reads its JSON body itself (`read_json`, for its own 400 and
    422 messages, or not at all), so Litestar cannot see the body: this documents it. `closed`: fields
    other than `properties` are refused."""
    body = RequestBody(
        content={
            "application/json": OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.OBJECT,
                    properties=properties,
                    required=required or None,
                    additional_properties=False if closed else None,
                    min_properties=min_properties,
                )
            )
        },
        description=description,
        required=True,
    )

    @dataclass
    class WithJsonBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return WithJsonBody


# When an endpoint that takes a body answers 400, 413 or 415 (descriptions for `answers`).
BAD_JSON = "The body is not JSON."
BODY_TOO_LARGE = "The body is larger than 16 KB."
NOT_JSON_TYPE = "The body is not sent as application/json."

# For a POST that reads no body: a POST to the API must still be JSON (services/gateway/csrf.py).
EMPTY_BODY = json_body({}, [], "No fields: send `{}` with Content-Type: application/json.")
