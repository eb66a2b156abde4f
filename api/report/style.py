"""The report's stylesheet: inline, light, print-friendly (A4 and Letter)."""

from __future__ import annotations

from typing import Final

CSS: Final = """
:root { color-scheme: light; }
* { box-sizing: border-box; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: #1a1a1a; background: #fff; max-width: 1060px; margin: 0 auto;
  padding: 16px 24px 48px; }
header { border-bottom: 2px solid #1a1a1a; margin-bottom: 10px; }
h1 { font-size: 24px; margin: 4px 0 2px; }
h2 { font-size: 19px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #999; }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 13px; margin: 12px 0 4px; }
p { margin: 4px 0 8px; }
.meta { color: #444; margin: 2px 0 8px; }
nav ol { columns: 3; margin: 6px 0 0; padding-left: 20px; }
nav a, a.toc { color: #0b4f8a; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 3px 6px; border-bottom: 1px solid #ddd; text-align: left;
  vertical-align: top; }
th { font-weight: 600; border-bottom: 1.5px solid #888; }
td.n, th.n { text-align: right; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 1.5px solid #888; }
.name { overflow-wrap: anywhere; }
.id { white-space: nowrap; }
.url { word-break: break-all; font-family: ui-monospace, Menlo, Consolas, monospace;
  font-size: 12px; }
figure { margin: 10px 0 16px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-size: 12px; color: #333; margin-top: 2px; }
.chart-svg { display: block; width: 100%; height: auto; }
.chart-svg text { font-size: 10.5px; fill: #444; }
.chart-svg .grid line { stroke: #e8e8e8; stroke-width: 1; }
.chart-svg .tick, .chart-svg .lane { stroke: #999; stroke-width: 1; }
.chart-svg .frame { fill: none; stroke: #b5b5b5; stroke-width: 1; }
.chart-svg .series { fill: none; stroke-linejoin: round; stroke-linecap: round; }
.chart-svg .rule { stroke-width: 1.5; }
.chart-svg .rule-label { font-weight: 600; }
.chart-svg .shade { fill-opacity: 0.22; }
.chart-svg .layer { fill-opacity: 0.8; stroke: #fff; stroke-width: 0.5; }
.chart-svg .marker { stroke: #555; stroke-dasharray: 2 3; }
.chart-svg .marker-label { fill: #333; }
.chart-svg .bar-label { font-size: 9.5px; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 14px; list-style: none; margin: 4px 0 0;
  padding: 0; font-size: 12px; }
.swatch { width: 16px; height: 14px; vertical-align: -2px; margin-right: 4px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr));
  gap: 10px; margin: 8px 0 12px; }
.card { border: 1px solid #c8c8c8; border-radius: 4px; padding: 8px 10px;
  break-inside: avoid; page-break-inside: avoid; }
.card .label { font-size: 12px; color: #444; }
.card .big { font-size: 20px; font-weight: 650; margin: 2px 0; }
.bad { color: #a01818; font-weight: 600; }
.warn { color: #8a5300; font-weight: 600; }
.good { color: #1b5e20; }
.grid2 { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 4px 22px; }
.bullet { width: 100%; min-width: 90px; max-width: 200px; height: auto; display: block; }
figure.inline { margin: 0; }
.bullet-track { fill: #ececec; }
.bullet-bar { fill: #0072B2; }
.empty { color: #555; font-style: italic; }
footer { margin-top: 28px; border-top: 1px solid #999; padding-top: 6px; color: #444;
  font-size: 12px; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
@page { size: auto; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  table { font-size: 10px; }
  th, td { padding: 2px 4px; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3, h4 { break-after: avoid; page-break-after: avoid; }
  section.major { break-before: page; page-break-before: always; }
  tr, .cards { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  .grid2 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
}
"""
