#!/usr/bin/env bash
# Install zeroc-ice 3.6.5 (what omero-py needs) into the Python given as $1.
#
# PyPI only has the 3.6.5 source, which does not build on Python >= 3.11 as
# published: src/Slice.cpp includes <eval.h> (removed in 3.11) and src/Util.cpp
# reads PyThreadState->frame (now private). This script downloads the source,
# patches both, builds a wheel once (about 7 minutes on 2 cores) and caches it
# under ${OMERO_FLIGHT_CACHE:-~/.cache/omero-flight}/wheels so later runs reuse it.
set -euo pipefail

PY=${1:-python3}
VERSION=3.6.5
CACHE=${OMERO_FLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omero-flight}
WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"

if "$PY" -c "import Ice, sys; sys.exit(0 if Ice.stringVersion().startswith('3.6') else 1)" 2>/dev/null; then
    echo "zeroc-ice: $("$PY" -c 'import Ice; print(Ice.stringVersion())') already installed"
    exit 0
fi

tag=$("$PY" -c "import sys, sysconfig; print(f'cp{sys.version_info[0]}{sys.version_info[1]}-' + sysconfig.get_platform().replace('-', '_').replace('.', '_'))")
wheel=$(ls "$WHEELS"/zeroc_ice-$VERSION-*"${tag%%-*}"*.whl 2>/dev/null | head -n 1 || true)

if [ -z "$wheel" ]; then
    echo "zeroc-ice: no cached wheel for $tag; building $VERSION from source (takes several minutes)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "zeroc-ice==$VERSION" -d "$work"
    tar -xzf "$work"/zeroc-ice-$VERSION.tar.gz -C "$work"
    src="$work/zeroc-ice-$VERSION"
    sed -i 's|^#include <eval.h>|/* <eval.h> removed in Python 3.11 */|' "$src/src/Slice.cpp"
    sed -i 's|PyThreadState_GET()->frame|PyEval_GetFrame()|g' "$src/src/Util.cpp"
    grep -q "PyEval_GetFrame()" "$src/src/Util.cpp" || { echo "zeroc-ice: patch of Util.cpp did not apply" >&2; exit 1; }
    "$PY" -m pip wheel --quiet --no-deps -w "$WHEELS" "$src"
    wheel=$(ls "$WHEELS"/zeroc_ice-$VERSION-*.whl | head -n 1)
fi

echo "zeroc-ice: installing $wheel"
"$PY" -m pip install --quiet --no-deps "$wheel"
"$PY" -c "import Ice; print('zeroc-ice:', Ice.stringVersion(), 'ready')"
