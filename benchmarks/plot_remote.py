"""The cloud simulator's plot: samples/s against the requests in flight (``bench_loader.py
--plot_out``)."""

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
    _sweep_lines(ax, study["sweep"])
    _reference_lines(ax, study, rows, cfg)
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


def _sweep_lines(ax, sweep: dict) -> None:
    """First- and second-epoch rates against peak requests in flight, by sample and by shard."""
    for mode, marks in (("by sample", ("o-", "s--")), ("by shard", ("^-", "v--"))):
        keys = [k for k in sweep if k.endswith(mode)]
        rates, later, peaks = ([sweep[k][i] for k in keys] for i in range(3))
        label = f"LoffLoader {mode}, 2 workers, first epoch (label: requests/worker)"
        ax.plot(peaks, rates, marks[0], label=label)
        ax.plot(peaks, later, marks[1], label=f"LoffLoader {mode}, second epoch (persistent)")
        for k, x, y in zip(keys, peaks, rates):
            ax.annotate(
                k.split()[0], (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8
            )


def _reference_lines(ax, study: dict, rows: dict, cfg: dict) -> None:
    """The one-connection, webdataset and 16-range-GET rates as horizontal lines."""
    for value, style, label in (
        (rows[f"raw read {cfg['source']}"], ("grey", "--"), "one sequential connection"),
        (rows["webdataset"], ("tab:red", ":"), "webdataset over fsspec, 2 workers"),
        (study["gets"], ("tab:green", "-."), "16 range GETs, fresh process, no decoding"),
    ):
        ax.axhline(value, color=style[0], ls=style[1], label=label)
