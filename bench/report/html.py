"""One self-contained HTML page for one or more runs: a sortable, filterable table of every
(run, variant, runtime) and an accuracy-vs-latency chart whose points say what they are on hover.

No server, no network: the data are embedded as JSON, the script and styles are inline, the chart
is SVG drawn by that script. The numbers are the same frames the markdown report renders
(rules.summary_frame), so the page never disagrees with the report.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

from .frames import _check_shape, input_sizes, native_size
from .merging import run_labels
from .rules import summary_frame


def _num(x, digits: int = 4):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def page_rows(results_list: list[dict]) -> list[dict]:
    """One row per ok item of every run, plain JSON values."""
    rows = []
    for label, results in zip(run_labels(results_list), results_list):
        _check_shape(results)
        sizes = input_sizes(results)
        deploy = next((s for s in sizes if s != native_size(results)), sizes[0] if sizes else None)
        for r in summary_frame(results).to_dict("records"):
            row = {"run": label, "dataset": results["dataset"].get("name") or results["dataset"]["id"],
                   "variant": r["variant"], "runtime": r["runtime"], "size_mb": _num(r["size_mb"], 3),
                   "top1": _num(r["top1_pct"], 3), "ci_lo": _num(r["ci_lo_pct"], 3), "ci_hi": _num(r["ci_hi_pct"], 3),
                   "delta_pp": _num(r["delta_pp"], 3), "pct_of_fp32": _num(r["pct_of_fp32"], 2),
                   "shape": deploy, "good_for": r.get("good_for") or ""}
            if deploy is not None:
                row.update(p50=_num(r.get(f"p50_ms@{deploy}")), p90=_num(r.get(f"p90_ms@{deploy}")),
                           p90_bound=_num(r.get(f"p90_bound_ms@{deploy}")), speedup=_num(r.get(f"speedup@{deploy}"), 3),
                           noisy=bool(r.get(f"noisy@{deploy}")) if r.get(f"noisy@{deploy}") is not None else False)
            rows.append(row)
    return rows


COLUMNS = [  # (key, header, kind): kind "num" sorts numerically
    ("run", "Run", "text"), ("dataset", "Dataset", "text"), ("variant", "Variant", "text"), ("runtime", "Runtime", "text"),
    ("size_mb", "Size MB", "num"), ("top1", "Top-1 %", "num"), ("delta_pp", "Δ vs fp32 pp", "num"),
    ("pct_of_fp32", "% of fp32", "num"), ("p50", "p50 ms", "num"), ("p90", "p90 ms", "num"),
    ("p90_bound", "p90 99% bound ms", "num"), ("speedup", "Speedup vs fp32 eager", "num"), ("good_for", "Good for", "text"),
]

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} .meta{color:#555}
#controls{margin:1em 0} #controls label{margin-right:1.5em}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right} td.text,th.text{text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none} th[aria-sort=ascending]::after{content:" ▲"}
th[aria-sort=descending]::after{content:" ▼"} tr.noisy td.p50{color:#b35900}
#chart{border:1px solid #ccc;margin:1em 0} #tip{position:fixed;display:none;background:#fff;border:1px solid #888;
padding:.4em .6em;font-size:12px;pointer-events:none;box-shadow:0 2px 6px #0003;white-space:pre}
.legend span{display:inline-block;margin-right:1.2em}.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em}
"""

_SCRIPT = r"""
const DATA = JSON.parse(document.getElementById('data').textContent);
const COLS = JSON.parse(document.getElementById('columns').textContent);
const COLORS = ['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#17becf'];
const runtimes = [...new Set(DATA.map(r => r.runtime))];
const colorOf = rt => COLORS[runtimes.indexOf(rt) % COLORS.length];
let sortKey = null, sortDir = 1;
const fmt = (v, k) => v === null || v === undefined ? '—' :
  (typeof v === 'number' ? (k === 'speedup' ? v.toFixed(2) + 'x' : v.toFixed(k === 'pct_of_fp32' ? 1 : 2)) : String(v));
function visible() {
  const rt = document.getElementById('runtime').value, ds = document.getElementById('dataset').value,
    q = document.getElementById('search').value.toLowerCase();
  let rows = DATA.filter(r => (rt === '' || r.runtime === rt) && (ds === '' || r.dataset === ds) &&
    (q === '' || (r.variant + ' ' + r.runtime + ' ' + r.run + ' ' + r.dataset).toLowerCase().includes(q)));
  if (sortKey) {
    const num = COLS.find(c => c[0] === sortKey)[2] === 'num';
    rows = rows.slice().sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      if (x === null || x === undefined) return 1; if (y === null || y === undefined) return -1;
      return (num ? x - y : String(x).localeCompare(String(y))) * sortDir;
    });
  }
  return rows;
}
function renderTable() {
  const rows = visible(), tb = document.querySelector('#items tbody');
  tb.innerHTML = '';
  for (const r of rows) {
    const tr = document.createElement('tr'); if (r.noisy) tr.className = 'noisy';
    for (const [k, , kind] of COLS) {
      const td = document.createElement('td'); td.className = (kind === 'text' ? 'text ' : '') + k;
      td.textContent = fmt(r[k], k) + (k === 'p50' && r.noisy ? ' (noisy)' : ''); tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
  document.getElementById('count').textContent = rows.length + ' of ' + DATA.length + ' rows';
  renderChart(rows);
}
function renderChart(rows) {
  const svg = document.getElementById('chart'), W = 760, H = 420, L = 60, R = 20, T = 20, B = 50;
  svg.innerHTML = '';
  const pts = rows.filter(r => r.p50 && r.top1 !== null);
  if (!pts.length) return;
  const lx = pts.map(r => Math.log10(r.p50)), ys = pts.map(r => r.top1);
  let x0 = Math.min(...lx), x1 = Math.max(...lx), y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (x1 - x0 < 0.1) { x0 -= 0.05; x1 += 0.05; } if (y1 - y0 < 1) { y0 -= 0.5; y1 += 0.5; }
  const px = v => L + (Math.log10(v) - x0) / (x1 - x0) * (W - L - R), py = v => H - B - (v - y0) / (y1 - y0) * (H - T - B);
  const ns = 'http://www.w3.org/2000/svg', el = (n, a) => { const e = document.createElementNS(ns, n);
    for (const k in a) e.setAttribute(k, a[k]); svg.appendChild(e); return e; };
  el('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#888'}); el('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#888'});
  for (let e = Math.ceil(x0 * 4) / 4; e <= x1; e += 0.25) {
    const v = Math.pow(10, e); el('text', {x: px(v), y: H - B + 16, 'text-anchor': 'middle', 'font-size': 11}).textContent = v.toFixed(v < 10 ? 1 : 0);
  }
  for (let k = 0; k <= 4; k++) { const v = y0 + (y1 - y0) * k / 4;
    el('text', {x: L - 6, y: py(v) + 4, 'text-anchor': 'end', 'font-size': 11}).textContent = v.toFixed(1); }
  el('text', {x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle', 'font-size': 12}).textContent =
    'batch-1 p50 latency, ms (log scale), at ' + (pts[0].shape || '');
  el('text', {x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle', 'font-size': 12, transform: `rotate(-90 14 ${(T + H - B) / 2})`}).textContent = 'top-1 %';
  const tip = document.getElementById('tip');
  for (const r of pts) {
    const c = el('circle', {cx: px(r.p50), cy: py(r.top1), r: 6, fill: colorOf(r.runtime), 'fill-opacity': 0.8,
      stroke: '#333', 'data-variant': r.variant, 'data-runtime': r.runtime, class: 'point'});
    c.addEventListener('mouseenter', ev => {
      tip.textContent = `${r.variant} on ${r.runtime}  (${r.run})\np50 ${fmt(r.p50)} ms, p90 ${fmt(r.p90)} ms` +
        `\ntop-1 ${fmt(r.top1)} % [${fmt(r.ci_lo)}, ${fmt(r.ci_hi)}], ${fmt(r.delta_pp)} pp vs fp32` +
        `\nsize ${fmt(r.size_mb)} MB, ${fmt(r.speedup, 'speedup')} vs fp32 eager`;
      tip.style.display = 'block'; tip.style.left = (ev.clientX + 12) + 'px'; tip.style.top = (ev.clientY + 12) + 'px';
    });
    c.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  }
  document.getElementById('legend').innerHTML = runtimes.map(rt => `<span><i style="background:${colorOf(rt)}"></i>${rt}</span>`).join('');
}
const head = document.querySelector('#items thead tr');
for (const [k, h, kind] of COLS) {
  const th = document.createElement('th'); th.textContent = h; th.dataset.key = k; if (kind === 'text') th.className = 'text';
  th.addEventListener('click', () => {
    sortDir = sortKey === k ? -sortDir : 1; sortKey = k;
    document.querySelectorAll('#items th').forEach(t => t.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending'); renderTable();
  });
  head.appendChild(th);
}
function options(id, values) {
  const sel = document.getElementById(id);
  for (const v of values) { const o = document.createElement('option'); o.value = v; o.textContent = v; sel.appendChild(o); }
  sel.addEventListener('change', renderTable);
}
options('runtime', runtimes); options('dataset', [...new Set(DATA.map(r => r.dataset))]);
document.getElementById('search').addEventListener('input', renderTable);
renderTable();
"""


def _history_section(history) -> str:
    """The history store's change points and series (bench/history.py), as static tables."""
    if history is None:
        return ""
    from .history import series_rows

    series, changes, failures = history
    esc = html.escape
    change_rows = "".join(
        f"<tr><td class=text>{esc(c.series.name)}</td><td class=text>{esc(c.metric)}</td>"
        f"<td>{c.point.ratio:.3f}x</td><td>{c.point.p_value:.3f}</td>"
        f"<td class=text>{esc((c.last_before.get('commit') or '?')[:12])} ({esc(c.last_before['created_utc'])}) .. "
        f"{esc((c.first_after.get('commit') or '?')[:12])} ({esc(c.first_after['created_utc'])})</td>"
        f"<td class=text>{'FAIL' if c in failures else ''}</td></tr>" for c in changes)
    series_html = "".join(
        f"<tr><td class=text>{esc(r['machine'])}</td><td class=text>{esc(r['dataset'])}</td><td class=text>{esc(r['item'])}</td>"
        f"<td class=text>{esc(r['shape'])}</td><td>{r['runs']}</td><td>{r['ratio_median']:.3f}</td><td>{r['ratio_last']:.3f}</td>"
        f"<td>{r['p50_median']:.2f}</td><td>{r['p50_last']:.2f}</td><td>{r['changes']}</td></tr>"
        for r in series_rows(series, changes))
    return f"""<h2>History</h2>
<p class="meta">{len(series)} series from the history store; change points by E-Divisive means (python -m bench history).</p>
<table id="history-changes"><thead><tr><th class=text>Series</th><th class=text>Metric</th><th>After / before</th><th>p</th>
<th class=text>Starts between</th><th class=text>Trend gate</th></tr></thead><tbody>{change_rows}</tbody></table>
<p></p><table id="history-series"><thead><tr><th class=text>Machine</th><th class=text>Dataset</th><th class=text>Item</th>
<th class=text>Shape</th><th>Runs</th><th>Ratio median</th><th>Ratio last</th><th>p50 median ms</th><th>p50 last ms</th>
<th>Change points</th></tr></thead><tbody>{series_html}</tbody></table>"""


def render_html(results_list: list[dict], sources: list[str] | None = None, history=None) -> str:
    """``history``: (series, changes, failures) from bench/history.py, shown below the items."""
    rows = page_rows(results_list)
    labels = run_labels(results_list)
    runs = "".join(f"<li>{html.escape(lbl)}: {html.escape(r['dataset'].get('name') or r['dataset']['id'])}, "
                   f"{html.escape(r.get('created_utc', ''))}, commit {html.escape(((r.get('commit_info') or {}).get('id') or '?')[:12])}"
                   + (f" (<code>{html.escape(src)}</code>)" if src else "") + "</li>"
                   for lbl, r, src in zip(labels, results_list, sources or [None] * len(results_list)))
    # JSON inside <script>: "</" would end the element early, so it is escaped.
    data = json.dumps(rows).replace("</", "<\\/")
    cols = json.dumps(COLUMNS).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>resnet18-bench results</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>Compressed ResNet18: accuracy, latency, size</h1>
<p class="meta">Generated by <code>python -m bench report html</code> from {len(results_list)} results file(s); every
number is a measurement from them. Latency: batch 1 at the deployment shape; speedup: the in-run ratio to fp32 eager.</p>
<ul class="meta">{runs}</ul>
<div id="controls"><label>Dataset <select id="dataset"><option value="">all</option></select></label>
<label>Runtime <select id="runtime"><option value="">all</option></select></label>
<label>Search <input id="search" type="search" placeholder="variant, runtime, run"></label><span id="count"></span></div>
<svg id="chart" width="760" height="420" role="img" aria-label="top-1 accuracy against batch-1 latency"></svg>
<div id="legend" class="legend"></div>
<table id="items"><thead><tr></tr></thead><tbody></tbody></table>
<div id="tip"></div>
{_history_section(history)}
<script type="application/json" id="data">{data}</script>
<script type="application/json" id="columns">{cols}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_html(results_list: list[dict], out_dir: Path, sources: list[str] | None = None, history=None) -> Path:
    from compress.fsutil import atomic_write_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    atomic_write_bytes(path, render_html(results_list, sources, history).encode("utf-8"))
    return path
