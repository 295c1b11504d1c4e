"""The ``omero-flight`` command: one argparse parser, subcommands from small modules.

Each module listed in :data:`SUBCOMMAND_MODULES` exposes ``register(subparsers)``,
which adds its subcommand(s) and sets ``func`` (called with the parsed
arguments; returns an exit code or None) via ``set_defaults``. User errors
(:class:`CliError`, the client's errors, a missing or existing file, a file that
is not a table, an answer that never came) print ``omero-flight: error: <message>``
and exit with status 2, without a traceback; an interrupt exits with 130.

Registering a subcommand imports nothing of the server: the client commands
(``ls``, ``info``, ``download``, ``upload``) and ``--help`` work with the base
install; the server commands import the store when they run and, without the
``server`` extra, say which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

# gRPC's own C++ log lines (a failed TLS handshake, ...) would follow the one-line error;
# the client says what went wrong itself. Set before pyarrow.flight loads gRPC.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

SUBCOMMAND_MODULES = ("serve", "users", "transfer", "demo")

#: Modules only the server extras provide, and the extra that installs each.
SERVER_MODULES = {"tables": "server", "h5py": "server", "omero": "omero", "Ice": "omero",
                  "omero_user_token": "omero", "duckdb": "duckdb", "polars": "polars",
                  "tiledb": "tiledb", "adbc_driver_flightsql": "sql", "google": "sql"}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

EPILOG = """\
examples:
  omero-flight serve --help                       run a bridge
  export OMERO_FLIGHT_URL=grpc://bridge.example.org:8815 OMERO_FLIGHT_USER=alice
  omero-flight ls --object Image:1                tables linked to Image 1
  omero-flight info --file-id 12                  rows, columns and column types
  omero-flight download --file-id 12 out.parquet  a table as Parquet (or .csv)
  omero-flight upload data.csv --name results --link Image:1

The password is read from OMERO_FLIGHT_PASSWORD or asked for on the terminal.
The client commands need only `pip install omero-flight`; serve, demo, user and
group need `pip install 'omero-flight[server]'`.
"""


class CliError(Exception):
    """A mistake by the user of the command: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omero-flight")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0+unknown"


def verbose_option(parser: argparse.ArgumentParser) -> None:
    """``-v``/``--verbose``, accepted after a subcommand as well as before it."""
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (-vv for debug)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="omero-flight",
        description="Apache Arrow Flight bridge for OMERO.tables, and a client for it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    for choice in subparsers.choices.values():
        _add_verbose(choice)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and its sub-subcommands ``-v`` (unless they have it)."""
    if "--verbose" not in parser._option_string_actions:
        verbose_option(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_verbose(sub)


@contextmanager
def _interrupts_deferred() -> Iterator[list[int]]:
    """Hold Ctrl-C while modules load: one raised inside an import can be swallowed by Python
    ("Exception ignored in ...", with a traceback) and the command would go on. The list it
    yields is non-empty afterwards if Ctrl-C was pressed; a second press interrupts at once."""
    pressed: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def hold(signum: int, frame: object) -> None:
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None
                      else signal.default_int_handler)


def missing_extra(exc: ModuleNotFoundError, command: str | None) -> str | None:
    """The one-line message for a server command run without its extra, else None."""
    top = (exc.name or "").split(".")[0]
    extra = SERVER_MODULES.get(top)
    if extra is None:
        return None
    return (f"'{command}' needs the {extra} extra (no module named {top!r}): "
            f"pip install 'omero-flight[{extra}]'")


def _user_error_types() -> tuple[type[BaseException], ...]:
    import pandas.errors

    from flight_client.errors import OmeroFlightError

    return (CliError, OmeroFlightError, FileExistsError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError, UnicodeDecodeError, EOFError,
            pandas.errors.EmptyDataError, pandas.errors.ParserError)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not a text file ({exc.reason} at byte {exc.start}); is it a table?"
    if isinstance(exc, EOFError):
        return "no answer on standard input (it is closed or empty)"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``omero-flight``; returns the exit status."""
    prog = "omero-flight"
    command = None
    try:
        with _interrupts_deferred() as interrupted:
            parser = build_parser()  # imports pyarrow and pandas: the slow part of start-up
            args = parser.parse_args(argv)
        if interrupted:
            raise KeyboardInterrupt
        command = args.command
        level = logging.WARNING - 10 * min(args.verbose, 2)
        logging.basicConfig(level=level, format=LOG_FORMAT)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        message = missing_extra(exc, command)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, _user_error_types()):
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
