#!/usr/bin/env bash
# On the GPU machine, offline, after every part was received: reassembles the DALI wheel
# (checked against SHA256SUMS), installs the carried wheels with the machine's own Python
# (pip --no-index --no-deps --target: no network, no editable install, its own torch), then
# runs gpu-check with this checkout on the path. Arguments go to gpu_check.py.
# Usage: run_check.sh [--out DIR] [--only ...] [--device standin] ...
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
keep=${KEEP:-$HOME/loffdata-carry}
py=${PY:-python3}
cd "$keep"
for first in parts/*.part-00; do
    whl=wheels/$(basename "${first%.part-00}")
    cat "${first%00}"?? > "$whl"
done
(cd wheels && sha256sum -c ../SHA256SUMS)
"$py" -m pip install --no-index --no-deps --target "$keep/site" --upgrade --quiet wheels/*.whl
cd "$repo"
export PYTHONPATH="$repo:$keep/site${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import torch, nvidia.dali, loffdata; print('torch', torch.__version__, 'DALI', nvidia.dali.__version__, 'loffdata from', loffdata.__file__)"
"$py" -m loffdata.cli.main doctor || true
exec "$py" benchmarks/gpu_check.py "$@"
