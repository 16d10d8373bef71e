from pmc.cli import run

raise SystemExit(run())
