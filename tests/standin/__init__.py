"""An OMERO stand-in server for tests: real Ice, real omero-py clients, OMERO.tables' own engine.

Run it by hand::

    python -m tests.standin.server --data-dir /tmp/standin --port 0 --tcp-port 0 \\
        --root-password omero --session-timeout 600 --ready-file /tmp/standin/ready.json

It prints ``OMERO stand-in ready {"host": ..., "port": ..., "tcp_port": ...}``.
``port`` is SSL (``omero.client("127.0.0.1", port)``, what omero2pandas and
BlitzGateway use), ``tcp_port`` is plain TCP (``omero.client("tcp://127.0.0.1:N")``).
Log in as ``root`` with the root password, then seed through the real API
(``tests.standin.seed.Seeder``). Open tables are listed in the status file
(``<data dir>/standin-status.json``, ``open_tables``). File bytes and tables
live at ``flight_server.repository.original_file_path(data_dir, file_id)``.

Modules, one job each:

- ``server``: process entry point, Ice communicator and adapter, status file.
- ``router``: Glacier2 router (createSession, destroySession, dropped connections).
- ``sessions``: log in, join by key, close, idle expiry.
- ``factory``: the per-client ServiceFactory and the services it hands out.
- ``services``: IQuery, IUpdate, IAdmin, ISession, IConfig.
- ``hql``: the subset of HQL answered (anything else: ApiUsageException).
- ``tables``: SharedResources and omero-py's ``TableI`` over ``HdfStorage``.
- ``files``: RawFileStore over the binary repository.
- ``catalog`` / ``model``: object store with OMERO permissions; omero.model conversion.
- ``dispatch`` / ``fallback``: error translation; unimplemented operations fail loudly.
- ``seed`` / ``fixtures``: seeding API and pytest fixtures.
"""
