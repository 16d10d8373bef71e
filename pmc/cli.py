"""`pmc`: the operator's command line.

    pmc status [--json]                  the system on one screen; exit 1 when something is unhealthy
    pmc dlq list                         the dead letters, oldest first
    pmc dlq show SEQ                     one dead letter, with its data
    pmc dlq replay SEQ... | --all        publish again to the original subject, then remove the letter
    pmc check --term T --class N         one live look-up through the scraper's code
    pmc admin promote EMAIL | demote EMAIL

It reads the services' environment (NATS_URL, DATABASE_URL, NAMESPACE, ...; `source .data/env` after
`make run`). Errors are one line on stderr with exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from pmc import check, dlq, status
from services.gateway.admins import set_admin
from services.scraper.catalog import PermanentCatalogError, TransientCatalogError
from services.scraper.parser import CatalogFormatError
from shared.asu import is_class_nbr, is_term
from shared.db import create_pool
from shared.failures import explain
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.settings import Settings, SettingsError, load_settings
from shared.streams import Topology

CONNECT_TIMEOUT_SECONDS = 5.0


class UsageError(Exception):
    """Bad input on the command line; the message says what is expected."""


@asynccontextmanager
async def nats_client(settings: Settings) -> AsyncIterator[Client]:
    # The services reconnect forever; an operator wants an answer now.
    try:
        nc = await asyncio.wait_for(connect_nats(settings.nats_url, "pmc-cli"), CONNECT_TIMEOUT_SECONDS)
    except TimeoutError:
        raise ConnectionError(f"no NATS server answers at {settings.nats_url}") from None
    try:
        yield nc
    finally:
        await nc.close()


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncio.wait_for(create_pool(settings.database_url, max_size=2), CONNECT_TIMEOUT_SECONDS)
    try:
        yield pool
    finally:
        await pool.close()


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    async with nats_client(settings) as nc, database(settings) as pool:
        report = await status.collect(settings, nc, pool)
    print(status.as_json(report) if args.json else status.render(report))
    return 0 if report.healthy else 1


async def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    topology = Topology(settings.namespace, settings.check_interval_seconds)
    async with nats_client(settings) as nc:
        js = nc.jetstream()
        if args.dlq_command == "list":
            print(dlq.LIST_HEADER)
            count = 0
            async for item in dlq.letters(js, topology):
                print(dlq.summary(item))
                count += 1
            print(f"{count} dead letters" + ("; `pmc dlq show SEQ` for one" if count else ""))
            return 0
        if args.dlq_command == "show":
            print(dlq.detail(await dlq.letter(js, topology, args.seq)))
            return 0
        if args.all:
            items = [item async for item in dlq.letters(js, topology)]
        elif args.seq:
            items = [await dlq.letter(js, topology, seq) for seq in args.seq]
        else:
            raise UsageError("name the letters to replay (SEQ ...) or say --all")
        for done, item in enumerate(items, start=1):
            new_seq = await dlq.replay(js, topology, item, keep=args.keep)
            if len(items) == 1:
                print(f"replayed dead letter {item.seq} to {item.letter.subject} (stream sequence {new_seq})")
            else:
                dlq.progress(done, len(items))
        if len(items) != 1:
            print(
                f"replayed {len(items)} dead letters"
                + (" (kept in the dead-letter stream)" if args.keep else "")
            )
        return 0


async def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    if not is_term(args.term):
        raise UsageError(f"--term must be an ASU term code like 2271 (Spring 2027), got {args.term!r}")
    if not is_class_nbr(args.class_nbr):
        raise UsageError(f"--class must be a 5-digit class number, got {args.class_nbr!r}")
    state = await check.look_up(settings.asu_api_url, args.term, args.class_nbr)
    if state is None:
        print(f"class {args.class_nbr} is not in the class search for term {args.term}")
        return 1
    print(check.as_json(state) if args.json else check.describe(state))
    return 0


async def cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    promote = args.admin_command == "promote"
    async with database(settings) as pool:
        stored = await set_admin(pool, args.email, promote)
    if stored is None:
        raise UsageError(f"no account with email {args.email!r}")
    print(f"{stored} is {'now an admin' if promote else 'no longer an admin'}")
    return 0


def sequence(text: str) -> int:
    """A stream sequence number as JetStream has them (1 to 2^64 - 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sequence number") from None
    if not 1 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"{text} is not a sequence number (1 to 2^64 - 1)")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pmc", description="Operate PickMyClass.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status_cmd = commands.add_parser("status", help="the whole system on one screen; exit 1 if unhealthy")
    status_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    status_cmd.set_defaults(run=cmd_status)

    dlq_cmd = commands.add_parser("dlq", help="dead letters: list, show, replay")
    dlq_commands = dlq_cmd.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_commands.add_parser("list", help="every dead letter, oldest first")
    show = dlq_commands.add_parser("show", help="one dead letter with its data")
    show.add_argument("seq", type=sequence, metavar="SEQ")
    replay = dlq_commands.add_parser("replay", help="publish letters again to their original subject")
    replay.add_argument("seq", type=sequence, nargs="*", metavar="SEQ")
    replay.add_argument("--all", action="store_true", help="every letter in the stream")
    replay.add_argument("--keep", action="store_true", help="leave the letters in the dead-letter stream")
    dlq_cmd.set_defaults(run=cmd_dlq)

    check_cmd = commands.add_parser("check", help="look one section up in the class search now")
    check_cmd.add_argument("--term", required=True, help="ASU term code, e.g. 2271")
    check_cmd.add_argument("--class", dest="class_nbr", required=True, help="5-digit class number")
    check_cmd.add_argument("--json", action="store_true", help="the parsed section as JSON")
    check_cmd.set_defaults(run=cmd_check)

    admin_cmd = commands.add_parser("admin", help="make an account an admin, or not")
    admin_commands = admin_cmd.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    for action in ("promote", "demote"):
        admin_commands.add_parser(action, help=f"{action} the account with this email").add_argument("email")
    admin_cmd.set_defaults(run=cmd_admin)
    return root


# Failures an operator can act on; anything else is a bug and keeps its traceback.
_EXPECTED = (
    OSError,
    TimeoutError,
    NatsError,
    asyncpg.PostgresError,
    TransientCatalogError,
    PermanentCatalogError,
    CatalogFormatError,
    msgspec.DecodeError,
)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run: Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]] = args.run
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"pmc: {exc}", file=sys.stderr)
        return 2
    # The services' log lines are for their logs; an operator at a terminal reads only what pmc prints.
    configure_logging(
        msgspec.structs.replace(settings, log_level=os.environ.get("LOG_LEVEL", "error")), "pmc"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(settings, args))
    except (UsageError, dlq.DlqError, ValueError) as exc:
        print(f"pmc: {exc}", file=sys.stderr)
    except NotFoundError as exc:
        print(f"pmc: not found: {exc.description or exc}", file=sys.stderr)
    except _EXPECTED as exc:
        print(f"pmc: {explain(exc, database_url=settings.database_url)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("pmc: interrupted", file=sys.stderr)
    return 2


def run() -> int:
    """The console script: quiet logs, then `main`. The services' log lines are for their logs; an operator
    at a terminal reads what pmc prints (LOG_LEVEL=info shows the rest)."""
    with contextlib.suppress(SettingsError):
        settings = load_settings()
        configure_logging(
            msgspec.structs.replace(settings, log_level=os.environ.get("LOG_LEVEL", "error")), "pmc"
        )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return main()
