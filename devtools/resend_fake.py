"""A local stand-in for Resend's HTTP API, for tests and development; never part of a production image.

It speaks the wire format the official SDK expects (paths, `Authorization: Bearer re_...`, error bodies
`{"statusCode", "name", "message"}`, `Idempotency-Key`), keeps every accepted email in memory, and has a
small inspection API under `/_fake/`:

- `GET /_fake/emails`: `{"data": [accepted emails, oldest first], "send_calls": N}`
- `POST /_fake/reset`: forget emails, idempotency keys, faults, refusals and the rate limit
- `POST /_fake/faults` `{"status": 429, "count": N}`: the next N send calls fail with that status; 401, 403
  and 422 are request-level refusals (a bad key, an unverified domain, an invalid `from`), 5xx outages
- `POST /_fake/refuse` `{"addresses": [...]}`: these recipients are refused (422 naming `emails[i]` in strict
  batch validation; an `errors` entry with that index in permissive mode, `x-batch-validation: permissive`)
- `POST /_fake/rate_limit` `{"per_second": 2}`: more send calls than that in any second answer 429 with
  `retry-after` and `ratelimit-*` headers, as Resend does (0: no limit)

Run `python -m devtools.resend_fake [--port 8025]` and set `RESEND_API_URL=http://127.0.0.1:8025`;
in tests, `async with serve() as url:` runs it in the current event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import structlog
import uvicorn
from litestar import Litestar, Request, get, post
from litestar.exceptions import HTTPException
from litestar.response import Response

from shared.logging import configure_logging
from shared.settings import Settings

# Resend refuses what is not one plain address (a comma, a space, no dot in the domain): 422.
_ADDRESS = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")
MAX_BATCH = 100
MAX_IDEMPOTENCY_KEY = 256
_RETRY_AFTER_SECONDS = 1

log = structlog.get_logger()

Json = dict[str, Any]


class ResendFault(Exception):
    """An error answered in Resend's shape."""

    def __init__(self, status: int, name: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.headers = headers or {}

    def response(self) -> Response[Json]:
        body = {"statusCode": self.status, "name": self.name, "message": self.message}
        return Response(body, status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class _Remembered:
    fingerprint: str
    body: Json


@dataclass
class FakeResend:
    """Everything the fake remembers; one per app."""

    emails: list[Json] = field(default_factory=list)
    send_calls: int = 0
    idempotent: dict[str, _Remembered] = field(default_factory=dict)
    fault_status: int = 0
    fault_count: int = 0
    # Latency faults: the next `latency_count` send calls wait `latency_seconds` before being handled.
    latency_seconds: float = 0.0
    latency_count: int = 0
    in_flight: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    per_second: int = 0
    # Start times of the send calls within the last second, for the rate limit.
    recent: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.emails.clear()
        self.send_calls = 0
        self.idempotent.clear()
        self.fault_count = 0
        self.latency_count = 0
        self.refused.clear()
        self.per_second = 0
        self.recent.clear()

    def take_rate(self) -> None:
        """Resend's per-team limit: a sliding second, answered 429 with the time until a slot frees."""
        if self.per_second <= 0:
            return
        now = time.monotonic()
        self.recent = [started for started in self.recent if started > now - 1.0]
        if len(self.recent) >= self.per_second:
            wait = max(0.001, self.recent[0] + 1.0 - now)
            raise ResendFault(
                429,
                "rate_limit_exceeded",
                f"Too many requests. You can only make {self.per_second} requests per second.",
                {
                    "retry-after": f"{wait:.3f}",
                    "ratelimit-limit": str(self.per_second),
                    "ratelimit-remaining": "0",
                    "ratelimit-reset": f"{wait:.3f}",
                },
            )
        self.recent.append(now)

    def check_auth(self, authorization: str | None) -> None:
        if not authorization:
            raise ResendFault(401, "missing_api_key", "Missing API key in the authorization header.")
        scheme, _, key = authorization.partition(" ")
        if scheme != "Bearer" or not key.startswith("re_"):
            raise ResendFault(403, "invalid_api_key", "API key is invalid")

    def take_fault(self) -> None:
        if self.fault_count <= 0:
            return
        self.fault_count -= 1
        if self.fault_status == 429:
            raise ResendFault(
                429,
                "rate_limit_exceeded",
                "Too many requests. You can only make 2 requests per second.",
                {
                    "retry-after": str(_RETRY_AFTER_SECONDS),
                    "ratelimit-limit": "2",
                    "ratelimit-remaining": "0",
                    "ratelimit-reset": str(_RETRY_AFTER_SECONDS),
                },
            )
        if self.fault_status == 401:
            raise ResendFault(401, "missing_api_key", "Missing API key in the authorization header.")
        if self.fault_status == 403:
            raise ResendFault(403, "invalid_api_key", "API key is invalid")
        if self.fault_status == 422:
            raise ResendFault(
                422, "validation_error", "Invalid `from` field. The domain is not verified for this account."
            )
        raise ResendFault(self.fault_status, "application_error", "An unexpected error occurred.")

    def send(
        self, path: str, raw: bytes, idempotency_key: str | None, batch: bool, permissive: bool = False
    ) -> Json:
        """Handle one authenticated, counted send call: the response body, or ResendFault."""
        self.take_rate()
        self.take_fault()
        payload = _parse(raw)
        fingerprint = hashlib.sha256(
            path.encode() + b"\0" + json.dumps(payload, sort_keys=True).encode()
        ).hexdigest()
        if idempotency_key is not None:
            if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
                raise ResendFault(
                    400, "invalid_idempotency_key", f"The key must be 1-{MAX_IDEMPOTENCY_KEY} characters."
                )
            remembered = self.idempotent.get(idempotency_key)
            if remembered is not None:
                if remembered.fingerprint != fingerprint:
                    raise ResendFault(
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload. "
                        "Change your idempotency key or payload.",
                    )
                return remembered.body
        errors: list[Json] = []
        if batch and permissive:
            checked = _validate_permissive(payload, errors)
        else:
            checked = list(_validate_batch(payload) if batch else [_validate_email(payload, "")])
        items: list[Json | None] = []
        for index, item in enumerate(checked):
            refused = [address for address in item["to"] if address.lower() in self.refused] if item else []
            if refused:
                message = f"emails[{index}]: the `to` address {refused[0]} is refused."
                if not (batch and permissive):
                    raise ResendFault(422, "validation_error", message)
                errors.append({"index": index, "message": message})
                item = None
            items.append(item)
        accepted = [
            {"id": str(uuid.uuid4()), **item, "idempotency_key": idempotency_key, "created_at": time.time()}
            for item in items
            if item is not None
        ]
        self.emails.extend(accepted)
        ids = [{"id": email["id"]} for email in accepted]
        body: Json = ({"data": ids, "errors": errors} if permissive else {"data": ids}) if batch else ids[0]
        if idempotency_key is not None:
            self.idempotent[idempotency_key] = _Remembered(fingerprint, body)
        return body

    def take_latency(self) -> float:
        if self.latency_count <= 0:
            return 0.0
        self.latency_count -= 1
        return self.latency_seconds

    def set_faults(self, raw: bytes) -> None:
        payload = _parse(raw)
        if not isinstance(payload, dict):
            raise ResendFault(422, "validation_error", "faults need a JSON object")
        status, count = payload.get("status"), payload.get("count", 1)
        latency_ms = payload.get("latency_ms")
        if status is None and isinstance(latency_ms, int) and latency_ms >= 0 and isinstance(count, int):
            self.latency_seconds, self.latency_count = latency_ms / 1000, count
            return
        if status not in (401, 403, 422, 429, 500, 502, 503) or not isinstance(count, int) or count < 0:
            raise ResendFault(
                422,
                "validation_error",
                "faults need status 401, 403, 422, 429, 500, 502 or 503 (or latency_ms alone) and count >= 0",
            )
        self.fault_status, self.fault_count = status, count

    def set_refused(self, raw: bytes) -> None:
        payload = _parse(raw)
        addresses = payload.get("addresses") if isinstance(payload, dict) else None
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ResendFault(422, "validation_error", 'refuse needs {"addresses": [strings]}')
        self.refused = {address.lower() for address in addresses}

    def set_rate_limit(self, raw: bytes) -> None:
        payload = _parse(raw)
        per_second = payload.get("per_second") if isinstance(payload, dict) else None
        if not isinstance(per_second, int) or per_second < 0:
            raise ResendFault(422, "validation_error", 'rate_limit needs {"per_second": integer >= 0}')
        self.per_second = per_second
        self.recent.clear()


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except json.JSONDecodeError:
        raise ResendFault(422, "validation_error", "Request body is not valid JSON.") from None


def _validate_batch(emails: Any) -> list[Json]:
    if not isinstance(emails, list) or not emails:
        raise ResendFault(422, "validation_error", "The batch must be a non-empty array of emails.")
    if len(emails) > MAX_BATCH:
        raise ResendFault(422, "validation_error", f"Too many emails in batch: the maximum is {MAX_BATCH}.")
    accepted = []
    for index, email in enumerate(emails):
        prefix = f"emails[{index}]."
        for unsupported in ("attachments", "scheduled_at"):
            if isinstance(email, dict) and unsupported in email:
                raise ResendFault(
                    422, "validation_error", f"{prefix}`{unsupported}` is not supported in batch."
                )
        accepted.append(_validate_email(email, prefix))
    return accepted


def _validate_permissive(emails: Any, errors: list[Json]) -> list[Json | None]:
    """Permissive batch validation: an invalid email is reported by index, the others go out."""
    if not isinstance(emails, list) or not emails:
        raise ResendFault(422, "validation_error", "The batch must be a non-empty array of emails.")
    if len(emails) > MAX_BATCH:
        raise ResendFault(422, "validation_error", f"Too many emails in batch: the maximum is {MAX_BATCH}.")
    checked: list[Json | None] = []
    for index, email in enumerate(emails):
        try:
            checked.append(_validate_email(email, f"emails[{index}]."))
        except ResendFault as fault:
            errors.append({"index": index, "message": fault.message})
            checked.append(None)
    return checked


def _validate_email(email: Any, prefix: str) -> Json:
    if not isinstance(email, dict):
        raise ResendFault(422, "validation_error", f"{prefix or 'The email'} must be a JSON object.")
    for name in ("from", "to", "subject"):
        if not email.get(name):
            raise ResendFault(422, "missing_required_field", f"{prefix}Missing `{name}` field.")
    if not isinstance(email["from"], str) or not isinstance(email["subject"], str):
        raise ResendFault(422, "validation_error", f"{prefix}`from` and `subject` must be strings.")
    to = email["to"]
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list) or not all(
        isinstance(r, str) and _ADDRESS.fullmatch(r) for r in recipients
    ):
        raise ResendFault(422, "validation_error", f"{prefix}Invalid `to` field.")
    if len(recipients) > 50:
        raise ResendFault(422, "validation_error", f"{prefix}`to` holds at most 50 addresses.")
    bodies = [email.get(part) for part in ("html", "text") if email.get(part) is not None]
    if not any(bodies) or not all(isinstance(body, str) for body in bodies):
        raise ResendFault(422, "validation_error", f"{prefix}Provide `html` or `text`.")
    headers = email.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ResendFault(422, "validation_error", f"{prefix}`headers` must map names to strings.")
    return {**email, "to": recipients, "headers": headers}


def _fake(request: Request[Any, Any, Any]) -> FakeResend:
    return cast(FakeResend, request.app.state.fake)


async def _send(request: Request[Any, Any, Any], *, batch: bool) -> Response[Json]:
    fake = _fake(request)
    fake.send_calls += 1
    key = request.headers.get("idempotency-key")
    try:
        fake.check_auth(request.headers.get("authorization"))
        raw = await request.body()
        if key is not None and key in fake.in_flight:
            # Resend's answer while a request with the same key is still being processed.
            raise ResendFault(
                409,
                "concurrent_idempotent_requests",
                "Same idempotency key used while original request is still in progress.",
            )
        delay = fake.take_latency()
        if delay:
            if key is not None:
                fake.in_flight.add(key)
            try:
                # Handled even if the client hangs up meanwhile, as a real provider would.
                await asyncio.sleep(delay)
            finally:
                fake.in_flight.discard(key or "")
        permissive = request.headers.get("x-batch-validation", "strict").lower() == "permissive"
        body = fake.send(request.url.path, raw, key, batch, permissive)
    except ResendFault as fault:
        return fault.response()
    return Response(body, status_code=200)


@post("/emails", status_code=200)
async def send_email(request: Request[Any, Any, Any]) -> Response[Json]:
    return await _send(request, batch=False)


@post("/emails/batch", status_code=200)
async def send_batch(request: Request[Any, Any, Any]) -> Response[Json]:
    return await _send(request, batch=True)


@get("/_fake/emails")
async def list_emails(request: Request[Any, Any, Any]) -> Json:
    fake = _fake(request)
    return {"data": fake.emails, "send_calls": fake.send_calls}


@post("/_fake/reset", status_code=200)
async def reset_state(request: Request[Any, Any, Any]) -> Json:
    _fake(request).reset()
    return {"ok": True}


@post("/_fake/faults", status_code=200)
async def configure_faults(request: Request[Any, Any, Any]) -> Response[Json]:
    try:
        _fake(request).set_faults(await request.body())
    except ResendFault as fault:
        return fault.response()
    return Response({"ok": True}, status_code=200)


@post("/_fake/refuse", status_code=200)
async def configure_refused(request: Request[Any, Any, Any]) -> Response[Json]:
    try:
        _fake(request).set_refused(await request.body())
    except ResendFault as fault:
        return fault.response()
    return Response({"ok": True}, status_code=200)


@post("/_fake/rate_limit", status_code=200)
async def configure_rate_limit(request: Request[Any, Any, Any]) -> Response[Json]:
    try:
        _fake(request).set_rate_limit(await request.body())
    except ResendFault as fault:
        return fault.response()
    return Response({"ok": True}, status_code=200)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Json]:
    name = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "application_error")
    return ResendFault(exc.status_code, name, exc.detail).response()


def create_app() -> Litestar:
    app = Litestar(
        route_handlers=[
            send_email,
            send_batch,
            list_emails,
            reset_state,
            configure_faults,
            configure_refused,
            configure_rate_limit,
        ],
        exception_handlers={HTTPException: _http_error},
        openapi_config=None,
    )
    app.state.fake = FakeResend()
    return app


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before the server starts: the port is known and early clients wait in the backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the host process owns signals) and with a ready event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _server() -> _Server:
    return _Server(uvicorn.Config(create_app(), log_level="warning", access_log=False, lifespan="on"))


@asynccontextmanager
async def serve(port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run a fresh fake in this event loop; yields its base URL (use it as `resend.api_url`)."""
    sock = _listen(host, port)
    server = _server()
    running = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        sock.close()
        await running
        raise RuntimeError("resend fake stopped before it started")
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await running


async def fetch_emails(base_url: str) -> list[Json]:
    """Every email the fake at `base_url` accepted, oldest first."""
    return cast(list[Json], (await _inspect(base_url))["data"])


async def fetch_send_calls(base_url: str) -> int:
    """How many send calls (accepted or not) reached the fake at `base_url`."""
    return int((await _inspect(base_url))["send_calls"])


async def reset(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        (await client.post("/_fake/reset")).raise_for_status()


async def set_faults(base_url: str, status: int, count: int = 1) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        (await client.post("/_fake/faults", json={"status": status, "count": count})).raise_for_status()


async def set_latency(base_url: str, milliseconds: int, count: int = 1) -> None:
    """The next `count` send calls wait `milliseconds` before being handled."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post("/_fake/faults", json={"latency_ms": milliseconds, "count": count})
        response.raise_for_status()


async def refuse(base_url: str, addresses: list[str]) -> None:
    """The fake refuses these recipients from now on."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        (await client.post("/_fake/refuse", json={"addresses": addresses})).raise_for_status()


async def set_rate_limit(base_url: str, per_second: int) -> None:
    """At most `per_second` send calls in any second; more answer 429 (0: no limit)."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        (await client.post("/_fake/rate_limit", json={"per_second": per_second})).raise_for_status()


async def _inspect(base_url: str) -> Json:
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/_fake/emails")
        response.raise_for_status()
        return cast(Json, response.json())


async def _main(host: str, port: int) -> None:
    sock = _listen(host, port)
    server = _server()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, setattr, server, "should_exit", True)
    log.info("resend fake listening", url=f"http://{host}:{sock.getsockname()[1]}")
    await server.serve(sockets=[sock])


def main() -> None:
    configure_logging(Settings(), "resend-fake")
    parser = argparse.ArgumentParser(description="Local fake of Resend's email API (development only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    asyncio.run(_main(args.host, args.port))


if __name__ == "__main__":
    main()
