"""A self-contained HTML report of findings (and of an evaluation): one file, no network, works offline.

The table with flagged cells coloured by method (messages on hover), filters by column, method and confidence
(also from the URL: ``report.html#column=city&method=dependency&min=0.5``), counts per column and method as SVG
charts, and for evaluations the precision/recall/F1 tables, a precision–recall curve per method and the cells
that were missed (dashed) or wrongly flagged (marked).

Lives in the client (pyarrow and the standard library only); ``dqd evaluate --report`` uses it too.
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ._io import read_batches

MAX_ROWS = 5000  # rows embedded in the report; bigger tables show the rows with findings (or errors) first
METHOD_COLORS = {"validation": "#e15759", "pattern": "#f28e2b", "dependency": "#4e79a7", "combined": "#b07aa1"}
_PALETTE = ["#59a14f", "#edc948", "#76b7b2", "#ff9da7", "#9c755f", "#bab0ac"]


def _rows_of_file(path: str | os.PathLike[str], columns: Sequence[str], findings: pa.Table,
                  max_rows: int, format: str | None) -> tuple[pa.Table, list[int], int]:
    """The rows of ``path`` worth showing — those with findings, up to ``max_rows`` — read in one
    streaming pass (the file is never loaded whole), with their stream row numbers and the row count."""
    wanted = set(sorted(set(findings.column("row").to_pylist()))[:max_rows]) if findings.num_rows else set()
    if not wanted:
        wanted = set(range(max_rows))
    parts, numbers, seen = [], [], 0
    for batch in read_batches(path, columns, format=format):
        rows = [i for i in range(batch.num_rows) if seen + i in wanted] if wanted else []
        if rows:
            parts.append(batch.take(pa.array(rows, pa.int64())))
            numbers.extend(seen + i for i in rows)
        seen += batch.num_rows
    schema = pa.schema([(c, pa.string()) for c in columns])
    table = pa.Table.from_batches(parts, schema=parts[0].schema) if parts else schema.empty_table()
    return table, numbers, seen


def _text_columns(table: pa.Table) -> list[list[str | None]]:
    out = []
    for col in table.columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        try:
            col = col.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            col = pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
        out.append(col)
    return out  # type: ignore[return-value]


def report_data(table: pa.Table, findings: pa.Table | pa.RecordBatch, *, evaluation: Mapping[str, Any] | None = None,
                truth: pa.Table | None = None, title: str = "dqd report", max_rows: int = MAX_ROWS,
                row_numbers: Sequence[int] | None = None, total_rows: int | None = None) -> dict[str, Any]:
    """The JSON the page renders (exposed for tests and other front ends).

    ``row_numbers``: ``table`` holds only these rows of a larger input of ``total_rows`` rows.
    """
    if isinstance(findings, pa.RecordBatch):
        findings = pa.Table.from_batches([findings])
    names = list(table.column_names)
    if findings.num_rows:
        findings = findings.filter(pc.not_equal(findings.column("code"), "OK"))
    methods = sorted(set(findings.column("method").to_pylist())) if findings.num_rows else []
    if evaluation:
        methods = list(dict.fromkeys([*evaluation.get("methods", {}), *methods]))
    col_index = {n: i for i, n in enumerate(names)}
    meth_index = {m: i for i, m in enumerate(methods)}
    f_rows = findings.column("row").to_pylist() if findings.num_rows else []
    f_cols = findings.column("column").to_pylist() if findings.num_rows else []
    f_meth = findings.column("method").to_pylist() if findings.num_rows else []
    t_rows = truth.column("row").to_pylist() if truth is not None else []
    t_cols = truth.column("column").to_pylist() if truth is not None else []
    # which rows to embed
    texts = _text_columns(table)
    if row_numbers is not None:
        n = table.num_rows if total_rows is None else total_rows
        shown = list(row_numbers)
        take = pa.array(range(len(shown)), pa.int64())
    else:
        n = table.num_rows
        shown = list(range(n)) if n <= max_rows else sorted(set(f_rows) | set(t_rows))[:max_rows]
        take = pa.array(shown, pa.int64())
    shown_set = set(shown)
    cols = [c.take(take).to_pylist() for c in texts]
    rows = [[r, [cols[j][i] for j in range(len(names))]] for i, r in enumerate(shown)]
    # findings on embedded rows; counts over all findings
    by_column: dict[str, dict[str, int]] = {c: {} for c in names}
    by_method: dict[str, int] = {m: 0 for m in methods}
    items = []
    codes = findings.column("code").to_pylist() if findings.num_rows else []
    msgs = findings.column("message").to_pylist() if findings.num_rows else []
    confs = findings.column("confidence").to_pylist() if findings.num_rows else []
    for r, c, m, code, msg, conf in zip(f_rows, f_cols, f_meth, codes, msgs, confs):
        if c in by_column:
            by_column[c][m] = by_column[c].get(m, 0) + 1
        by_method[m] = by_method.get(m, 0) + 1
        if r in shown_set and c in col_index:
            items.append([r, col_index[c], meth_index[m], code, msg, round(float(conf), 3)])
    truth_items = [[r, col_index[c]] for r, c in zip(t_rows, t_cols) if r in shown_set and c in col_index]
    colors = {m: METHOD_COLORS.get(m, _PALETTE[i % len(_PALETTE)]) for i, m in enumerate(methods)}
    return {
        "title": title, "columns": names, "methods": methods, "colors": colors, "rows": rows,
        "total_rows": n, "shown_rows": len(shown), "findings": items, "total_findings": int(findings.num_rows),
        "counts": {"by_column": by_column, "by_method": by_method},
        "truth": truth_items if truth is not None else None,
        "evaluation": _plain(evaluation) if evaluation else None,
    }


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def render_report(table_or_path: pa.Table | str | os.PathLike[str], findings: pa.Table | pa.RecordBatch, *,
                  evaluation: Mapping[str, Any] | None = None, path: str | os.PathLike[str],
                  truth: pa.Table | None = None, title: str | None = None, max_rows: int = MAX_ROWS,
                  columns: Sequence[str] | None = None, format: str | None = None) -> Path:
    """Write the report for ``table_or_path`` and its ``findings`` to ``path``.

    A file (with the ``columns`` to show) is streamed once for the rows with findings; a table is
    used as it is. ``evaluation`` (the dict ``dqd evaluate`` writes) adds the score tables and
    precision–recall curves; ``truth`` (row, column) marks missed and wrongly flagged cells.
    """
    if isinstance(findings, pa.RecordBatch):
        findings = pa.Table.from_batches([findings])
    if title is None:
        title = "dqd report" if isinstance(table_or_path, pa.Table) else f"dqd report: {Path(table_or_path).name}"
    if isinstance(table_or_path, pa.Table):
        data = report_data(table_or_path, findings, evaluation=evaluation, truth=truth, title=title,
                           max_rows=max_rows)
    else:
        if not columns:
            columns = list(dict.fromkeys(findings.column("column").to_pylist())) if findings.num_rows else []
        table, numbers, total = _rows_of_file(table_or_path, columns, findings, max_rows, format)
        data = report_data(table, findings, evaluation=evaluation, truth=truth, max_rows=max_rows,
                           title=title, row_numbers=numbers,
                           total_rows=total)
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root{--fg:#1d2330;--muted:#6b7280;--line:#e5e7eb;--bg:#fff;--soft:#f6f7f9}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 24px;border-bottom:1px solid var(--line)}h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}
.muted{color:var(--muted)}main{padding:0 24px 40px}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center;padding:12px 0;position:sticky;top:0;background:var(--bg);z-index:3;border-bottom:1px solid var(--line)}
.controls label{display:flex;gap:6px;align-items:center}select,input{font:inherit}
.legend span{display:inline-flex;align-items:center;gap:5px;margin-right:12px}.sw{width:12px;height:12px;border-radius:2px;display:inline-block}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:18px}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 14px;background:var(--bg)}
table.scores{border-collapse:collapse;font-variant-numeric:tabular-nums}table.scores th,table.scores td{padding:3px 10px;border-bottom:1px solid var(--line);text-align:right}
table.scores th:first-child,table.scores td:first-child{text-align:left}
.big{font-size:22px;font-weight:600}
.tablewrap{overflow:auto;max-height:75vh;border:1px solid var(--line);border-radius:8px}
table.data{border-collapse:separate;border-spacing:0;font-size:13px}
table.data th{position:sticky;top:0;background:var(--soft);z-index:2;text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
table.data td{padding:3px 8px;border-bottom:1px solid var(--line);white-space:nowrap;max-width:320px;overflow:hidden;text-overflow:ellipsis}
table.data td.rowno{color:var(--muted);text-align:right;background:var(--soft)}
td.flag{color:#fff;cursor:help}td.fn{outline:2px dashed #d62728;outline-offset:-3px}td.fp{box-shadow:inset 0 0 0 2px #111}
td.empty{color:var(--muted);font-style:italic}
svg text{font:11px system-ui,sans-serif;fill:var(--fg)}
.note{font-size:12px;color:var(--muted)}
</style></head>
<body>
<header><h1 id="title"></h1><div id="summary" class="muted"></div></header>
<main>
<div class="controls">
<label>Column <select id="f-column"><option value="">all</option></select></label>
<label>Method <select id="f-method"><option value="">all</option></select></label>
<label>Min confidence <input id="f-min" type="range" min="0" max="1" step="0.05" value="0"><span id="f-min-v">0.00</span></label>
<label><input id="f-all" type="checkbox"> show rows without findings</label>
<span class="legend" id="legend"></span>
<span id="visible" class="muted"></span>
</div>
<section id="eval"></section>
<h2>Findings</h2>
<div class="grid"><div class="card"><div class="muted">per column</div><div id="chart-columns"></div></div>
<div class="card"><div class="muted">per method</div><div id="chart-methods"></div></div></div>
<h2>Table</h2>
<div class="note" id="rows-note"></div>
<div class="tablewrap"><table class="data" id="data"><thead></thead><tbody></tbody></table></div>
</main>
<script type="application/json" id="dqd-data">__DATA__</script>
<script>
(function(){
"use strict";
const D=JSON.parse(document.getElementById("dqd-data").textContent);
const SVG="http://www.w3.org/2000/svg";
const $=id=>document.getElementById(id);
function el(tag,attrs,text){const e=document.createElement(tag);for(const k in (attrs||{}))e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;return e}
function sv(tag,attrs,text){const e=document.createElementNS(SVG,tag);for(const k in (attrs||{}))e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;return e}
function fmt(x){return (x===null||x===undefined)?"-":Number(x).toFixed(3)}
const color=m=>D.colors[m]||"#888";
$("title").textContent=D.title;
document.title=D.title;
$("summary").textContent=`${D.total_rows.toLocaleString()} rows × ${D.columns.length} columns · ${D.total_findings.toLocaleString()} findings`+(D.evaluation?` · ${D.evaluation.table.errors.toLocaleString()} erroneous cells in the truth`:"");
// ---- cell index: findings and truth per cell --------------------------------------------------------------
const cells=new Map();  // "row:col" -> [[method, code, message, conf], ...]
for(const [r,c,m,code,msg,conf] of D.findings){const k=r+":"+c;if(!cells.has(k))cells.set(k,[]);cells.get(k).push([D.methods[m],code,msg,conf])}
const truth=new Set((D.truth||[]).map(([r,c])=>r+":"+c));
// ---- controls ---------------------------------------------------------------------------------------------
for(const c of D.columns)$("f-column").appendChild(el("option",{value:c},c));
for(const m of D.methods)$("f-method").appendChild(el("option",{value:m},m));
for(const m of D.methods){const s=el("span");const sw=el("span",{class:"sw",style:"background:"+color(m)});s.appendChild(sw);s.appendChild(document.createTextNode(m));$("legend").appendChild(s)}
function readHash(){const p=new URLSearchParams(location.hash.replace(/^#/,""));
  $("f-column").value=D.columns.includes(p.get("column"))?p.get("column"):"";
  $("f-method").value=D.methods.includes(p.get("method"))?p.get("method"):"";
  const mn=parseFloat(p.get("min"));$("f-min").value=isFinite(mn)?Math.min(1,Math.max(0,mn)):0;
  $("f-all").checked=p.get("all")==="1"}
function writeHash(){const p=new URLSearchParams();
  if($("f-column").value)p.set("column",$("f-column").value);if($("f-method").value)p.set("method",$("f-method").value);
  if(parseFloat($("f-min").value)>0)p.set("min",$("f-min").value);if($("f-all").checked)p.set("all","1");
  const h=p.toString();history.replaceState(null,"",h?"#"+h:location.pathname+location.search);render()}
for(const id of ["f-column","f-method","f-min","f-all"])$(id).addEventListener("input",writeHash);
window.addEventListener("hashchange",()=>{readHash();render()});
// ---- charts -----------------------------------------------------------------------------------------------
function barChart(target,labels,series){  // series: label -> {method: count}
  const W=440,rowH=18,left=130,top=6,maxv=Math.max(1,...labels.map(l=>Object.values(series[l]||{}).reduce((a,b)=>a+b,0)));
  const svg=sv("svg",{width:W,height:top+labels.length*rowH+18,viewBox:`0 0 ${W} ${top+labels.length*rowH+18}`,role:"img"});
  labels.forEach((l,i)=>{const y=top+i*rowH;svg.appendChild(sv("text",{x:left-6,y:y+12,"text-anchor":"end"},l.length>20?l.slice(0,19)+"…":l));
    let x=left;let total=0;for(const m of D.methods){const v=(series[l]||{})[m]||0;if(!v)continue;total+=v;const w=(W-left-50)*v/maxv;
      const r=sv("rect",{x:x,y:y+2,width:Math.max(w,0.5),height:rowH-5,fill:color(m),"data-method":m,"data-label":l,"data-count":v});
      r.appendChild(sv("title",{},`${l} · ${m}: ${v}`));svg.appendChild(r);x+=w}
    svg.appendChild(sv("text",{x:x+4,y:y+12,class:"count"},String(total)))});
  target.replaceChildren(svg)}
barChart($("chart-columns"),D.columns,D.counts.by_column);
const byMethod={};for(const m of D.methods)byMethod[m]={[m]:D.counts.by_method[m]||0};
barChart($("chart-methods"),D.methods,byMethod);
// ---- evaluation -------------------------------------------------------------------------------------------
function scoreTable(rows,head){const t=el("table",{class:"scores"});const tr=el("tr");for(const h of head)tr.appendChild(el("th",{},h));t.appendChild(tr);
  for(const r of rows){const x=el("tr");r.forEach(v=>x.appendChild(el("td",{},typeof v==="number"&&!Number.isInteger(v)?fmt(v):String(v))));t.appendChild(x)}return t}
function prCurves(target,curves){const W=360,H=300,L=40,B=34,T=8,R=10;
  const svg=sv("svg",{width:W,height:H,viewBox:`0 0 ${W} ${H}`,role:"img",id:"pr-curve"});
  const X=v=>L+v*(W-L-R),Y=v=>H-B-v*(H-B-T);
  svg.appendChild(sv("rect",{x:L,y:T,width:W-L-R,height:H-B-T,fill:"none",stroke:"#ccc"}));
  for(const v of [0,0.25,0.5,0.75,1]){svg.appendChild(sv("text",{x:X(v),y:H-B+14,"text-anchor":"middle"},v.toFixed(2)));
    svg.appendChild(sv("text",{x:L-4,y:Y(v)+4,"text-anchor":"end"},v.toFixed(2)));
    svg.appendChild(sv("line",{x1:L,x2:W-R,y1:Y(v),y2:Y(v),stroke:"#f0f0f0"}))}
  svg.appendChild(sv("text",{x:(L+W-R)/2,y:H-4,"text-anchor":"middle"},"recall"));
  const yl=sv("text",{x:12,y:(T+H-B)/2,"text-anchor":"middle",transform:`rotate(-90 12 ${(T+H-B)/2})`},"precision");svg.appendChild(yl);
  for(const m of Object.keys(curves)){const pts=curves[m];if(!pts||!pts.length)continue;
    const d=[[0,pts[0].precision],...pts.map(p=>[p.recall,p.precision])].map(([r,p])=>`${X(r).toFixed(1)},${Y(p).toFixed(1)}`).join(" ");
    const pl=sv("polyline",{points:d,fill:"none",stroke:color(m),"stroke-width":2,"data-method":m,class:"pr"});pl.appendChild(sv("title",{},m));svg.appendChild(pl)}
  target.appendChild(svg)}
if(D.evaluation){const E=D.evaluation,box=$("eval");box.appendChild(el("h2",{},"Evaluation"));
  const g=el("div",{class:"grid"});const c1=el("div",{class:"card"});const o=E.overall;
  c1.appendChild(el("div",{class:"muted"},`overall (${o.verdict}) against ${E.table.errors} erroneous of ${E.table.cells} cells`));
  c1.appendChild(el("div",{class:"big",id:"overall-f1"},`F1 ${fmt(o.f1)}`));
  c1.appendChild(el("div",{},`precision ${fmt(o.precision)} · recall ${fmt(o.recall)}`));
  c1.appendChild(scoreTable([["flagged & wrong (tp)",o.tp],["flagged & right (fp)",o.fp],["missed (fn)",o.fn],["right & not flagged (tn)",o.tn]],["confusion","cells"]));
  g.appendChild(c1);
  const c2=el("div",{class:"card"});c2.appendChild(el("div",{class:"muted"},"per method"));
  c2.appendChild(scoreTable(Object.entries(E.methods).map(([m,s])=>[m,s.precision,s.recall,s.f1,s.tp,s.fp,s.fn]),["method","precision","recall","F1","tp","fp","fn"]));g.appendChild(c2);
  const c3=el("div",{class:"card"});c3.appendChild(el("div",{class:"muted"},"precision–recall curve per method (threshold on confidence)"));prCurves(c3,E.curves||{});g.appendChild(c3);
  box.appendChild(g);
  const c4=el("div",{class:"card",style:"margin-top:18px;overflow:auto"});c4.appendChild(el("div",{class:"muted"},"F1 per column × method (precision / recall on hover)"));
  const ms=Object.keys(E.methods);const t=el("table",{class:"scores",id:"column-scores"});const hr=el("tr");["column","errors",...ms].forEach(h=>hr.appendChild(el("th",{},h)));t.appendChild(hr);
  for(const [col,c] of Object.entries(E.columns)){const tr=el("tr");tr.appendChild(el("td",{},col));tr.appendChild(el("td",{},String(c.errors)));
    for(const m of ms){const s=c.methods[m];const td=el("td",{title:`precision ${fmt(s.precision)} · recall ${fmt(s.recall)} · tp ${s.tp} fp ${s.fp} fn ${s.fn}`},(c.errors||s.fp)?fmt(s.f1):"-");tr.appendChild(td)}t.appendChild(tr)}
  c4.appendChild(t);box.appendChild(c4)}
// ---- the table --------------------------------------------------------------------------------------------
const thead=$("data").tHead,tbody=$("data").tBodies[0];
{const tr=el("tr");tr.appendChild(el("th",{},"row"));for(const c of D.columns)tr.appendChild(el("th",{},c));thead.appendChild(tr)}
$("rows-note").textContent=D.shown_rows<D.total_rows?`Showing ${D.shown_rows.toLocaleString()} of ${D.total_rows.toLocaleString()} rows: those with findings${D.truth?" or errors":""} first.`:"";
function render(){
  const fc=$("f-column").value,fm=$("f-method").value,mn=parseFloat($("f-min").value)||0,all=$("f-all").checked;
  $("f-min-v").textContent=mn.toFixed(2);
  const ci=fc?D.columns.indexOf(fc):-1;
  const frag=document.createDocumentFragment();let nrows=0,ncells=0;
  for(const [r,vals] of D.rows){let any=false;const tr=el("tr");tr.appendChild(el("td",{class:"rowno"},String(r)));
    vals.forEach((v,j)=>{const k=r+":"+j;const td=el("td");const text=v===null?"null":(v===""?"empty":v);td.textContent=text;if(v===null||v==="")td.classList.add("empty");
      const fs=(cells.get(k)||[]).filter(f=>(!fm||f[0]===fm)&&f[3]>=mn&&(ci<0||j===ci));
      const err=truth.has(k)&&(ci<0||j===ci);
      if(fs.length){fs.sort((a,b)=>b[3]-a[3]);td.classList.add("flag","m-"+fs[0][0]);td.style.background=color(fs[0][0]);
        td.setAttribute("data-methods",[...new Set(fs.map(f=>f[0]))].join(" "));
        td.title=fs.map(f=>`${f[0]} ${f[1]} (${f[3].toFixed(2)}): ${f[2]}`).join("\n");any=true;ncells++;
        if(D.truth&&!truth.has(k))td.classList.add("fp")}
      else if(err&&D.truth){td.classList.add("fn");td.title="missed: this cell differs from the clean table";if(!fm)any=true}
      tr.appendChild(td)});
    if(any||all){frag.appendChild(tr);nrows++}}
  tbody.replaceChildren(frag);
  $("visible").textContent=`${ncells.toLocaleString()} flagged cells in ${nrows.toLocaleString()} rows shown`;
  document.body.setAttribute("data-filter",`column=${fc};method=${fm};min=${mn}`);
  document.body.setAttribute("data-flagged-cells",String(ncells));
}
readHash();render();
})();
</script>
</body></html>
"""
