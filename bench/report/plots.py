"""Report plots as PNG bytes: accuracy vs latency with its Pareto front, and latency boxes.

Same results, same bytes: no pyplot global state, the default style whatever the user's
matplotlibrc says, and no matplotlib version string in the PNG metadata.
"""
from __future__ import annotations

import io

from .frames import _present, _reference_item, _runtime_order, items_frame, latency_frame, native_size, size_title
from .rules import pareto_front

RUNTIME_MARKERS = ("o", "^", "s", "D", "v", "P", "X")
PNG_METADATA = {"Software": None}  # no matplotlib version string: same bytes on every run
FIG_DPI = 100


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width_in, height_in), dpi=FIG_DPI, layout="constrained")


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=PNG_METADATA)
    return buf.getvalue()


def _plain_log_ticks(axis) -> None:
    """"5, 10, 20" instead of "5x10^0": people read these as milliseconds."""
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


LABEL_OFFSETS_PT = ((6, 6), (6, -12), (-6, 6), (-6, -12), (6, 18), (6, -24), (-6, 18), (-6, -24))


def _label_points(ax, texts: list[str], points: list[tuple[float, float]], fontsize: float) -> None:
    """Greedy placement: each label takes the first offset whose box hits no earlier label.

    Points of the same variant on one runtime cluster tightly (fp32 vs pruned), so fixed
    offsets would print labels on top of each other.
    """
    ax.autoscale_view()
    to_px = ax.transData.transform
    pt_px = FIG_DPI / 72
    height_px = fontsize * pt_px * 1.3
    marker_px = 10  # markers are obstacles too, or a label lands on its neighbour's point
    taken = [(x - marker_px, y - marker_px, x + marker_px, y + marker_px) for x, y in map(to_px, points)]
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], texts[i]))
    for i in order:
        x_px, y_px = to_px(points[i])
        width_px = len(texts[i]) * fontsize * pt_px * 0.65
        chosen = LABEL_OFFSETS_PT[0]
        for dx, dy in LABEL_OFFSETS_PT:
            left = x_px + dx * pt_px - (width_px if dx < 0 else 0)
            box = (left, y_px + dy * pt_px, left + width_px, y_px + dy * pt_px + height_px)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        left = x_px + dx * pt_px - (width_px if dx < 0 else 0)
        taken.append((left, y_px + dy * pt_px, left + width_px, y_px + dy * pt_px + height_px))
        ax.annotate(texts[i], points[i], textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                    ha="right" if dx < 0 else "left", va="bottom",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 4})


def accuracy_latency_png(results: dict, input_size: str, budget_pp: float) -> bytes:
    """Top-1 against batch-1 p50. One colour and marker per runtime; each point is labelled with its
    variant's number (the key on the right names them), since five runtimes put five points of
    one variant side by side and full names would overlap. The shaded band is the accuracy budget
    under fp32; the dotted vertical line is the fastest fp32 runtime, the bar to beat."""
    import matplotlib.style
    from matplotlib.lines import Line2D

    items = items_frame(results).set_index("id")
    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)]
    b1 = b1[[_present(items.at[i, "top1_pct"]) for i in b1["id"]]]
    runtimes = _runtime_order(results, b1["runtime"])
    number = {v: n for n, v in enumerate(dict.fromkeys(b1["variant"]), start=1)}
    with matplotlib.style.context("default"):  # ignore the user's matplotlibrc: same image everywhere
        fig = _figure(9.5, 5.2)
        ax = fig.add_subplot()
        for k, runtime in enumerate(runtimes):
            pts = b1[b1["runtime"] == runtime]
            acc = items.loc[pts["id"]]
            ax.errorbar(pts["p50_ms"], acc["top1_pct"],
                        yerr=[acc["top1_pct"] - acc["ci_lo_pct"], acc["ci_hi_pct"] - acc["top1_pct"]],
                        fmt=RUNTIME_MARKERS[k % len(RUNTIME_MARKERS)], color=f"C{k}", markersize=7,
                        capsize=2, elinewidth=0.8, label=runtime, linestyle="none")
        points = [(r.p50_ms, items.at[r.id, "top1_pct"]) for r in b1.itertuples()]
        front = pareto_front(points)
        if front:
            ax.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=200, facecolors="none",
                       edgecolors="0.3", linewidths=1, label="Pareto optimal", zorder=3)
        if len(front) > 1:
            ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                    color="0.4", linestyle="--", linewidth=1, label="Pareto front")
        ref = _reference_item(results)
        if ref is not None and ref.get("accuracy"):
            top = ref["accuracy"]["top1"] * 100
            ax.axhspan(top - budget_pp, top, color="C2", alpha=0.12, linewidth=0,
                       label=f"within {budget_pp:g} pp of fp32")
        fp32 = b1[b1["variant"] == "fp32"]
        if not fp32.empty:
            bar = fp32.loc[fp32["p50_ms"].idxmin()]
            ax.axvline(bar["p50_ms"], color="0.3", linestyle=":", linewidth=1,
                       label=f"fastest fp32 ({bar['runtime']})")
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
        ax.margins(x=0.08, y=0.08)
        _label_points(ax, [str(number[r.variant]) for r in b1.itertuples()], points, fontsize=7)
        ax.set_xlabel(f"batch-1 p50 latency at {input_size} (ms, log scale)")
        ax.set_ylabel(f"top-1 accuracy at {native_size(results)} (%)")
        ax.set_title(f"{results['dataset'].get('name', '')} on {results['device']}: accuracy vs latency "
                     f"at {size_title(results, input_size)}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        # Both keys outside the axes: inside, they would cover points of a crowded run.
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right lower", fontsize=8)
        key = [Line2D([], [], linestyle="none", label=f"{n}  {v}") for v, n in number.items()]
        fig.legend(handles=key, loc="outside right upper", fontsize=8, title="variant", title_fontsize=8,
                   handlelength=0, handletextpad=0, frameon=False)
        return _png_bytes(fig)


def latency_box_png(results: dict, input_size: str) -> bytes:
    import matplotlib.style

    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)].sort_values(["p50_ms", "id"])
    b1 = b1.iloc[::-1]  # fastest at the top of a horizontal box plot
    labels = [f"{r.variant} / {r.runtime}" + (" (noisy)" if r.noisy else "") for r in b1.itertuples()]
    with matplotlib.style.context("default"):
        fig = _figure(7.5, 1.2 + 0.42 * max(len(b1), 1))
        ax = fig.add_subplot()
        ax.boxplot(list(b1["samples_ms"]), orientation="horizontal", tick_labels=labels, showfliers=True)
        lo, hi = b1["p50_ms"].min(), b1["p50_ms"].max()
        if _present(lo) and lo > 0 and hi / lo > 10:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        ax.set_xlabel(f"batch-1 latency at {input_size} (ms{', log scale' if ax.get_xscale() == 'log' else ''})")
        ax.set_title(f"Latency samples per item at {size_title(results, input_size)}", fontsize=10)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
        return _png_bytes(fig)
