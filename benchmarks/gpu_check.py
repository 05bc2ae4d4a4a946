"""``make gpu-check``: everything the GPU path must show, in one command (<= 8 min on one H100/H200).

Sections (each one runs even when another fails; the exit code is 1 if any failed):

- ``equivalence``: DALI on the device vs the torch backend on the device, every operation
  and preset, float16/float32/bfloat16 input; the DALI options (output copy, HWC layout,
  resize minibatch) and a run on a side stream (external source / DLPack / stream hand-off).
- ``loader``: int8 dequantisation on the device, views, mixup/cutmix soft labels, exact
  resume, both host-to-device paths (registered buffers / pin thread: same batches,
  speed, pinned-memory growth over ~200 batches from ``torch.cuda.host_memory_stats``),
  and host syncs per batch counted with ``torch.cuda.set_sync_debug_mode("warn")``.
- ``h2d``: pinned host-to-device bandwidth, the ceiling of the rows below.
- ``throughput``: LoffLoader to augmented device batches, DALI and torch backends,
  768x16x16 and 1024x32x32 float16, batch 256: samples/s, GB/s, ratios to the H2D ceiling
  and to a page-cache read of the same shards; first epoch and a later one.
- ``resize``: DALI ``fn.resize`` per batch for several ``minibatch_size`` values and HWC,
  against the torch backend.
- ``training``: a DeiT-S LOFF-TA loop fed by LoffLoader: data-wait fraction of step time.
- ``extraction``: ``loffdata.extract`` under CUDA vs plain batched inference of the model.
- ``finetune``: ``recipes/compare_finetune.py`` (ViT-B/14, ViT-G/14 vs DeiT-S).

Usage::

    python benchmarks/gpu_check.py                      # CUDA machine: rows into docs/benchmarks-gpu.md
    python benchmarks/gpu_check.py --smoke --device cpu --out /tmp/gc   # tiny sizes on the CPU (CI)

Without CUDA (and without ``--device cpu``) it prints one line and exits 0.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import fire
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_sections as sections  # noqa: E402

from loffdata.cli.doctor import environment  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"


def run(*, smoke: bool = False, device: str = "cuda", out: str | None = None,
        only: str | list[str] | None = None) -> int:
    """Runs the sections; returns the exit code (0: all passed, or no CUDA device here)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False): nothing to check, "
              "see docs/benchmarks-gpu.md")
        return 0
    sizes = sections.SMOKE if smoke else sections.FULL
    names = [only] if isinstance(only, str) else list(only or sections.ORDER)
    out_dir = Path(out) if out else (REPO / "docs")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"env": environment(), "device": device, "smoke": smoke, "sizes": sizes.__dict__, "sections": {}}
    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = sections.Context(device=torch.device(device), sizes=sizes, root=Path(tmp))
        for name in names:
            t0 = time.perf_counter()
            try:
                result = sections.SECTIONS[name](ctx)
            except Exception:  # noqa: BLE001 - every section reports, whatever another did
                result = {"ok": False, "error": traceback.format_exc(limit=8)}
            result["seconds"] = round(time.perf_counter() - t0, 1)
            report["sections"][name] = result
            status = "ok" if result.get("ok", True) else "FAILED"
            print(f"[{name}] {status} in {result['seconds']} s")
            if not result.get("ok", True):
                failed.append(name)
                print(result.get("error") or json.dumps(result.get("failures", []), indent=1)[:4000])
    json_path = out_dir / ("gpu-check-smoke.json" if smoke else "benchmarks-gpu.json")
    json_path.write_text(json.dumps(report, indent=1, default=str))
    rows = sections.markdown_rows(report)
    md = out_dir / ("gpu-check-smoke.md" if smoke else "benchmarks-gpu.md")
    write_rows(md, rows)
    print("\n".join(rows))
    print(f"wrote {json_path} and {md}; failed sections: {failed or 'none'}")
    return 1 if failed else 0


def write_rows(md: Path, rows: list[str]) -> None:
    """Replaces the generated block of ``md`` (between the markers) with ``rows``."""
    block = "\n".join([MARK_BEGIN, *rows, MARK_END])
    text = md.read_text() if md.exists() else f"# gpu-check results\n\n{MARK_BEGIN}\n{MARK_END}\n"
    if MARK_BEGIN not in text:
        text += f"\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = text.split(MARK_BEGIN, 1)
    tail = rest.split(MARK_END, 1)[1] if MARK_END in rest else ""
    md.write_text(head + block + tail)


@functools.wraps(run)  # fire reads run's options (and --help) through __wrapped__
def cli(*args, **kwargs) -> None:
    """Command-line entry point (fire); see :func:`run`."""
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(run(*args, **kwargs))


if __name__ == "__main__":
    fire.Fire(cli)
