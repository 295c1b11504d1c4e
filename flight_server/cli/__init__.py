"""The ``omero-flight`` command: one argparse parser, subcommands from small modules.

Each module listed in :data:`SUBCOMMAND_MODULES` exposes ``register(subparsers)``,
which adds its subcommand(s) and sets ``func`` (called with the parsed
arguments; returns an exit code or None) via ``set_defaults``. User errors
(:class:`CliError`, the client's errors, a missing or existing file) print
``omero-flight: error: <message>`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from flight_client.errors import OmeroFlightError

SUBCOMMAND_MODULES = ("serve", "users", "transfer", "demo")

EPILOG = """\
examples:
  omero-flight serve --help                       run a bridge
  export OMERO_FLIGHT_URL=grpc://bridge.example.org:8815 OMERO_FLIGHT_USER=alice
  omero-flight ls --object Image:1                tables linked to Image 1
  omero-flight info --file-id 12                  rows, columns and column types
  omero-flight download --file-id 12 out.parquet  a table as Parquet (or .csv)
  omero-flight upload data.csv --name results --link Image:1

The password is read from OMERO_FLIGHT_PASSWORD or asked for on the terminal.
"""


class CliError(Exception):
    """A mistake by the user of the command: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omero-flight",
        description="Apache Arrow Flight bridge for OMERO.tables, and a client for it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        qualified = f"{__name__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name == qualified:  # that subcommand is not installed / not written yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``omero-flight``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = args.func(args)
    except (CliError, OmeroFlightError, FileExistsError, FileNotFoundError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
