"""Run the catalog simulator.

`python -m devtools.catalog_sim [--host 127.0.0.1] [--port 8001] [--demo] [--seed N] [--drift-seconds S]`
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import suppress

import structlog
import uvicorn

from devtools.catalog_sim.app import API_PREFIX, build_app, demo_watch_list
from shared.asu import catalog_url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.catalog_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--demo", action="store_true", help="start with ~40 generated sections that keep changing"
    )
    parser.add_argument("--seed", type=int, default=7, help="demo data seed (same seed, same sections)")
    parser.add_argument(
        "--drift-seconds", type=float, default=10.0, help="demo: seconds between enrolment changes"
    )
    args = parser.parse_args(argv)
    if args.drift_seconds <= 0:
        parser.error("--drift-seconds must be positive")

    log = structlog.get_logger()
    app = build_app(demo=args.demo, seed=args.seed, drift_seconds=args.drift_seconds)
    log.info(
        "catalog simulator",
        asu_api_url=f"http://{args.host}:{args.port}{API_PREFIX}",
        control=f"http://{args.host}:{args.port}/_sim/sections",
        demo=args.demo,
    )
    if args.demo:
        for section in demo_watch_list(args.seed):
            log.info(
                "full section to watch",
                term=section.term,
                class_nbr=section.class_nbr,
                course=f"{section.subject} {section.catalog_nbr}",
                title=section.title,
                catalog=catalog_url(section.term, section.class_nbr),
            )
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, which also stops the demo drift.
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    )
    # After a graceful shutdown uvicorn re-raises the signal it caught; Ctrl-C should end quietly.
    with suppress(KeyboardInterrupt):
        asyncio.run(server.serve())
    log.info("catalog simulator stopped")


if __name__ == "__main__":
    main()
