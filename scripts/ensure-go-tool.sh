#!/usr/bin/env bash
# Install a pinned Go tool into a per-user cache (outside the repo) if it is missing, then
# print its path on stdout. Everything else goes to stderr.
#
# Why `go install`: Debian packages neither tool at these versions, prebuilt release
# binaries cannot be downloaded on the project's machines, and the Go module proxy serves
# the exact pinned version with checksums verified against the Go checksum database.
#
# Usage: path="$(scripts/ensure-go-tool.sh kustomize)" && "$path" build deploy/k8s/overlays/dev
#        path="$(scripts/ensure-go-tool.sh vegeta)"    (the ingest benchmark's open-loop load)
set -euo pipefail

tool="${1:-}"
case "$tool" in
  # v5.8.3 needs Go >= 1.27; v5.8.2 builds with the Go 1.26 the machines have.
  kustomize) module="sigs.k8s.io/kustomize/kustomize/v5"; version="v5.8.2" ;;
  vegeta) module="github.com/tsenart/vegeta/v12"; version="v12.13.0" ;;
  *) echo "usage: $0 kustomize|vegeta" >&2; exit 2 ;;
esac

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/suno-midi"
bin_dir="$cache_root/$tool/$version"
binary="$bin_dir/$tool"

installed() {
  # The module version go install stamped into the binary; nothing else counts.
  [[ -x "$binary" ]] && go version -m "$binary" 2>/dev/null \
    | awk -v m="$module" -v v="$version" '$1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

if ! command -v go >/dev/null 2>&1; then
  echo "ensure-go-tool: Go is not installed, and $tool $version is built from source with" \
    "'go install'. Install Go >= 1.26 (Debian's golang-go is older) and run this again." >&2
  exit 1
fi

if installed; then
  echo "$binary"
  exit 0
fi

mkdir -p "$bin_dir"
# One installer at a time (parallel test runs share the cache).
exec 9>"$bin_dir/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if installed; then
  echo "$binary"
  exit 0
fi

staging="$(mktemp -d "$bin_dir/.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

echo "ensure-go-tool: building $tool $version with $(go version)" >&2
# GOTOOLCHAIN=local: never fetch another Go toolchain; GOFLAGS=-mod=mod: ignore any
# go.work or vendor directory of the current directory; run from the staging directory
# so no go.mod around us is consulted.
if ! (cd "$staging" && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$staging" \
  go install "$module@$version" >&2); then
  echo "ensure-go-tool: 'go install $module@$version' failed (see above)." \
    "It needs the Go module proxy (GOPROXY) to be reachable." >&2
  exit 1
fi

mv -f "$staging/$tool" "$binary"
if ! installed; then
  echo "ensure-go-tool: built $binary but it does not report $module $version" >&2
  exit 1
fi
echo "$binary"
