"""convgen: serve the services, manage the schema and catalog, generate and run batch jobs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clients.cli import admin_commands


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each command module registers its subcommands."""
    parser = argparse.ArgumentParser(prog="convgen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    admin_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command and returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
