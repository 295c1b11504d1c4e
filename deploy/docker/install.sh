#!/usr/bin/env bash
# The image's build stage: omero-flight with the OMERO backend in a new virtual
# environment. Run from the root of the source tree (the Dockerfile's /src):
#
#   bash deploy/docker/install.sh PREFIX [ICE_WHEEL]
#
# ICE_WHEEL (optional) is a prebuilt zeroc-ice 3.6.5 wheel (URL or path); without it
# scripts/ensure-zeroc-ice.sh builds one, or reuses its cached build.
set -euo pipefail

prefix=${1:?usage: install.sh PREFIX [ICE_WHEEL]}
ice_wheel=${2:-}
python=${PYTHON:-python3}

"$python" -m venv "$prefix"
py="$prefix/bin/python"
"$py" -m pip install --quiet --upgrade pip
if [[ -n $ice_wheel ]]; then
    "$py" -m pip install --quiet --no-deps "$ice_wheel"
fi
bash scripts/ensure-zeroc-ice.sh "$py"
"$py" -m pip install --quiet ".[omero]"
# The installed bridge imports its OMERO backend and answers its command line.
"$py" -c "import flight_server.backends.omero, flight_server.health, tables"
"$prefix/bin/omero-flight" serve --help >/dev/null
echo "install.sh: omero-flight installed in $prefix"
