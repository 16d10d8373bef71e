"""A stand-in for ASU's class search, for development and tests (never shipped in production images)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from devtools.catalog_sim.app import API_PREFIX, build_app
from devtools.catalog_sim.sections import SimSection, clas_row, class_item

__all__ = ["API_PREFIX", "SimSection", "build_app", "clas_row", "class_item", "serve"]


@asynccontextmanager
async def serve(port: int = 0, *, demo: bool = False) -> AsyncIterator[str]:
    """Run the simulator on 127.0.0.1 in this event loop; yields the API base URL (the real port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    # Listening before uvicorn takes over means early connections wait in the backlog instead of failing.
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    started = asyncio.Event()
    app = build_app(demo=demo, on_startup=[started.set])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=bound_port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(started.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            raise RuntimeError("catalog simulator stopped before it started")
        yield f"http://127.0.0.1:{bound_port}{API_PREFIX}"
    finally:
        ready.cancel()
        server.should_exit = True
        await task
        sock.close()
