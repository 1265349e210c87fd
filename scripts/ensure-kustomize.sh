#!/usr/bin/env bash
# Install the pinned kustomize into a per-user cache (outside the repo) if it is missing,
# then print its path on stdout. Everything else goes to stderr.
#
# Why `go install`: Debian has no kustomize package, prebuilt release binaries cannot be
# downloaded on the project's machines, and the Go module proxy serves the exact pinned
# version with checksums verified against the Go checksum database.
#
# Usage: path="$(scripts/ensure-kustomize.sh)" && "$path" build deploy/k8s/overlays/dev
set -euo pipefail

# v5.8.3 needs Go >= 1.27; v5.8.2 builds with the Go 1.26 the machines have.
KUSTOMIZE_VERSION="v5.8.2"
KUSTOMIZE_MODULE="sigs.k8s.io/kustomize/kustomize/v5"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/suno-midi"
bin_dir="$cache_root/kustomize/$KUSTOMIZE_VERSION"
binary="$bin_dir/kustomize"

installed_version() {
    # `kustomize version` prints e.g. "v5.8.2"; anything else counts as not installed.
    "$binary" version 2>/dev/null | head -n 1 || true
}

if [[ -x "$binary" && "$(installed_version)" == "$KUSTOMIZE_VERSION" ]]; then
    echo "$binary"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "ensure-kustomize: Go is not installed, and kustomize $KUSTOMIZE_VERSION is built" \
        "from source with 'go install'. Install Go >= 1.26 (what that version's go.mod" \
        "declares; Debian's golang-go is older) and run this script again." >&2
    exit 1
fi

mkdir -p "$bin_dir"
# One installer at a time (parallel test runs share the cache).
exec 9>"$bin_dir/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if [[ -x "$binary" && "$(installed_version)" == "$KUSTOMIZE_VERSION" ]]; then
    echo "$binary"
    exit 0
fi

staging="$(mktemp -d "$bin_dir/.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

echo "ensure-kustomize: building kustomize $KUSTOMIZE_VERSION with $(go version)" >&2
# GOTOOLCHAIN=local: never fetch another Go toolchain; GOFLAGS=-mod=mod: ignore any
# go.work or vendor directory of the current directory; run from the staging directory
# so no go.mod around us is consulted.
if ! (cd "$staging" && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$staging" \
    go install "$KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION" >&2); then
    echo "ensure-kustomize: 'go install $KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION' failed (see above)." \
        "It needs the Go module proxy (GOPROXY) to be reachable." >&2
    exit 1
fi

mv -f "$staging/kustomize" "$binary"
if [[ "$(installed_version)" != "$KUSTOMIZE_VERSION" ]]; then
    echo "ensure-kustomize: built $binary but it reports '$(installed_version)'," \
        "not $KUSTOMIZE_VERSION" >&2
    exit 1
fi
echo "$binary"
