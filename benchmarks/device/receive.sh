#!/usr/bin/env bash
# On the GPU machine, once per call: moves what this call carried (the repo's carry/ folder)
# to KEEP, which stays while the machine is held. Usage: receive.sh   (KEEP default ~/loffdata-carry)
set -euo pipefail
keep=${KEEP:-$HOME/loffdata-carry}
mkdir -p "$keep/parts" "$keep/wheels"
shopt -s nullglob
for f in carry/parts/*; do mv "$f" "$keep/parts/"; done
for f in carry/wheels/*.whl; do mv "$f" "$keep/wheels/"; done
[ -f carry/SHA256SUMS ] && cp carry/SHA256SUMS "$keep/"
echo "received; kept so far:"; ls -l "$keep/parts" "$keep/wheels" | grep -v '^total'
