"""``make gpu-check``: everything the GPU path must show, in one command (<= 8 min on one
H100/H200).

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

    python benchmarks/gpu_check.py                      # CUDA machine: rows into
    docs/benchmarks-gpu.md
    python benchmarks/gpu_check.py --smoke --device cpu --out /tmp/gc   # tiny sizes on the CPU (CI)
    python benchmarks/gpu_check.py --device standin --out /tmp/gc       # the loader on the CUDA
    stand-in

Asked for CUDA (the default) and finding none, or finding a DALI wheel that ``loffdata doctor``
reports as a mismatch, it prints one line and exits 2: a check that checked nothing must not
pass. ``--allow-no-cuda`` (CI) makes the first case exit 0. Each section has a time budget
(``BUDGETS_S``) and the whole check one (``--budget-s``, default 450 s, inside 8 minutes): a
section past its budget is stopped and reported as such, later sections are skipped once the
total is spent, and the report is rewritten after every section (what was measured so far).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import fire
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_sections as sections  # noqa: E402

from loffdata.cli.doctor import environment  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"

#: seconds each section may take on the lent machine (full sizes); the whole check: ``budget_s``
BUDGETS_S = {
    "standin": 120,
    "equivalence": 60,
    "loader": 90,
    "h2d": 20,
    "throughput": 120,
    "resize": 40,
    "training": 90,
    "extraction": 60,
    "finetune": 120,
}


class SectionTimeout(Exception):
    """A section ran past its time budget."""


def refusal(device: str, allow_no_cuda: bool, env: dict) -> tuple[int, str] | None:
    """``(exit code, line)`` when a CUDA check must not run: CUDA missing (exit 2, 0 with
    ``allow_no_cuda``), or a DALI wheel mismatch reported by ``loffdata doctor`` (2)."""
    if device == "standin" or torch.device(device).type != "cuda":
        return None  # the CPU and the stand-in: no CUDA to find, and no DALI wheel used on a GPU
    if not env["cuda_available"]:
        line = (
            f"gpu-check: asked for CUDA, but torch {env['torch']} (CUDA "
            f"{env['torch_cuda'] or 'none'}) "
            "finds no CUDA device (torch.cuda.is_available() is False; a driver older than torch's "
            "CUDA does this): nothing checked"
        )
        return (0, line + " (--allow-no-cuda)") if allow_no_cuda else (2, line + "; FAILED")
    if env["problems"]:
        return 2, "gpu-check: loffdata doctor reports a wheel mismatch: " + "; ".join(
            env["problems"]
        ) + "; FAILED"
    return None


def run(
    *,
    smoke: bool = False,
    device: str = "cuda",
    out: str | None = None,
    only: str | list[str] | None = None,
    allow_no_cuda: bool = False,
    budget_s: float = 450,
) -> int:
    """Runs the sections; returns the exit code (0: all passed; 1: a section failed; 2: refused)."""
    env = environment()
    refused = refusal(device, allow_no_cuda, env)
    if refused is not None:
        print(refused[1])
        return refused[0]
    sizes = sections.SMOKE if smoke else sections.FULL
    standin = device == "standin"  # the strict CUDA stand-in of loffdata.loader.device (dry runs)
    names = (
        [only]
        if isinstance(only, str)
        else list(only or (["standin"] if standin else sections.ORDER))
    )
    out_dir = Path(out) if out else (REPO / "docs")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"env": env, "device": device, "smoke": smoke, "sizes": sizes.__dict__, "sections": {}}
    failed, deadline = [], time.monotonic() + budget_s
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = sections.Context(
            device=torch.device("cpu" if standin else device), sizes=sizes, root=Path(tmp)
        )
        for name in names:
            result = _run_within(name, ctx, deadline, budget_s)
            report["sections"][name] = result
            if not result.get("ok", True):
                failed.append(name)
            _write(report, out_dir, smoke, quiet=True)  # what was measured so far
    _write(report, out_dir, smoke, quiet=False)
    print(f"failed sections: {failed or 'none'}")
    return 1 if failed else 0


def _run_within(name: str, ctx: Any, deadline: float, budget_s: float) -> dict:
    """One section within its budget and what is left of the check's; its result, printed."""
    left = deadline - time.monotonic()
    if left > 1:
        result = _run_section(name, ctx, min(BUDGETS_S.get(name, 60), left))
    else:
        spent = f"skipped: the check's budget of {budget_s:.0f} s is spent"
        result = {"ok": False, "error": spent, "seconds": 0}
    ok = result.get("ok", True)
    print(f"[{name}] {'ok' if ok else 'FAILED'} in {result['seconds']} s")
    if not ok:
        print(result.get("error") or json.dumps(result.get("failures", []), indent=1)[:4000])
    return result


def _run_section(name: str, ctx, budget: float) -> dict:
    """One section, stopped by ``SIGALRM`` after ``budget`` seconds."""

    def expired(signum, frame):
        raise SectionTimeout(f"section {name} ran past its budget of {budget:.0f} s")

    previous, t0 = signal.signal(signal.SIGALRM, expired), time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, max(budget, 0.1))
    try:
        result = sections.SECTIONS[name](ctx)
    except Exception:  # noqa: BLE001 - every section reports, whatever another did
        result = {"ok": False, "error": traceback.format_exc(limit=8)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _write(report: dict, out_dir: Path, smoke: bool, *, quiet: bool) -> None:
    """The report as JSON and as the table of the markdown file (a stand-in or smoke run
    never writes over the GPU figures of ``benchmarks-gpu.*``)."""
    stem = (
        "gpu-check-standin"
        if report["device"] == "standin"
        else "gpu-check-smoke"
        if smoke
        else None
    )
    json_path = out_dir / (f"{stem}.json" if stem else "benchmarks-gpu.json")
    json_path.write_text(json.dumps(report, indent=1, default=str))
    rows = sections.markdown_rows(report)
    md = out_dir / (f"{stem}.md" if stem else "benchmarks-gpu.md")
    write_rows(md, rows)
    if not quiet:
        print("\n".join(rows))
        print(f"wrote {json_path} and {md}")


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
