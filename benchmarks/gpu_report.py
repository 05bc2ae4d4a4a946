"""Markdown rows of a ``gpu_check`` report (the block between the markers of
docs/benchmarks-gpu.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["rows"]


def _f(v: Any, fmt: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _head(report: dict) -> list[str]:
    env = report["env"]
    dali = env.get("dali") or "not installed"
    return [
        f"Measured on **{env.get('device') or report['device']}** (driver "
        f"{env.get('driver') or 'n/a'}), "
        f"torch {env['torch']} (CUDA {env.get('torch_cuda')}), DALI {dali} "
        f"({', '.join(env.get('dali_wheels', {})) or 'no wheel'})"
        f"{' — SMOKE RUN, tiny sizes' if report['smoke'] else ''}.",
        "",
        "| check | result | target |",
        "|---|---|---|",
    ]


def _checks(sec: dict) -> list[str]:
    out = []
    for name in ("equivalence", "loader", "standin"):
        r = sec.get(name)
        if r is None:
            continue
        what = f"{r.get('cases', '')} cases, " if "cases" in r else ""
        last = (r.get("error") or "").strip().splitlines()[-1:] or [""]
        res = (
            "passed"
            if r.get("ok")
            else f"FAILED ({len(r.get('failures', []))} cases) {last[0][:100]}"
        )
        out.append(f"| {name} | {what}{res} | all pass |")
    loader = sec.get("loader", {})
    for backend, v in (loader.get("syncs") or {}).items():
        out.append(
            f"| host syncs per batch, {backend} backend | "
            f"{v['syncs'] / max(v['batches'], 1):.2f} | 0 |"
        )
    for mode, v in (loader.get("transfer") or {}).items():
        out.append(
            f"| transfer {mode}: samples/s, pinned growth over the run | {_f(v['samples_per_s'])}, "
            f"{v['pinned_growth_bytes'] / 2**20:+.0f} MiB | bounded |"
        )
    return out


def _throughput(sec: dict) -> list[str]:
    out = []
    h = sec.get("h2d") or {}
    if h:
        out.append(
            f"| pinned H2D (ceiling) / pageable | {_f(h.get('pinned_gb_s'), '.1f')} / "
            f"{_f(h.get('pageable_gb_s'), '.1f')} GB/s | |"
        )
    for r in (sec.get("throughput") or {}).get("rows", []):
        shape = "x".join(map(str, r["shape"]))
        out.append(
            f"| LoffLoader {shape} fp16, {r['backend']} {r['augment']}: samples/s (GB/s), /H2D, "
            "/raw read; first epoch | "
            f"{_f(r['samples_per_s'])} ({r['gb_s']:.2f}), {_f(r['ratio_h2d'], '.2f')}, "
            f"{r['ratio_raw']:.2f}; "
            f"{_f(r['first_epoch_samples_per_s'])} | >= 0.8x min(raw, H2D) |"
        )
    rz = sec.get("resize") or {}
    if rz.get("ms_per_batch"):
        cells = ", ".join(f"{k} {v:.1f}" for k, v in rz["ms_per_batch"].items())
        out.append(
            f"| augment one batch {'x'.join(map(str, rz['shape']))} (ms) | {cells} | DALI <= torch "
            "|"
        )
    return out


def _training(sec: dict) -> list[str]:
    out = []
    t = sec.get("training") or {}
    if "data_wait_fraction" in t:
        out.append(
            f"| {t['model']} LOFF-TA loop: data wait / step time | {t['data_wait_fraction']:.1%} | "
            "< 5% |"
        )
    e = sec.get("extraction") or {}
    if "ratio" in e:
        out.append(
            f"| extraction ({e['model']}) vs plain batched inference | "
            f"{_f(e['extract_images_per_s'])} vs "
            f"{_f(e['plain_images_per_s'])} img/s ({e['ratio']:.2f}x) | close to 1 |"
        )
    for model, r in ((sec.get("finetune") or {}).get("runs") or {}).items():
        res = (
            f"{_f(r.get('speedup'), '.1f')}x faster, {_f(r.get('memory_ratio'), '.1f')}x less "
            "memory"
            if "error" not in r
            else "FAILED"
        )
        out.append(f"| fine-tune {model} vs DeiT-S LOFF-TA | {res} | paper: 37x / 26x |")
    return out


def rows(report: dict) -> list[str]:
    """Markdown lines: a sentence naming the machine, then one table row per figure."""
    sec = report["sections"]
    failed = [k for k, v in sec.items() if not v.get("ok", True)]
    tail = [
        "",
        f"Failed sections: {', '.join(failed)}." if failed else "Every section passed.",
        f"Total {sum(v.get('seconds', 0) for v in sec.values()):.0f} s.",
    ]
    return _head(report) + _checks(sec) + _throughput(sec) + _training(sec) + tail
