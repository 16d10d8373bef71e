"""What the request handlers share: opened in the app's lifespan, handed out by dependency injection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import asyncpg
from litestar.datastructures import State
from nats.aio.client import Client
from nats.js import JetStreamContext
from redis.asyncio import Redis


@dataclass(frozen=True)
class Resources:
    pool: asyncpg.Pool
    redis: Redis
    nc: Client
    js: JetStreamContext


def resources_of(state: State) -> Resources:
    return cast(Resources, state.resources)


def provide_pool(state: State) -> asyncpg.Pool:
    return resources_of(state).pool


def provide_redis(state: State) -> Redis:
    return resources_of(state).redis


def provide_nc(state: State) -> Client:
    return resources_of(state).nc


def provide_js(state: State) -> JetStreamContext:
    return resources_of(state).js
