"""`python -m services.detector`: turn snapshots into section state and change events."""

from __future__ import annotations

from nats.aio.client import Client

from services.detector.handlers import Detector
from shared.db import create_pool
from shared.service import run
from shared.settings import Settings
from shared.streams import Consumer, Topology

BATCH_SIZE = 100


async def make_detector(settings: Settings, topology: Topology, consumer: Consumer, nc: Client) -> Detector:
    return Detector(await create_pool(settings.database_url, max_size=4), nc, topology, consumer)


def main() -> None:
    run("detector", lambda topology: topology.detector, make_detector, batch_size=BATCH_SIZE)


if __name__ == "__main__":
    main()
