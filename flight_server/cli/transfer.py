"""Client subcommands of ``omero-flight``: ``ls``, ``info``, ``download``, ``upload``.

They talk to a running bridge with :mod:`flight_client`, like any other client;
connection details come from the options or the ``OMERO_FLIGHT_*`` variables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import flight_client
from flight_client.connection import Connection
from flight_client.outputs import FORMATS
from flight_server.cli import CliError

CONNECTION_HELP = """\
connection: --server (or OMERO_FLIGHT_URL / OMERO_FLIGHT_HOST), --port (default 8815),
--user (or OMERO_FLIGHT_USER); the password comes from OMERO_FLIGHT_PASSWORD or a prompt;
--tls-root-certs (or OMERO_FLIGHT_TLS_ROOT_CERTS) trusts a bridge's own certificate.
"""

#: Target suffixes ``download`` knows, and the format each means.
DOWNLOAD_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".tiledb": "tiledb"}
#: Source suffixes ``upload`` reads.
UPLOAD_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
#: Bytes of a CSV source looked at before uploading it.
SNIFF_BYTES = 64 * 1024


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--server", help="bridge host or URL, e.g. grpc://bridge:8815")
    group.add_argument("--port", type=int, help="bridge port (default 8815)")
    group.add_argument("--user", help="user name")
    group.add_argument("--tls-root-certs", metavar="PEM",
                       help="PEM file of the certificate(s) to trust for a grpc+tls bridge")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _table_options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("-f", "--file-id", type=int, help="the table's OriginalFile id")
    which.add_argument("-a", "--annotation-id", type=int, help="the table's FileAnnotation id")


def _add(subparsers: Any, name: str, help: str, description: str,
         examples: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help, description=description,
        epilog="examples:\n" + examples + "\n" + CONNECTION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _connect(args: argparse.Namespace) -> Connection:
    return Connection(args.server, args.port, args.user,
                      tls_root_certs=args.tls_root_certs).connect(interactive=None,
                                                                  keep_alive=False)


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def parse_link(text: str) -> tuple[str, int]:
    """``Image:1`` -> ``("Image", 1)``."""
    kind, sep, number = text.partition(":")
    if not sep or not number.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected Type:ID such as Image:1, got {text!r}")
    return kind.strip(), int(number)


def parse_rows(text: str) -> range | list[int]:
    """``0:100`` -> ``range(0, 100)``; ``1,5,9`` -> a list."""
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            rows: range | list[int] = range(int(start or 0), int(stop))
        else:
            rows = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP or a comma-separated list, got {text!r}"
        ) from None
    if isinstance(rows, range) and (rows.start < 0 or rows.stop <= rows.start):
        raise argparse.ArgumentTypeError(
            f"START:STOP needs 0 <= START < STOP, got {text!r} (no rows)")
    if isinstance(rows, list) and (not rows or min(rows) < 0):
        raise argparse.ArgumentTypeError(f"row numbers must be 0 or more, got {text!r}")
    return rows


def _suffix(path: str) -> str:
    name = Path(path).name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else Path(name).suffix


def download_format(target: str, given: str | None) -> str | None:
    """``--format`` if given, else the format the target's suffix names; unknown: an error."""
    if given is not None:
        return given
    fmt = DOWNLOAD_SUFFIXES.get(_suffix(target))
    if fmt is None:
        raise CliError(f"cannot tell the format of {target!r} from its suffix: name it "
                       f"{', '.join(DOWNLOAD_SUFFIXES)} or give --format")
    return None  # the client picks the same format from the suffix


def check_upload_source(source: str) -> None:
    """Refuse what is not a CSV or Parquet table before anything is sent."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"could not find {source!r}")
    if path.is_dir():
        raise CliError(f"{source!r} is a folder; upload takes a .csv or .parquet file")
    suffix = _suffix(source)
    if suffix not in UPLOAD_SUFFIXES:
        raise CliError(f"{source!r} is not a table file: upload takes "
                       f"{', '.join(UPLOAD_SUFFIXES)} files")
    if suffix != ".csv":
        return
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head.strip():
        raise CliError(f"{source!r} is empty: a CSV needs a header line and rows")
    if b"\0" in head:
        raise CliError(f"{source!r} is a binary file, not a CSV")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the sniffed end
            raise CliError(f"{source!r} is not UTF-8 text (byte {exc.start}); "
                           "is it a CSV?") from None
        text = head[: exc.start].decode("utf-8")
    if text.startswith("#!"):
        raise CliError(f"{source!r} starts with '#!': a script, not a CSV table")


# -- ls ------------------------------------------------------------------------------------------
def _ls(args: argparse.Namespace) -> int:
    object_type, object_id = args.object if args.object else (None, None)
    with _connect(args) as conn:
        tables = flight_client.list_tables(object_type, object_id, omero_connector=conn)
    if args.json:
        json.dump(tables, sys.stdout, indent=2)
        print()
        return 0
    if not tables:
        print("no tables", file=sys.stderr)
        return 0
    print(f"{'ANNOTATION':>10} {'FILE':>8} {'ROWS':>10}  {'OWNER':<10} NAME")
    for t in tables:
        rows = "" if t.get("rows") is None else t["rows"]
        print(f"{t.get('annotation_id')!s:>10} {t.get('file_id')!s:>8} {rows!s:>10}  "
              f"{t.get('owner') or '':<10} {t.get('name')}")
    return 0


# -- info ----------------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        rows, ncols = flight_client.get_table_size(args.file_id, args.annotation_id,
                                                   omero_connector=conn)
        columns = conn.column_details(args.file_id, args.annotation_id)
    if args.json:
        json.dump({"rows": rows, "columns": columns}, sys.stdout, indent=2)
        print()
        return 0
    print(f"{rows} rows, {ncols} columns")
    width = max([len(c["name"]) for c in columns] or [4])
    for c in columns:
        kind = str(c.get("type", "")).rsplit("::", 1)[-1]
        description = f"  {c['description']}" if c.get("description") else ""
        print(f"  {c['name']:<{width}}  {kind}{description}")
    return 0


# -- download ------------------------------------------------------------------------------------
def _download(args: argparse.Namespace) -> int:
    if args.rows is not None and args.query is not None:
        raise CliError("--rows and --query cannot be combined")
    columns = [c for c in args.columns.split(",") if c] if args.columns else ()
    fmt = download_format(args.target, args.format)
    if Path(args.target).exists():
        raise FileExistsError(f"{args.target!r} already exists; choose a new name")
    with _connect(args) as conn:
        rows = flight_client.download_table(
            args.target, args.file_id, args.annotation_id, column_names=columns,
            rows=args.rows, query=args.query, omero_connector=conn, format=fmt,
            progress=_progress(args),
        )
    print(f"wrote {rows} rows to {args.target}", file=sys.stderr)
    return 0


# -- upload --------------------------------------------------------------------------------------
def _upload(args: argparse.Namespace) -> int:
    if not args.link:
        raise CliError("give at least one --link Type:ID to attach the table to")
    check_upload_source(args.source)
    with _connect(args) as conn:
        annotation_id = flight_client.upload_table(
            args.source, args.name, links=args.link, chunk_size=args.chunk_size,
            omero_connector=conn, description=args.description or "",
            progress=_progress(args),
        )
    print(annotation_id)
    return 0


def register(subparsers: Any) -> None:
    """Add ``ls``, ``info``, ``download`` and ``upload`` to the ``omero-flight`` parser."""
    p = _add(subparsers, "ls", "list tables",
             "List the tables linked to an object, or all tables you can read.",
             "  omero-flight ls                   every table you can read\n"
             "  omero-flight ls --object Image:1  tables linked to Image 1\n")
    p.add_argument("--object", type=parse_link, metavar="TYPE:ID",
                   help="only tables linked to this object, e.g. Dataset:3")
    p.add_argument("--json", action="store_true", help="print JSON instead of a listing")
    _connection_options(p)
    p.set_defaults(func=_ls)

    p = _add(subparsers, "info", "show a table's size and columns",
             "Show a table's number of rows and each column's name and OMERO type.",
             "  omero-flight info --file-id 12\n"
             "  omero-flight info -a 34 --json\n")
    _table_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    _connection_options(p)
    p.set_defaults(func=_info)

    p = _add(subparsers, "download", "download a table as CSV, Parquet or TileDB",
             "Download a table (or some of its rows and columns) to a new CSV or Parquet "
             "file or TileDB array, streamed batch by batch. The format follows the "
             "target's suffix (.csv: CSV, .parquet/.pq: Parquet, .tiledb: TileDB; any other "
             "suffix is refused) unless --format is given. TileDB needs the tiledb extra.",
             "  omero-flight download --file-id 12 table.csv\n"
             "  omero-flight download -f 12 table.parquet --columns image,area\n"
             "  omero-flight download -f 12 big.csv --query '(area>20) & (image==3)'\n"
             "  omero-flight download -f 12 head.csv --rows 0:100\n"
             "  omero-flight download -f 12 results.tiledb\n")
    _table_options(p)
    p.add_argument("target", help="the file to create (must not exist)")
    p.add_argument("--format", choices=FORMATS, help="file format")
    p.add_argument("--columns", help="comma-separated column names (default: all)")
    p.add_argument("--rows", type=parse_rows, help="START:STOP or a comma-separated list")
    p.add_argument("--query", help="a PyTables condition, e.g. '(area>20)'")
    _connection_options(p)
    p.set_defaults(func=_download)

    p = _add(subparsers, "upload", "upload a CSV or Parquet file as a new table",
             "Upload a CSV or Parquet file as a new OMERO.table linked to one or more "
             "objects; prints the new FileAnnotation id. A CSV file is read in chunks, "
             "so it may be larger than memory.",
             "  omero-flight upload results.csv --name 'Nuclei' --link Image:1\n"
             "  omero-flight upload big.parquet --name big --link Dataset:2 --link Roi:5\n")
    p.add_argument("source", help="a .csv or .parquet file")
    p.add_argument("--name", required=True, help="the new table's name")
    p.add_argument("--link", action="append", type=parse_link, metavar="TYPE:ID",
                   help="object to link the table to (repeatable), e.g. Image:1")
    p.add_argument("--description", help="the table's description")
    p.add_argument("--chunk-size", type=int, help="rows per batch (default: automatic)")
    _connection_options(p)
    p.set_defaults(func=_upload)
