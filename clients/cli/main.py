"""convgen: serve the services, manage the schema and catalog, generate and run batch jobs, export datasets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clients.cli import admin_commands, batch_commands, conversation_commands, dataset_commands, demo, generate_commands
from clients.cli.common import add_connection_options, connection_parent

EPILOG = """examples:
  convgen demo
  convgen catalog list personas
  convgen generate --persona pragmatic_optimist --arc couple_conflict_to_alignment --topic estate_planning_basics
  convgen conversation get PK_OR_BUSINESS_KEY --content
  convgen batch create --seed-job --watch
  convgen batch create --persona pragmatic_optimist --arc couple_conflict_to_alignment --topic estate_planning_basics
  convgen batch watch latest
  convgen batch items latest --state failed
  convgen --json batch list --state completed
  convgen dataset export --job latest --format chat --eval-fraction 0.1 --group-by topic --drop-near-duplicates
  convgen dataset report --job latest
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each command module registers its subcommands."""
    parser = argparse.ArgumentParser(
        prog="convgen", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    admin_commands.register(commands)
    parents = [connection_parent()]
    generate_commands.register(commands, parents)
    conversation_commands.register(commands, parents)
    batch_commands.register(commands, parents)
    dataset_commands.register(commands, parents)
    demo.register(commands, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command and returns its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
