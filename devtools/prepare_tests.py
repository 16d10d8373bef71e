"""What `make test` needs besides Python packages, made ready before pytest starts.

- **Loopback.** Every test server listens on 127.0.0.1. A fresh network namespace (`unshare -n`) has its
  loopback interface down; as root we bring it up, otherwise we say the one command to run.
- **Chromium** for the browser tests (Playwright cannot download its own browser here): CHROMIUM_PATH, or
  Debian's /usr/bin/chromium. Missing: installed with apt when running as root, otherwise the run stops
  with the one command to run.

The servers themselves (NATS, PostgreSQL, Redis) are found or started by the test session (tests/infra.py).
`python -m devtools.prepare_tests`; exit code 0 when ready.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
APT_INSTALL = "apt-get install -y chromium"


def say(line: str) -> None:
    print(f"==> {line}", flush=True)


def fail(line: str) -> int:
    print(f"make test: {line}", file=sys.stderr, flush=True)
    return 1


def chromium() -> Path | None:
    """The Chromium the browser tests drive, if there is one."""
    configured = os.environ.get("CHROMIUM_PATH")
    for candidate in (configured, *CHROMIUM_CANDIDATES) if configured else CHROMIUM_CANDIDATES:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def loopback_works() -> bool:
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client.settimeout(2)
        try:
            client.connect(server.getsockname())
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ETIMEDOUT):
                return False
            raise
    return True


def ensure_loopback() -> int:
    if loopback_works():
        return 0
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if os.geteuid() != 0 or not os.access(ip, os.X_OK):
        return fail("the loopback interface is down (a fresh network namespace?); run: ip link set lo up")
    say("the loopback interface is down (a fresh network namespace?): bringing it up")
    subprocess.run([ip, "link", "set", "lo", "up"], check=False)
    return (
        0 if loopback_works() else fail("could not bring the loopback interface up: run `ip link set lo up`")
    )


def ensure_chromium() -> int:
    if chromium() is not None:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return fail(
            f"the browser tests need Chromium; install it with: sudo {APT_INSTALL}  (or set CHROMIUM_PATH)"
        )
    log = Path(tempfile.gettempdir()) / "pmc-apt-chromium.log"
    say(f"Chromium is missing; the browser tests need it: {APT_INSTALL} (a minute or two; log in {log})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("wb") as output:
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            say(" ".join(argv))
            code = subprocess.run(
                argv, env=env, stdout=output, stderr=subprocess.STDOUT, check=False
            ).returncode
            if code != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                return fail(f"`{' '.join(argv)}` failed:\n{tail}\ninstall Chromium yourself: {APT_INSTALL}")
    return 0 if chromium() is not None else fail(f"Chromium is still missing after `{APT_INSTALL}`")


def main() -> int:
    return ensure_loopback() or ensure_chromium()


if __name__ == "__main__":
    sys.exit(main())
