"""SharedResources and the Table servant: omero-py's own ``omero.tables.TableI`` over HdfStorage.

``TableI`` is the servant OMERO.tables itself runs. It needs three things from
its server, which the stand-in answers in-process: a server context (logging,
a stop event, the communicator), the client's ServiceFactory (``canUpdate``
and a RawFileStore to record the file's new size and hash on close) and a
storage factory (``omero.hdfstorageV2.HDFLIST``, the real one).
"""

from __future__ import annotations

import posixpath
import threading
import time
from typing import TYPE_CHECKING, Any

import Ice
import omero
import omero.grid
import omero.hdfstorageV2
import omero.tables
from omero.rtypes import unwrap

from tests.standin.catalog import PermissionDenied, Record
from tests.standin.dispatch import sync
from tests.standin.fallback import answers_unimplemented
from tests.standin.files import file_path, refresh_size_and_hash
from tests.standin.model import to_model

if TYPE_CHECKING:
    from tests.standin.factory import ServiceFactoryI

TABLES_MIMETYPE = "OMERO.tables"


class _ServerContext:
    """The parts of omero.util.ServerContext that TableI uses."""

    def __init__(self, communicator: Any) -> None:
        self.communicator = communicator
        self.stop_event = threading.Event()

    def getSession(self) -> Any:  # noqa: N802 - omero-py's name
        raise omero.ApiUsageException(None, None, "the stand-in gives tables loaded files")


class _InProcessFactory:
    """What TableI asks of the client's ServiceFactory, answered without a round trip."""

    def __init__(self, sf: ServiceFactoryI, record: Record) -> None:
        self.sf = sf
        self.record = record

    def getAdminService(self) -> _InProcessFactory:  # noqa: N802
        return self

    def canUpdate(self, obj: Any, ctx: Any = None) -> bool:  # noqa: N802
        return self.sf.catalog.can_write(self.sf.user, self.record)

    def ice_getIdentity(self) -> Any:  # noqa: N802
        return self.sf.identity

    def createRawFileStore(self, ctx: Any = None) -> _InProcessFileUpdate:  # noqa: N802
        return _InProcessFileUpdate(self.sf, self.record)


class _InProcessFileUpdate:
    """The RawFileStore calls TableI makes on close: refresh the OriginalFile's size and hash."""

    def __init__(self, sf: ServiceFactoryI, record: Record) -> None:
        self.sf = sf
        self.record = record

    def setFileId(self, file_id: int, ctx: Any = None) -> None:  # noqa: N802
        pass

    def truncate(self, size: int, ctx: Any = None) -> bool:
        return False

    def write(self, buf: Any, position: int, length: int, ctx: Any = None) -> None:
        pass

    def save(self, ctx: Any = None) -> Any:
        refresh_size_and_hash(self.sf.catalog, self.sf.server.data_dir, self.record)
        return to_model(self.sf.catalog, self.record)

    def close(self, ctx: Any = None) -> None:
        pass


class StandinTable(omero.tables.TableI):
    """omero-py's TableI, reporting opens and closes to the stand-in's registry."""

    def __init__(self, sf: ServiceFactoryI, record: Record, current: Any) -> None:
        self.sf = sf
        self.record = record
        self.opened = time.time()
        super().__init__(
            _ServerContext(current.adapter.getCommunicator()),
            to_model(sf.catalog, record),
            str(file_path(sf.server.data_dir, record.id)),
            _InProcessFactory(sf, record),
            omero.hdfstorageV2.HDFLIST,
            uuid=Ice.generateUUID(),
            call_context=current.ctx,
            adapter=current.adapter,
        )

    # Test hook (tests.standin.faults): count these calls, make them hang or fail on request.
    def addData(self, *args: Any) -> Any:  # noqa: N802 - omero-py's name
        self.sf.server.faults.before("addData")
        return super().addData(*args)

    def read(self, *args: Any) -> Any:
        self.sf.server.faults.before("read")
        return super().read(*args)

    def slice(self, *args: Any) -> Any:
        self.sf.server.faults.before("slice")
        return super().slice(*args)

    def getWhereList(self, *args: Any) -> Any:  # noqa: N802 - omero-py's name
        self.sf.server.faults.before("getWhereList")
        return super().getWhereList(*args)

    def close(self, current: Any = None) -> None:
        try:
            if not self._closed:
                super().close(current)
        finally:
            self.sf.server.table_closed(self)

    def delete(self, current: Any = None) -> None:
        """Close and delete the table's OriginalFile, its annotations and their links."""
        self.assert_write()
        self.close(current)
        self.sf.server.delete_file(self.record)


@answers_unimplemented
class SharedResourcesI(omero.grid.SharedResources):
    """SharedResources: one repository, tables enabled, newTable and openTable."""

    def __init__(self, sf: ServiceFactoryI) -> None:
        self.sf = sf

    @sync
    def repositories(self, current: Any = None) -> Any:
        self.sf.check(current)
        repo = self.sf.catalog.get("OriginalFile", self.sf.server.repository_id)
        return omero.grid.RepositoryMap([to_model(self.sf.catalog, repo)], [None])

    @sync
    def areTablesEnabled(self, current: Any = None) -> bool:  # noqa: N802
        self.sf.check(current)
        return True

    @sync
    def newTable(self, repo_id: int, path: str, current: Any = None) -> Any:  # noqa: N802
        self.sf.check(current)
        if repo_id != self.sf.server.repository_id:
            raise omero.ApiUsageException(None, None, f"no repository {repo_id}")
        directory, name = posixpath.split(path)
        record = self.sf.catalog.add(
            "OriginalFile", self.sf.user.id, self.sf.write_group(current),
            name=name, path=(directory or "/").rstrip("/") + "/", mimetype=TABLES_MIMETYPE,
            size=0)
        return self._open(record, current)

    @sync
    def openTable(self, file: Any, current: Any = None) -> Any:  # noqa: N802
        self.sf.check(current)
        if file is None or file.id is None:
            raise omero.ApiUsageException(None, None, "openTable needs an OriginalFile with id")
        file_id = unwrap(file.id)
        record = self.sf.catalog.get("OriginalFile", file_id)
        if record is None:
            raise omero.ValidationException(None, None, f"no OriginalFile:{file_id}")
        if not self.sf.catalog.can_read(self.sf.user, record, self.sf.read_group(current)):
            raise PermissionDenied(
                f"user {self.sf.user.name} cannot read OriginalFile:{file_id} in group "
                f"{self.sf.catalog.groups[record.group_id].name}")
        if not file_path(self.sf.server.data_dir, file_id).exists():
            raise omero.ValidationException(
                None, None, f"OriginalFile:{file_id} has no table file in the repository")
        return self._open(record, current)

    def _open(self, record: Record, current: Any) -> Any:
        table = StandinTable(self.sf, record, current)
        prx = current.adapter.add(table, table.id)
        self.sf.server.table_opened(table)
        return omero.grid.TablePrx.uncheckedCast(prx)

