#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
#   scripts/bootstrap.sh          Python deps (uv, locked), Kafka jars (Maven), Debian's
#                                 postgresql (the tracker's task registry)
#   scripts/bootstrap.sh --test   the above, plus the servers the tests start
#                                 (Debian's redis-server, redis-sentinel and prometheus),
#                                 kustomize, Debian's chromium + chromium-driver (the
#                                 console's browser tests), and Debian's musescore3,
#                                 fluidsynth and the Fluid R3 General MIDI SoundFont (the
#                                 checks that real programs read our MIDI files; previews)
#   scripts/bootstrap.sh --bench  the above, plus wrk, vegeta and redis-server for the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
want_test=false
want_bench=false
case "${1:-}" in
  --test) want_test=true ;;
  --bench) want_bench=true ;;
  "") ;;
  *) echo "usage: $0 [--test|--bench]" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

python=${PYTHON:-python3}
"$python" - <<'PY' || { echo "Python >= 3.11 is required (found $($python --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

# uv is run as `python -m uv`: a fresh pip install needs no PATH entry or pyenv shim.
if [[ "$("$python" -m uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  say "installing uv $UV_VERSION"
  "$python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

say "installing Python dependencies from uv.lock"
"$python" -m uv sync --frozen --python "$python" --quiet

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    echo "missing Debian packages: ${missing[*]} (install them as root)" >&2; exit 1
  fi
  local sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  apt_install openjdk-17-jre-headless maven
fi
say "resolving the Apache Kafka jars with Maven (cached outside the repo)"
.venv/bin/python -m devenv.kafka --resolve >/dev/null

# The tests and `make run` start their own PostgreSQL (devenv/postgres.py) from Debian's
# binaries; the cluster the package creates and starts on port 5432 is stopped.
apt_install postgresql
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
    if [[ $status == online* ]]; then
      say "stopping the system PostgreSQL cluster $version/$cluster"
      pg_ctlcluster "$version" "$cluster" stop || true
    fi
  done
fi

if $want_test; then
  apt_install redis-server redis-sentinel prometheus
  # The console's browser tests drive Debian's headless Chromium through its chromedriver.
  apt_install chromium chromium-driver
  # Real programs open our MIDI files (tests/processor/test_real_programs.py): MuseScore 3
  # converts them headless, FluidSynth renders them (and the processor's previews) with
  # Fluid R3: the General MIDI SoundFont Debian ranks first, its samples the best of the
  # packaged ones (TimGM6mb, 6 MB, is the fallback libfluidsynth3 would pull in otherwise).
  apt_install musescore3 fluidsynth fluid-soundfont-gm
  # The Debian packages enable system services; the tests start their own servers.
  for service in redis-server redis-sentinel prometheus; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
      systemctl stop "$service" || true
    fi
  done
  if [[ -x scripts/ensure-kustomize.sh ]]; then
    say "ensuring kustomize"
    scripts/ensure-kustomize.sh >/dev/null
  fi
fi
if $want_bench; then
  apt_install wrk redis-server
  say "ensuring vegeta (open-loop load for the latency target)"
  scripts/ensure-go-tool.sh vegeta >/dev/null
fi
say "ready"
