#!/usr/bin/env bash
# Install zeroc-ice 3.6.5 (what omero-py needs) into the Python given as $1.
#
#   bash scripts/ensure-zeroc-ice.sh [PYTHON]     (default: python3)
#
# PyPI only has the 3.6.5 source, which does not build on Python >= 3.11 as
# published: src/Slice.cpp includes <eval.h> (removed in 3.11) and src/Util.cpp
# reads PyThreadState->frame (now private). This script downloads the source,
# patches both, builds a wheel once (about 8 minutes on 2 cores) and caches it
# (and the source) under ${OMERO_FLIGHT_CACHE:-~/.cache/omero-flight} so later
# runs, and other virtual environments, reuse it in seconds.
#
# Idempotent: does nothing when Ice 3.6 is already importable. Concurrent runs
# wait for each other (flock) instead of building twice.
set -euo pipefail

PY=${1:-python3}
VERSION=3.6.5
CACHE=${OMERO_FLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omero-flight}
WHEELS="$CACHE/wheels"
SDISTS="$CACHE/sdist"

say() { echo "zeroc-ice: $*"; }
die() { echo "zeroc-ice: error: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter '$PY'"
ice_version() { "$PY" -c "import Ice; print(Ice.stringVersion())" 2>/dev/null || true; }

installed=$(ice_version)
if [[ $installed == 3.6.* ]]; then
    say "$installed already installed for $PY"
    exit 0
elif [[ -n $installed ]]; then
    die "$PY has zeroc-ice $installed; omero-py needs 3.6 (uninstall it first)"
fi

# The wheel tag this interpreter accepts, e.g. cp311-cp311-linux_x86_64.
abi=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
plat=$("$PY" -c "import sysconfig; print(sysconfig.get_platform().replace('-', '_').replace('.', '_'))")
tag="$abi-$abi-$plat"
wheel="$WHEELS/zeroc_ice-$VERSION-$tag.whl"

mkdir -p "$WHEELS" "$SDISTS"
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
    say "another build is running; waiting for it ($CACHE/.build.lock)"
    flock 9
fi

check_build_tools() {
    local cxx missing=()
    cxx=$(command -v g++ || command -v c++ || true)
    [[ -n $cxx ]] || missing+=("g++")
    "$PY" -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
        || missing+=("python3-dev (Python.h for $PY)")
    if [[ -n $cxx ]]; then
        for header in openssl/ssl.h bzlib.h; do
            echo "#include <$header>" | "$cxx" -E -x c++ - >/dev/null 2>&1 \
                || missing+=("$header (libssl-dev / libbz2-dev)")
        done
    fi
    if ((${#missing[@]})); then
        die "cannot build $VERSION, missing: ${missing[*]}; on Debian/Ubuntu: apt-get install g++ libssl-dev libbz2-dev python3-dev"
    fi
}

if [[ -f $wheel ]]; then
    say "reusing cached wheel $wheel"
else
    check_build_tools
    say "no cached wheel for $tag; building $VERSION from source (takes several minutes)"
    started=$SECONDS
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    sdist="$SDISTS/zeroc-ice-$VERSION.tar.gz"
    if [[ ! -f $sdist ]]; then
        "$PY" -m pip download --quiet --no-deps --no-binary :all: "zeroc-ice==$VERSION" -d "$work" \
            || die "could not download zeroc-ice==$VERSION from the package index"
        mv "$work/zeroc-ice-$VERSION.tar.gz" "$sdist"
    fi
    tar -xzf "$sdist" -C "$work"
    src="$work/zeroc-ice-$VERSION"
    sed -i 's|^#include <eval.h>|/* <eval.h> removed in Python 3.11 */|' "$src/src/Slice.cpp"
    sed -i 's|PyThreadState_GET()->frame|PyEval_GetFrame()|g' "$src/src/Util.cpp"
    ! grep -q "^#include <eval.h>" "$src/src/Slice.cpp" || die "patch of src/Slice.cpp did not apply"
    grep -q "PyEval_GetFrame()" "$src/src/Util.cpp" || die "patch of src/Util.cpp did not apply"
    "$PY" -m pip wheel --quiet --no-deps -w "$work/dist" "$src" >"$work/build.log" 2>&1 \
        || { tail -n 40 "$work/build.log" >&2; die "build failed (last lines above)"; }
    built=$(find "$work/dist" -maxdepth 1 -name "zeroc_ice-$VERSION-*.whl" -print -quit)
    [[ -n $built ]] || die "pip wheel produced no wheel"
    # Move into the cache only when complete, under the name this interpreter looks for.
    mv "$built" "$wheel.part" && mv "$wheel.part" "$wheel"
    say "built $wheel in $((SECONDS - started))s"
fi

say "installing $(basename "$wheel") into $PY"
"$PY" -m pip install --quiet --no-deps "$wheel"
installed=$(ice_version)
[[ $installed == 3.6.* ]] || die "installed $wheel but 'import Ice' fails for $PY"
say "$installed ready"
