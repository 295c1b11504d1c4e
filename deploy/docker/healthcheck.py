"""The image's HEALTHCHECK: exit 0 when the bridge's /readyz answers 200.

Reads the same OMERO_FLIGHT_HOST / OMERO_FLIGHT_HEALTH_PORT the server does; a
wildcard listen address is reached on loopback.
"""

import os
import sys
import urllib.error
import urllib.request

host = os.environ.get("OMERO_FLIGHT_HOST", "127.0.0.1")
host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
port = os.environ.get("OMERO_FLIGHT_HEALTH_PORT", "8816")
url = f"http://[{host}]:{port}/readyz" if ":" in host else f"http://{host}:{port}/readyz"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except (OSError, urllib.error.URLError) as exc:
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
