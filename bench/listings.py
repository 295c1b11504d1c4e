"""Listings at production shape, and the first batch of a one-row read, side by side.

One run starts the OMERO stand-in (its own process) and seeds it through the
real API at production shape: two groups, images in both, ``tables`` table
files each linked to one image, and ``other_links`` image links to files that
are not tables (one attachment each, as in the issue's measurement); one real
table for reads. Then, as one user
who sees both groups, it measures, interleaved and repeated:

* listings through the bridge (``list_tables`` action, OMERO backend over
  Ice): the latency of the first page, and of a page deep in the listing, at
  the client's page size, and all pages of a listing, for everything, by kind
  (every table linked to an Image) and by one Image;
* the same listings as the queries the bridge sends, run directly with
  omero-py in this process: new (one page: ``listing.table_page``) against the
  old shape (every table or every image link in one unpaged query, then
  ``in (:ids)`` lists of all of them), with the largest id list each sends;
* a one-row read (``get_flight_info`` then ``do_get``; the first batch) through a
  bridge that keeps the planned table open for its ``do_get`` (one open per read)
  and one that opens it again (two), counting the opens the stand-in saw; on a
  small catalog, then on the production-shaped one (where the stand-in's
  lookups, full scans in Python, cost far more than PostgreSQL's indexed ones).

The stand-in answers HQL in Python over its whole catalog, so its absolute
figures are far above PostgreSQL's; the ratios and the id lists are what carry
over (a real OMERO refuses an id list above 32,767: PostgreSQL's bind limit).

``python -m bench.listings [--smoke]`` runs it alone; ``python -m bench`` with
the other benchmarks.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.timing import Timing, interleaved

USER, PASSWORD = "lister", "lister-password-1"
GROUPS = ("listing-lab-a", "listing-lab-b")
BATCH = 1_000  # objects per saveAndReturnIds call when seeding
PG_BIND_LIMIT = 32_767


@dataclass
class Plan:
    tables: int  # table files, each linked to one image
    other_links: int  # image links to annotations of files that are not tables
    images: int
    reps: int
    page_size: int = 1_000  # the client's page size (flight_client.reading.LIST_PAGE_SIZE)


FULL = Plan(tables=5_000, other_links=50_000, images=1_000, reps=3)
SMOKE = Plan(tables=60, other_links=500, images=20, reps=2, page_size=25)


# -- seeding ---------------------------------------------------------------------------


def _save_ids(update: Any, objects: list[Any], ctx: dict[str, str]) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(objects), BATCH):
        ids += [int(i) for i in update.saveAndReturnIds(objects[start:start + BATCH], ctx)]
    return ids


def _files_with_annotations(update: Any, count: int, mimetype: str, prefix: str,
                            ctx: dict[str, str]) -> list[int]:
    """``count`` OriginalFiles (no bytes: listings never read them) and their FileAnnotations."""
    import omero.model
    from omero.rtypes import rlong, rstring

    files = []
    for i in range(count):
        f = omero.model.OriginalFileI()
        f.name, f.path = rstring(f"{prefix}-{i}"), rstring("/bench/")
        f.mimetype, f.size = rstring(mimetype), rlong(0)
        files.append(f)
    file_ids = _save_ids(update, files, ctx)
    annotations = []
    for file_id in file_ids:
        a = omero.model.FileAnnotationI()
        a.file = omero.model.OriginalFileI(file_id, False)
        annotations.append(a)
    return _save_ids(update, annotations, ctx)


def _links(update: Any, pairs: list[tuple[int, int]], ctx: dict[str, str]) -> None:
    import omero.model

    links = []
    for image, annotation in pairs:
        link = omero.model.ImageAnnotationLinkI()
        link.link(omero.model.ImageI(image, False), omero.model.FileAnnotationI(annotation, False))
        links.append(link)
    _save_ids(update, links, ctx)


def seed_reader(standin: Any) -> int:
    """The user, in both groups, and the real table one-row reads read (its file id)."""
    seeder = standin.seed
    for group in GROUPS:
        seeder.group(group, "rwr---")
    seeder.user(USER, PASSWORD, groups=list(GROUPS))
    frame = pd.DataFrame({"id": range(10_000), "x": [i / 3 for i in range(10_000)]})
    return seeder.table(USER, GROUPS[0], frame, "one-row reads").file_id


def seed(standin: Any, plan: Plan) -> dict[str, Any]:
    """Production shape, half in each group; returns the ids the measurements use."""
    import omero.model
    from omero.rtypes import rstring

    seeder = standin.seed
    update = seeder.client(USER).sf.getUpdateService()
    started = time.perf_counter()
    images: dict[str, list[int]] = {}
    for g, group in enumerate(GROUPS):
        ctx = {"omero.group": str(seeder.group_ids[group])}
        objs = []
        for i in range(plan.images // 2):
            image = omero.model.ImageI()
            image.name = rstring(f"image {g}-{i}")
            objs.append(image)
        images[group] = _save_ids(update, objs, ctx)
        tables = _files_with_annotations(update, plan.tables // 2, "OMERO.tables",
                                         f"table-{g}", ctx)
        _links(update, [(images[group][i % len(images[group])], a)
                        for i, a in enumerate(tables)], ctx)
        attachments = _files_with_annotations(update, plan.other_links // 2, "text/csv",
                                              f"attachment-{g}", ctx)
        _links(update, [(images[group][(i * 7) % len(images[group])], a)
                        for i, a in enumerate(attachments)], ctx)
    return {"image": images[GROUPS[0]][0], "seconds": round(time.perf_counter() - started, 1)}


# -- the old listing's queries, as the bridge sent them before paging -------------------


def old_listing(query: Any, object_type: str | None, object_id: int | None) -> tuple[int, int]:
    """(tables, largest id list) by the old shape: unpaged, filtered in Python."""
    from omero.rtypes import unwrap

    from flight_server.backends.omero.calls import ALL_GROUPS
    from flight_server.backends.omero.lookup import LINK_KINDS, query_params

    details = "join fetch f.details.owner join fetch f.details.group"
    largest = 0
    if object_type is None:
        annotations = query.findAllByQuery(
            f"select fa from FileAnnotation fa join fetch fa.file f {details} "
            "where f.mimetype = :mimetype order by fa.id",
            query_params(mimetype="OMERO.tables"), ALL_GROUPS)
    else:
        hql = f"select l.child.id from {object_type}AnnotationLink l"
        params = query_params()
        if object_id is not None:
            hql += " where l.parent.id = :id"
            params = query_params(id=object_id)
        rows = query.projection(hql, params, ALL_GROUPS)
        candidates = sorted({unwrap(r[0]) for r in rows if r and r[0] is not None})
        largest = len(candidates)
        annotations = query.findAllByQuery(
            f"select fa from FileAnnotation fa join fetch fa.file f {details} "
            "where fa.id in (:ids) and f.mimetype = :mimetype order by fa.id",
            query_params(ids=candidates, mimetype="OMERO.tables"),
            ALL_GROUPS) if candidates else []
    file_ids = sorted({unwrap(a.getFile().id) for a in annotations})
    if file_ids:
        query.projection("select f.id from OriginalFile f where f.id in (:ids)",
                         query_params(ids=file_ids), ALL_GROUPS)
        largest = max(largest, len(file_ids))
        ids = [unwrap(a.id) for a in annotations]
        for kind in LINK_KINDS:
            query.projection(f"select l.parent.id, l.child.id from {kind}AnnotationLink l "
                             "where l.child.id in (:ids)", query_params(ids=ids), ALL_GROUPS)
    return len(annotations), largest


def new_listing(query: Any, object_type: str | None, object_id: int | None,
                page_size: int) -> tuple[int, int]:
    """(tables, pages) by the new shape: every page, each one bounded query."""
    from flight_server.backends.omero.listing import table_page
    from flight_server.backends.paging import position_of

    tables, pages, after = 0, 0, -1
    while True:
        page = table_page(query, object_type, object_id, page_size, after)
        tables, pages = tables + len(page.tables), pages + 1
        if page.next_page_token is None:
            return tables, pages
        after = position_of(page.next_page_token)


# -- measurements ----------------------------------------------------------------------


def _bridge(standin: Any, lifetime: float) -> tuple[Any, Any]:
    from flight_server.backends.omero import OmeroBackend
    from flight_server.service import FlightService

    backend = OmeroBackend(standin.host, standin.port, planned_lifetime=lifetime)
    return backend, FlightService(backend, "grpc://127.0.0.1:0")


def _connect(server: Any) -> Any:
    import flight_client

    return flight_client.connect_to_omero(server="127.0.0.1", port=server.port, username=USER,
                                          password=PASSWORD, interactive=False,
                                          keep_alive=False, allow_token=False)


def _page(conn: Any, size: int, token: str | None = None, **where: Any) -> dict[str, Any]:
    extra = {"page_token": token} if token else {}
    return conn.transport.action("list_tables", **where, page_size=size, **extra)


def _all_pages(conn: Any, size: int, **where: Any) -> int:
    tables, token = 0, None
    while True:
        result = _page(conn, size, token, **where)
        tables += len(result["tables"])
        token = result["next_page_token"]
        if token is None:
            return tables


def measure_listings(conn: Any, query: Any, plan: Plan, image: int) -> dict[str, Any]:
    wheres = {"everything": {}, "by kind (Image)": {"object_type": "Image"},
              "by one Image": {"object_type": "Image", "object_id": image}}
    out: dict[str, Any] = {}
    for label, where in wheres.items():
        print(f"listing {label}:", flush=True)
        first = _page(conn, plan.page_size, **where)
        deep_token = first["next_page_token"]
        for _ in range(2):  # a page deep in the listing: after the second
            if deep_token is None:
                break
            deep_token = _page(conn, plan.page_size, deep_token, **where)["next_page_token"]
        kind, object_id = where.get("object_type"), where.get("object_id")
        contenders = {
            "bridge: first page": lambda w=where: _page(conn, plan.page_size, **w),
            "bridge: all pages": lambda w=where: _all_pages(conn, plan.page_size, **w),
            "queries, new: all pages": lambda k=kind, o=object_id:
                new_listing(query, k, o, plan.page_size),
            "queries, old shape: unpaged": lambda k=kind, o=object_id:
                old_listing(query, k, o),
        }
        if deep_token is not None:
            contenders["bridge: a deep page"] = lambda w=where, t=deep_token: _page(
                conn, plan.page_size, t, **w)
        reps = {name: plan.reps for name in contenders}
        timings = interleaved(contenders, reps)
        tables_new, pages = new_listing(query, kind, object_id, plan.page_size)
        tables_old, largest = old_listing(query, kind, object_id)
        if tables_new != tables_old:
            raise RuntimeError(f"{label}: the new listing has {tables_new} tables, the old "
                               f"{tables_old}")
        out[label] = {"tables": tables_new, "pages": pages,
                      "old_largest_id_list": largest,
                      "old_refused_by_postgresql": largest > PG_BIND_LIMIT,
                      "new_largest_id_list": min(plan.page_size, tables_new),
                      "timings": {n: t.as_json() for n, t in timings.items()},
                      "_cells": {n: t for n, t in timings.items()}}
    return out


def _one_row(conn: Any, file_id: int, row: int) -> tuple[float, float]:
    """(get_flight_info seconds, do_get seconds to the first batch) of a one-row read."""
    import pyarrow.flight as flight

    from flight_protocol.messages import RowRange, TableTicket

    ticket = TableTicket(file_id=file_id, rows=RowRange(row, row + 1))
    client, options = conn.transport._client(), conn.transport.options()
    start = time.perf_counter()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(ticket.encode()), options)
    planned = time.perf_counter()
    reader = client.do_get(info.endpoints[0].ticket, options)
    batch = reader.read_chunk().data
    first = time.perf_counter()
    reader.read_all()
    if batch.num_rows != 1:
        raise RuntimeError(f"a one-row read returned {batch.num_rows} rows")
    return planned - start, first - planned


def measure_one_row(standin: Any, file_id: int, reps: int) -> dict[str, Any]:
    """Both bridges side by side, reads interleaved (one of each in turn)."""
    print("one-row read (get_flight_info, then do_get to the first batch):", flush=True)
    bridges = {"kept for do_get (one open)": 5.0, "opened again (two opens)": 0.0}
    running = {label: _bridge(standin, lifetime) for label, lifetime in bridges.items()}
    cells = {label: {"info": Timing(), "get": Timing(), "total": Timing()} for label in bridges}
    opens = dict.fromkeys(bridges, 0)
    try:
        conns = {label: _connect(server) for label, (_, server) in running.items()}
        for conn in conns.values():
            _one_row(conn, file_id, 0)  # warm: session, connection
        for i in range(max(reps * 10, 20)):
            for label, conn in conns.items():
                before = standin.table_opens(file_id)
                info_s, get_s = _one_row(conn, file_id, 1 + i)
                opens[label] += standin.table_opens(file_id) - before
                for name, value in (("info", info_s), ("get", get_s), ("total", info_s + get_s)):
                    cells[label][name].runs.append(value)
        for conn in conns.values():
            conn.shutdown()
    finally:
        for backend, server in running.values():
            server.shutdown()
            backend.close()
    results: dict[str, Any] = {}
    for label, cell in cells.items():
        per_read = opens[label] / len(cell["total"].runs)
        results[label] = {"get_flight_info": cell["info"].as_json(),
                          "do_get_first_batch": cell["get"].as_json(),
                          "total": cell["total"].as_json(), "opens_per_read": per_read,
                          "_cells": cell}
        print(f"  {label:30} info {cell['info'].median * 1e3:6.1f} ms, first batch "
              f"{cell['get'].median * 1e3:6.1f} ms, total {cell['total'].median * 1e3:6.1f} ms, "
              f"{per_read:g} opens per read", flush=True)
    return results


def _print(listings: dict[str, Any], reads: dict[str, dict[str, Any]], plan: Plan) -> None:
    print(f"\nListings ({plan.tables:,} tables, {plan.other_links:,} other image links, "
          f"2 groups; page size {plan.page_size:,}; seconds, median (min-max))")
    for label, fig in listings.items():
        print(f"  {label}: {fig['tables']:,} tables in {fig['pages']} pages; largest id list "
              f"old {fig['old_largest_id_list']:,}, new {fig['new_largest_id_list']:,}")
        for name, timing in fig["_cells"].items():
            print(f"    {name:32} {timing.cell()}")
        new = fig["_cells"]["queries, new: all pages"].median
        old = fig["_cells"]["queries, old shape: unpaged"].median
        page = fig["_cells"]["bridge: first page"].median
        print(f"    old shape / new (all pages): {old / new:.2f}x; a page through the "
              f"bridge: {page * 1e3:.0f} ms")
    print("\nOne-row read, ms (median)      get_flight_info  do_get 1st batch     total")
    for catalog, figures in reads.items():
        print(f" {catalog}:")
        for label, fig in figures.items():
            cells = fig["_cells"]
            print(f"  {label:30} {cells['info'].median * 1e3:12.1f} "
                  f"{cells['get'].median * 1e3:16.1f} {cells['total'].median * 1e3:10.1f}")
        kept = figures["kept for do_get (one open)"]["_cells"]
        again = figures["opened again (two opens)"]["_cells"]
        print(f"  first batch {again['get'].median / kept['get'].median:.1f}x sooner kept; "
              f"whole read {again['total'].median / kept['total'].median:.2f}x faster")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "_cells"}
    return value


def run(plan: Plan, out: Path, command: str = "python -m bench.listings") -> dict[str, Any]:
    from tests.standin.fixtures import start_standin

    with tempfile.TemporaryDirectory(prefix="omero-flight-listings-") as tmp, \
            start_standin(Path(tmp) / "standin") as standin:
        read_file = seed_reader(standin)
        reads_small = measure_one_row(standin, read_file, plan.reps)
        print(f"seeding the stand-in: {plan.tables:,} tables, {plan.other_links:,} other "
              f"image links, {plan.images:,} images in 2 groups ...", flush=True)
        seeded = seed(standin, plan)
        print(f"  seeded in {seeded['seconds']} s", flush=True)
        direct = standin.login(USER, PASSWORD)
        backend, server = _bridge(standin, 5.0)
        try:
            with _connect(server) as conn:
                listings = measure_listings(conn, direct.sf.getQueryService(), plan,
                                            seeded["image"])
        finally:
            server.shutdown()
            backend.close()
            direct.closeSession()
        reads = measure_one_row(standin, read_file, plan.reps)
    _print(listings, {"small catalog": reads_small, "production catalog": reads}, plan)
    result = {"benchmark": "listings", "command": command, "machine": platform.node(),
              "python": platform.python_version(), "plan": plan.__dict__,
              "seed_seconds": seeded["seconds"], "listings": _strip(listings),
              "one_row_read": {"small catalog": _strip(reads_small),
                               "production catalog": _strip(reads)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nfigures written to {out}")
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.listings")
    parser.add_argument("--smoke", action="store_true", help="a small catalog (CI)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = Path(__file__).parent / "results"
    default = results / "smoke" / "listings.json" if args.smoke else results / "listings.json"
    run(SMOKE if args.smoke else FULL, args.out or default,
        "python -m bench.listings" + (" --smoke" if args.smoke else ""))
