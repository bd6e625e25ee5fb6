"""Pictures of attention maps and mask examples: PNG files (matplotlib, Agg) and self-contained
HTML pages (inline data and a few lines of JavaScript drawing on canvases; nothing fetched).

    save_attention_png(view, path)     a grid: one row per attention map, one column per head
    attention_page(view) -> str        the same, with every weight under the pointer
    save_mask_png(picture, path)       the token rows (ids, positions, segments, targets) and the masks
    masks_page(pictures) -> str        every picture of a run on one page
    save_embeddings_png(emb, path)     texts' embeddings in 2-D, one colour per label
    embeddings_page(emb) -> str        the same, each point's text under the pointer
"""

from __future__ import annotations

import functools

import html
import json
from pathlib import Path
from typing import Sequence

import torch

from .attention import AttentionView, Region
from .embeddings import EmbeddingMap
from .masks import Grid, MaskPicture

LABEL_LIMIT = 48  # more tokens than this: no tick labels in the PNG (the HTML page names every cell)


# Fonts with Chinese, Japanese and Korean characters, tried after matplotlib's own (which has
# none: its DejaVu Sans draws them as boxes). Debian: apt-get install fonts-noto-cjk or
# fonts-wqy-microhei; macOS and Windows ship some of these.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "PingFang SC",
             "Heiti SC", "Microsoft YaHei", "SimHei")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    fallback = _cjk_fonts(font_manager)
    if fallback:  # matplotlib >= 3.6 falls back glyph by glyph along the family list
        plt.rcParams["font.family"] = ["DejaVu Sans", *fallback]
    return plt


def monospace() -> list[str]:
    """A fixed-width family list that falls back to a CJK font (matplotlib does not fall back
    from the generic name "monospace")."""
    from matplotlib import font_manager
    return ["DejaVu Sans Mono", *_cjk_fonts(font_manager)]


@functools.lru_cache(maxsize=1)
def _cjk_fonts(font_manager) -> tuple[str, ...]:
    """The CJK_FONTS matplotlib can use. Its font list is cached on disk when it is first
    imported, so a font installed later is looked for among the system's font files too."""
    def known() -> tuple[str, ...]:
        installed = {f.name for f in font_manager.fontManager.ttflist}
        return tuple(name for name in CJK_FONTS if name in installed)

    if not known():
        for path in font_manager.findSystemFonts():
            if any(part in path.lower() for part in ("cjk", "wqy", "sourcehan", "simhei", "yahei", "pingfang")):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a font file matplotlib cannot read
                    continue
    return known()


def _regions(ax, rows: Sequence[Region], cols: Sequence[Region], label: bool = True) -> None:
    """Lines between labelled runs of rows / columns, and the runs' names above the columns."""
    for _, start, _ in rows[1:]:
        ax.axhline(start - 0.5, color="red", linewidth=0.8)
    for name, start, end in cols:
        if start:
            ax.axvline(start - 0.5, color="red", linewidth=0.8)
        if label and len(cols) > 1:
            ax.text((start + end - 1) / 2, -0.6, name, ha="center", va="bottom", fontsize=6, color="red",
                    transform=ax.transData, clip_on=False)


def _ticks(ax, rows: Sequence[str], cols: Sequence[str], size: float) -> None:
    if max(len(rows), len(cols)) > LABEL_LIMIT:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ax.set_yticks(range(len(rows)), rows, fontsize=size)
    ax.set_xticks(range(len(cols)), cols, fontsize=size, rotation=90)
    ax.tick_params(length=0, pad=1)


# ---------------------------------------------------------------------- attention
def save_attention_png(view: AttentionView, path: str | Path) -> Path:
    """One row per attention map (layer, stack, self / cross, segment), one panel per head,
    each titled with the head's mean entropy H (nats) and mean attention distance d (tokens)."""
    plt = _pyplot()
    maps = view.maps
    heads = max(m.probs.shape[0] for m in maps)
    longest = max(max(len(m.queries), len(m.keys)) for m in maps)
    side = 2.2 if longest <= 16 else 3.0 if longest <= LABEL_LIMIT else 2.4
    fig, axes = plt.subplots(len(maps), heads, figsize=(side * heads + 1.2, side * len(maps) + 1.0), squeeze=False)
    size = 6 if longest <= 24 else 4
    for r, m in enumerate(maps):
        for h in range(heads):
            ax = axes[r][h]
            if h >= m.probs.shape[0]:
                ax.axis("off")
                continue
            ax.imshow(m.probs[h].numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
            _ticks(ax, m.queries, m.keys, size)
            _regions(ax, m.query_regions, m.key_regions, label=True)
            summary = f"H={m.entropy[h]:.2f}" + (f" d={m.distance[h]:.1f}" if m.distance is not None else "")
            ax.set_title(f"head {h}  {summary}", fontsize=7, pad=10 if len(m.key_regions) > 1 else 4)
            if h == 0:
                ax.set_ylabel(m.title, fontsize=7)
    fig.suptitle(f"attention: {view.title}\n" + "; ".join(view.notes) +
                 "\nrows: queries, columns: keys; H = mean entropy (nats), d = mean distance (tokens)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _round(t: torch.Tensor, digits: int = 3) -> list:
    return torch.round(t.float(), decimals=digits).tolist()


def attention_page(view: AttentionView) -> str:
    """A page with every map and head: hover a cell for its query, key and weight."""
    maps = [{"title": m.title, "heads": [{"values": _round(m.probs[h]), "entropy": m.entropy[h],
                                          "distance": None if m.distance is None else m.distance[h]}
                                         for h in range(m.probs.shape[0])],
             "rows": m.queries, "cols": m.keys, "rowRegions": m.query_regions, "colRegions": m.key_regions}
            for m in view.maps]
    summary = "".join(
        f"<tr><td>{html.escape(m.title)}</td>" + "".join(
            f"<td>{m.entropy[h]:.2f}" + (f" / {m.distance[h]:.1f}" if m.distance is not None else "") + "</td>"
            for h in range(m.probs.shape[0])) + "</tr>" for m in view.maps)
    heads = max(m.probs.shape[0] for m in view.maps)
    body = (f"<h1>Attention: {html.escape(view.title)}</h1>"
            + "".join(f"<p>{html.escape(n)}</p>" for n in view.notes)
            + "<p>Rows are queries, columns keys; darker = more weight. Red lines separate regions "
              "(GLM's Part A / Part B, Transformer-XL's memory). Entropy in nats (0: one key), distance in "
              "tokens (none for cross-attention: its keys are another sequence).</p>"
            + "<h2>Per head: mean entropy / mean distance</h2><table class='summary'><tr><th>map</th>"
            + "".join(f"<th>head {h}</th>" for h in range(heads)) + f"</tr>{summary}</table>"
            + "<div id='maps'></div>")
    return _page(f"attention: {view.title}", body, {"attention": maps})


# ---------------------------------------------------------------------- masks
def _grid_colors(g: Grid):
    from matplotlib.colors import ListedColormap
    import matplotlib
    if g.kind == "mask":
        return ListedColormap(["#f2f2f2", "#2b6cb0"]), 0, 1
    cmap = matplotlib.colormaps["viridis"].with_extremes(under="white")  # -1: no value there (a masked cell)
    return cmap, 0, max(1, int(g.values.max()))


def save_mask_png(picture: MaskPicture, path: str | Path) -> Path:
    """The example's token rows on top (each stream: tokens, position ids, segments, targets), then
    every mask and position grid the model used."""
    plt = _pyplot()
    layouts = [_columns(s) for s in picture.strips]
    chars = max(sum(widths) for widths in layouts)  # the widest strip, in characters
    lines = sum(2 + len(s.rows) for s in picture.strips)
    per_row = 3  # a lone grid stays the size of three side by side
    grid_rows = -(-len(picture.grids) // per_row)
    width = max(12.0, _CHAR * (chars + _LABELS) + 0.5)
    strip_height = 0.2 * lines + 0.2
    fig = plt.figure(figsize=(width, strip_height + 4.4 * grid_rows + 0.9))
    top, bottom = fig.subfigures(2, 1, height_ratios=[strip_height + 0.9, 4.4 * grid_rows])
    _draw_strips(top.add_subplot(), picture, layouts, width / _CHAR - _LABELS)
    top.suptitle(f"{picture.title}\n" + _wrap(" ".join(picture.notes), 170), fontsize=8, va="top")
    top.subplots_adjust(left=0.01, right=0.99, bottom=0.0, top=1 - 0.8 / (strip_height + 0.9))
    axes = bottom.subplots(grid_rows, per_row, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(picture.grids):
            ax.axis("off")
            continue
        g = picture.grids[i]
        cmap, low, high = _grid_colors(g)
        ax.imshow(g.values.numpy(), cmap=cmap, vmin=low, vmax=high, aspect="auto", interpolation="nearest")
        _ticks(ax, g.rows, g.cols, 6 if max(len(g.rows), len(g.cols)) <= 24 else 4)
        _regions(ax, g.row_regions, g.col_regions)
        if g.kind == "int" and max(g.values.shape) <= 24:
            for r in range(g.values.shape[0]):
                for c in range(g.values.shape[1]):
                    if int(g.values[r, c]) >= 0:
                        ax.text(c, r, str(int(g.values[r, c])), ha="center", va="center", fontsize=5, color="white")
        ax.set_title(_wrap(g.title, 60), fontsize=7, pad=10 if len(g.col_regions) > 1 else 4)
    bottom.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.1, wspace=0.45, hspace=0.55)
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


_LABELS = 30  # width of the strips' row names, in characters
_CHAR = 0.062  # inches per character at the strips' font size


def _columns(strip) -> list[int]:
    """Width of each token column of a strip, in characters: its longest cell, at least 2."""
    cells = [strip.tokens] + [values for _, values in strip.rows]
    return [max(2, max(len(c[i]) for c in cells if i < len(c)) + 1) for i in range(len(strip.tokens))]


def _draw_strips(ax, picture: MaskPicture, layouts: list[list[int]], chars: float) -> None:
    """Each stream as a small table: a title line, the tokens, then one line per row of values;
    ``chars``: the characters the axis is wide, right of the row names."""
    ax.set_xlim(-_LABELS, chars)
    lines = sum(2 + len(s.rows) for s in picture.strips)
    ax.set_ylim(lines, 0)
    ax.axis("off")
    y = 0
    for s, widths in zip(picture.strips, layouts):
        edges = [0]
        for w in widths:
            edges.append(edges[-1] + w)
        ax.text(-_LABELS, y + 0.5, s.title, fontsize=7, fontweight="bold", va="center")
        for name, a, b in s.regions:
            ax.plot([edges[a] + 0.3, edges[b] - 0.3], [y + 0.8, y + 0.8], color="red", linewidth=0.8)
            ax.text((edges[a] + edges[b]) / 2, y + 0.7, name, fontsize=6, color="red", ha="center", va="bottom")
        y += 1
        for label, cells, bold in [("token", s.tokens, True)] + [(n, v, False) for n, v in s.rows]:
            ax.text(-_LABELS, y + 0.5, label[:_LABELS - 2], fontsize=6, va="center", color="#444")
            for x, cell in enumerate(cells):
                ax.text((edges[x] + edges[x + 1]) / 2, y + 0.5, cell, fontsize=6, ha="center", va="center",
                        fontweight="bold" if bold else "normal", family=monospace())
            y += 1


def masks_page(pictures: Sequence[MaskPicture]) -> str:
    """Every picture on one page: token rows as tables, masks and grids on canvases."""
    sections, data = [], []
    for i, p in enumerate(pictures):
        tables = "".join(_strip_table(s) for s in p.strips)
        sections.append(f"<section><h2>{html.escape(p.title)}</h2>"
                        + "".join(f"<p>{html.escape(n)}</p>" for n in p.notes)
                        + f"{tables}<div class='grids' id='grids-{i}'></div></section>")
        data.append([{"title": g.title, "values": g.values.tolist(), "rows": g.rows, "cols": g.cols, "kind": g.kind,
                      "rowRegions": g.row_regions, "colRegions": g.col_regions} for g in p.grids])
    body = ("<h1>Masks and positions, as the model receives them</h1><p>Each example is the objective's own "
            "Batch run through the model: the masks are those its attention applied, the position ids those "
            "its position modules read. Hover a cell for its query, key and value.</p>" + "".join(sections))
    return _page("masks and positions", body, {"masks": data})


def _strip_table(s) -> str:
    esc = html.escape
    header = "".join(f"<td class='tok'>{esc(t)}</td>" for t in s.tokens)
    rows = "".join(f"<tr><th>{esc(name)}</th>" + "".join(f"<td>{esc(v)}</td>" for v in values) + "</tr>"
                   for name, values in s.rows)
    regions = ""
    if s.regions:
        regions = "<tr><th>region</th>" + "".join(f"<td colspan='{b - a}' class='region'>{esc(n)}</td>"
                                                  for n, a, b in s.regions) + "</tr>"
    return f"<h3>{esc(s.title)}</h3><table class='strip'>{regions}<tr><th>token</th>{header}</tr>{rows}</table>"


# ---------------------------------------------------------------------- embeddings
def label_colors(names: Sequence[str]) -> list[str]:
    """A colour per label (hex), the same in the PNG and the page: tab10, tab20 past ten labels,
    then evenly spaced hues."""
    import matplotlib
    from matplotlib.colors import to_hex
    if len(names) <= 10:
        return [to_hex(matplotlib.colormaps["tab10"](i)) for i in range(len(names))]
    if len(names) <= 20:
        return [to_hex(matplotlib.colormaps["tab20"](i)) for i in range(len(names))]
    return [to_hex(matplotlib.colormaps["hsv"](i / len(names))) for i in range(len(names))]


def save_embeddings_png(emb: EmbeddingMap, path: str | Path) -> Path:
    """The points coloured by label, with a legend (each label's count)."""
    plt = _pyplot()
    names = emb.label_names
    colors = label_colors(names)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    size = 28 if len(emb.texts) <= 500 else 10
    for name, color in zip(names, colors):
        rows = [i for i, label in enumerate(emb.labels) if label == name]
        points = emb.points[rows].numpy()
        ax.scatter(points[:, 0], points[:, 1], s=size, color=color, alpha=0.75, edgecolors="none",
                   label=f"{name} ({len(rows)})")
    ax.legend(fontsize=8, markerscale=1.2, loc="best", ncols=1 if len(names) <= 12 else 2)
    axis = "principal axis" if emb.method == "pca" else "t-SNE"
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.grid(alpha=0.25)
    ax.set_title(f"embeddings: {emb.title}\n" + _wrap("; ".join(emb.notes), 110), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def embeddings_page(emb: EmbeddingMap) -> str:
    """The points on an SVG: hover one for its label and text; click a label to hide or show it."""
    names = emb.label_names
    index = {name: i for i, name in enumerate(names)}
    data = {"points": _round(emb.points, 4), "labels": [index[label] for label in emb.labels], "texts": emb.texts,
            "names": names, "colors": label_colors(names),
            "counts": [emb.labels.count(name) for name in names], "method": emb.method}
    body = (f"<h1>Embeddings: {html.escape(emb.title)}</h1>" + "".join(f"<p>{html.escape(n)}</p>" for n in emb.notes)
            + "<p>One point per text, coloured by its label. Hover a point for its text; click a label to hide "
              "or show its points.</p><div id='legend'></div><div id='scatter'></div>")
    return _page(f"embeddings: {emb.title}", body, {"embeddings": data})


# ---------------------------------------------------------------------- the page
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 1px 4px; text-align: center; font-size: 12px; }
th { background: #f6f6f6; text-align: left; font-weight: normal; color: #555; }
td.tok { font-weight: bold; background: #eef4fb; }
td.region { background: #fdecec; color: #b00; }
.grids, .heads { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; max-width: 420px; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 2px 6px;
       font-size: 12px; border-radius: 3px; display: none; max-width: 40em; }
#legend span { display: inline-block; margin: 0 1em 0.3em 0; cursor: pointer; user-select: none; }
#legend span.off { opacity: 0.35; text-decoration: line-through; }
#legend i { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin-right: 0.3em; }
#scatter svg { border: 1px solid #ddd; background: #fff; }
#scatter circle:hover { stroke: #000; stroke-width: 1.5; }
"""

_SCRIPT = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const tip = document.getElementById('tip');
function color(kind, v, top) {
  if (v === null || v === undefined) return '#fff';
  if (kind === 'prob') { const a = Math.max(0, Math.min(1, v));
    return `rgb(${Math.round(255 - 212 * a)},${Math.round(255 - 147 * a)},${Math.round(255 - 79 * a)})`; }
  if (kind === 'mask') return v ? '#2b6cb0' : '#f2f2f2';
  if (v < 0) return '#fff';
  return `hsl(${Math.round(240 - 200 * v / Math.max(1, top))},55%,${v % 2 ? 62 : 72}%)`;
}
function draw(parent, p, caption) {
  const n = p.rows.length, m = p.cols.length, vals = p.values;
  const cell = Math.max(5, Math.min(22, Math.floor(440 / Math.max(n, m, 1))));
  const named = cell >= 9, pad = named ? 70 : 4, top = Math.max(1, ...vals.flat().filter(x => x !== null));
  const cv = document.createElement('canvas');
  cv.width = pad + m * cell + 2; cv.height = pad + n * cell + 2;
  const g = cv.getContext('2d');
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
    g.fillStyle = color(p.kind, vals[i][j], top); g.fillRect(pad + j * cell, pad + i * cell, cell, cell);
    if (p.kind === 'int' && cell >= 16 && vals[i][j] >= 0) {
      g.fillStyle = '#000'; g.font = '9px sans-serif'; g.textAlign = 'center';
      g.fillText(vals[i][j], pad + j * cell + cell / 2, pad + i * cell + cell / 2 + 3); }
  }
  g.strokeStyle = 'red';
  for (const [, a] of p.rowRegions.slice(1)) { g.beginPath(); g.moveTo(pad, pad + a * cell); g.lineTo(pad + m * cell, pad + a * cell); g.stroke(); }
  for (const [, a] of p.colRegions) if (a) { g.beginPath(); g.moveTo(pad + a * cell, pad); g.lineTo(pad + a * cell, pad + n * cell); g.stroke(); }
  if (named) {
    g.fillStyle = '#333'; g.font = `${Math.min(11, cell - 1)}px sans-serif`; g.textAlign = 'right';
    p.rows.forEach((t, i) => g.fillText(t.slice(0, 10), pad - 3, pad + i * cell + cell * 0.75));
    p.cols.forEach((t, j) => { g.save(); g.translate(pad + j * cell + cell * 0.75, pad - 3); g.rotate(-Math.PI / 2);
      g.textAlign = 'left'; g.fillText(t.slice(0, 10), 0, 0); g.restore(); });
  }
  cv.addEventListener('mousemove', e => {
    const r = cv.getBoundingClientRect(), j = Math.floor((e.clientX - r.left - pad) / cell), i = Math.floor((e.clientY - r.top - pad) / cell);
    if (i < 0 || j < 0 || i >= n || j >= m) { tip.style.display = 'none'; return; }
    const region = (rs, k) => { const f = rs.find(([, a, b]) => k >= a && k < b); return f ? ` (${f[0]})` : ''; };
    tip.textContent = `query ${i} ${p.rows[i]}${region(p.rowRegions, i)} \u2192 key ${j} ${p.cols[j]}${region(p.colRegions, j)}: ${vals[i][j]}`;
    tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px'; tip.style.display = 'block';
  });
  cv.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  const fig = document.createElement('figure'), cap = document.createElement('figcaption');
  cap.textContent = caption; fig.append(cv, cap); parent.append(fig);
}
if (DATA.attention) {
  const root = document.getElementById('maps');
  for (const map of DATA.attention) {
    const h = document.createElement('h3'); h.textContent = map.title; root.append(h);
    const row = document.createElement('div'); row.className = 'heads'; root.append(row);
    map.heads.forEach((head, k) => draw(row, {...map, values: head.values, kind: 'prob'},
      `head ${k}: entropy ${head.entropy.toFixed(2)}` + (head.distance === null ? '' : `, distance ${head.distance.toFixed(1)}`)));
  }
}
if (DATA.embeddings) {
  const E = DATA.embeddings, W = 820, H = 620, PAD = 24;
  const xs = E.points.map(p => p[0]), ys = E.points.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = v => PAD + (W - 2 * PAD) * (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5);
  const sy = v => H - PAD - (H - 2 * PAD) * (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5);
  const r = E.points.length > 500 ? 3 : 5, groups = E.names.map(() => []);
  const box = document.getElementById('scatter');  // markup, so the HTML parser makes it SVG (no namespace URL)
  box.innerHTML = `<svg width="${W}" height="${H}">` + E.points.map((p, i) =>
    `<circle class="point" cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="${r}" ` +
    `fill="${E.colors[E.labels[i]]}" fill-opacity="0.75"><title></title></circle>`).join('') + '</svg>';
  box.querySelectorAll('circle').forEach((c, i) => {
    const label = E.labels[i], text = `${E.names[label]}: ${E.texts[i]}`;
    c.dataset.label = E.names[label];
    c.querySelector('title').textContent = text;  // as text: nothing in a text is read as markup
    c.addEventListener('mousemove', e => {
      tip.textContent = text; tip.style.display = 'block';
      tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px'; });
    c.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
    groups[label].push(c);
  });
  const legend = document.getElementById('legend');
  E.names.forEach((name, k) => {
    const s = document.createElement('span'), dot = document.createElement('i');
    dot.style.background = E.colors[k]; s.append(dot, `${name} (${E.counts[k]})`);
    s.addEventListener('click', () => {
      const off = s.classList.toggle('off');
      groups[k].forEach(c => { c.style.display = off ? 'none' : ''; });
    });
    legend.append(s);
  });
}
if (DATA.masks) DATA.masks.forEach((grids, i) => {
  const root = document.getElementById('grids-' + i);
  for (const grid of grids) draw(root, grid, grid.title);
});
"""


def _page(title: str, body: str, data: dict) -> str:
    """A whole HTML document: the body, the data as inline JSON, and the drawing script."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}<div id='tip'></div>"
            f"<script type='application/json' id='data'>{payload}</script><script>{_SCRIPT}</script></body></html>\n")


def write_page(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path
