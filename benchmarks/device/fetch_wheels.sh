#!/usr/bin/env bash
# On a machine WITH network: the wheels of carry.txt and SHA256SUMS; every wheel over 8 MiB
# (DALI, nvimgcodec, nvcomp) split into parts of at most 60 MiB, one part per call.
# Usage: fetch_wheels.sh OUT [PYVER]   (PYVER default 3.12, the device's)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: fetch_wheels.sh OUT [PYVER]}
pyver=${2:-3.12}
pip=${PIP:-python3 -m pip}
mkdir -p "$out/wheels" "$out/parts"
grep -v '^#' "$here/carry.txt" | grep . > "$out/carry.txt"
$pip download --no-deps --only-binary=:all: --python-version "$pyver" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    -r "$out/carry.txt" -d "$out/wheels" >/dev/null
(cd "$out/wheels" && sha256sum ./*.whl > ../SHA256SUMS)
for whl in "$out"/wheels/*.whl; do
    [ "$(stat -c %s "$whl")" -gt $((8 << 20)) ] || continue
    split -b 60M -d -a 2 "$whl" "$out/parts/$(basename "$whl").part-"
    rm "$whl"  # it travels as its parts
done
echo "wheels (sent with the last part):"; ls -l "$out/wheels" | tail -n +2
echo "parts (one per call, <= 60 MiB each):"; ls -l "$out/parts" | tail -n +2
