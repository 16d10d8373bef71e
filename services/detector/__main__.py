"""`python -m services.detector`: turn snapshots into section state and change events."""

from __future__ import annotations

from services.detector.handlers import Detector
from shared.db import create_pool
from shared.health import postgres_check
from shared.service import ServiceContext, Worker, run

BATCH_SIZE = 100


async def make_detector(ctx: ServiceContext) -> Detector:
    pool = await create_pool(ctx.settings.database_url, max_size=4)
    ctx.readiness.add("postgres", postgres_check(pool))
    return Detector(pool, ctx.nc, ctx.topology, ctx.consumer)


def main() -> None:
    run("detector", Worker(lambda topology: topology.detector, make_detector, BATCH_SIZE))


if __name__ == "__main__":
    main()
