#!/usr/bin/env bash
# The device runbook's dry run on a machine without a GPU (`make gpu-dry-run`): a fresh clone,
# the wheels fetched here, an offline environment shaped like the device's (its packages
# only, this machine's torch), parts sent one after another, install with --no-index --target
# and gpu-check on the CUDA stand-in; then the plain CUDA check, which must refuse (exit 2).
# Offline = a network namespace with no interface but loopback (unshare -rn).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dry=${DRY:-/tmp/loffdata-gpu-dry-run}
host_py=${HOST_PY:-python3}  # the interpreter whose packages are linked (it has torch)
pyver=$("$host_py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
rm -rf "$dry" && mkdir -p "$dry"
echo "== 1. a fresh clone (committed state) of $repo"
git clone -q "$repo" "$dry/clone"
echo "== 2. online, here: the wheels the device lacks (Python $pyver tags for this dry run; 3.12 for the device)"
PIP="$host_py -m pip" bash "$dry/clone/benchmarks/device/fetch_wheels.sh" "$dry/carry" "$pyver"
echo "== 3. an environment shaped like the device's"
"$host_py" "$dry/clone/benchmarks/device/shape_env.py" "$dry/device-site" "$dry/venv" \
    torch numpy msgpack fsspec aiohttp pyyaml tqdm hypothesis pytest timm pip
py=$dry/venv/bin/python
for m in nvidia.dali webdataset braceexpand fire ml_dtypes; do
    if "$py" -c "import $m" 2>/dev/null; then echo "shaped env has $m: not shaped like the device"; exit 1; fi
done
echo "shaped env lacks nvidia.dali webdataset braceexpand fire ml_dtypes; has torch $("$py" -c 'import torch; print(torch.__version__)')"
echo "== 4. send the parts one after another (each call: carry/ of the clone, then receive.sh, offline)"
parts=("$dry"/carry/parts/*)
for i in "${!parts[@]}"; do
    rm -rf "$dry/clone/carry" && mkdir -p "$dry/clone/carry/parts"
    cp "${parts[$i]}" "$dry/clone/carry/parts/"
    if [ "$i" -eq $((${#parts[@]} - 1)) ]; then
        cp -r "$dry/carry/wheels" "$dry/clone/carry/" && cp "$dry/carry/SHA256SUMS" "$dry/clone/carry/"
    fi
    echo "call $((i + 1)): $(du -sh "$dry/clone/carry" | cut -f1) carried"
    (cd "$dry/clone" && unshare -rn env KEEP="$dry/kept" bash benchmarks/device/receive.sh)
done
echo "== 5. offline: install with --no-index --target and run gpu-check on the CUDA stand-in"
(cd "$dry/clone" && unshare -rn env -u PYTHONPATH KEEP="$dry/kept" PY="$py" \
    bash benchmarks/device/run_check.sh --device standin --out "$dry/out")
echo "== 6. offline: the plain CUDA check finds no CUDA here and must refuse (exit 2)"
set +e
(cd "$dry/clone" && unshare -rn env -u PYTHONPATH KEEP="$dry/kept" PY="$py" \
    bash benchmarks/device/run_check.sh --out "$dry/out-cuda")
code=$?
set -e
echo "exit code $code"
[ "$code" -eq 2 ] || { echo "gpu-dry-run: the CUDA check did not refuse"; exit 1; }
echo "gpu-dry-run: ok"
