#!/usr/bin/env bash
# The pinned kustomize's path (built on first use): see ensure-go-tool.sh.
# Usage: path="$(scripts/ensure-kustomize.sh)" && "$path" build deploy/k8s/overlays/dev
exec "$(dirname "$0")/ensure-go-tool.sh" kustomize
