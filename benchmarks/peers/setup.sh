#!/usr/bin/env bash
# Create the peer virtual environments used by benchmarks/bench_peers.py.
#
# Usage: bash benchmarks/peers/setup.sh [DIR]      (DIR defaults to .venv-peers in the repo root)
#
# DIR/rejax : rejax 0.1.x with gymnax<1.0 (rejax unpacks a 5-tuple from gymnax's step, which
#             gymnax 1.0 changed), and whatever jax/flax it resolves to.
# DIR/sb3   : torch==2.13.0 (the CPU build; an unpinned torch pulls a multi-GB CUDA build),
#             stable-baselines3 and sbx-rl (SBX, the JAX port of SB3).
# Each environment is independent: a failure in one is reported and the others still install.
# Versions installed are written to DIR/<name>/versions.txt.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${1:-$ROOT/.venv-peers}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
status=0

make_venv() {  # name, then pip requirement groups (each group is one pip install call)
    local name="$1"; shift
    local venv="$DIR/$name"
    echo "== $name -> $venv"
    [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    local group
    for group in "$@"; do
        # shellcheck disable=SC2086
        if ! "$venv/bin/python" -m pip install -q $group; then
            echo "!! $name: 'pip install $group' failed" >&2
            return 1
        fi
    done
    "$venv/bin/python" -m pip freeze > "$venv/versions.txt"
    echo "== $name ok"
}

make_venv rejax "rejax gymnax<1.0" || status=1
make_venv sb3 "torch==2.13.0" "stable-baselines3 gymnasium" "sbx-rl" || status=1
exit $status
