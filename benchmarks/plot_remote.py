"""The cloud simulator's plot: samples/s against the requests in flight (``bench_loader.py --plot_out``)."""

from __future__ import annotations

from pathlib import Path

from machine import machine


def plot_prefetch(study: dict, rows: dict, cfg: dict, sim: tuple, out: str) -> None:
    """samples/s against the requests in flight the simulator saw (one point per prefetch
    depth), with the one-connection and webdataset rows as lines (``bench_loader.py``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for mode, marks in (("by sample", ("o-", "s--")), ("by shard", ("^-", "v--"))):
        keys = [k for k in study["sweep"] if k.endswith(mode)]
        rates, later, peaks = ([study["sweep"][k][i] for k in keys] for i in range(3))
        ax.plot(
            peaks,
            rates,
            marks[0],
            label=f"LoffLoader {mode}, 2 workers, first epoch (label: requests/worker)",
        )
        ax.plot(
            peaks, later, marks[1], label=f"LoffLoader {mode}, second epoch (persistent workers)"
        )
        for k, x, y in zip(keys, peaks, rates):
            ax.annotate(
                k.split()[0], (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8
            )
    ax.axhline(
        rows[f"raw read {cfg['source']}"], color="grey", ls="--", label="one sequential connection"
    )
    ax.axhline(
        rows["webdataset"], color="tab:red", ls=":", label="webdataset over fsspec, 2 workers"
    )
    ax.axhline(
        study["gets"], color="tab:green", ls="-.", label="16 range GETs, fresh process, no decoding"
    )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("peak requests in flight at the server")
    ax.set_ylabel("samples/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title(
        f"{cfg['n']} x {'x'.join(map(str, cfg['dims']))} float16 over HTTP, "
        f"{sim[0] * 1e3:.0f} ms, {(sim[1] or 0) / 1e6:.0f} MB/s per connection\n{machine()}",
        fontsize=9,
    )
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
