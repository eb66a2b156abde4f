"""The monthly capacity report as one self-contained HTML page (inline CSS and SVG, no script).

`render(report)` fills api/report/templates with `analytics.outputs.report_data.gather()`'s
figures and view.py's charts. The templates escape every value (autoescaping, strict about
undefined names); only the stylesheet, this policy and svg.py's charts, which escape their own
text, go in as markup. Nothing refers to another document (a post-mortem URL is printed as text,
not linked), and the Content-Security-Policy meta tag forbids fetching anything, so the file
opens the same air-gapped.
"""

from __future__ import annotations

import re
from typing import Final

from jinja2 import Environment, PackageLoader, StrictUndefined, nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from markupsafe import Markup

from analytics.outputs.report_capacity import TOP_NAMESPACES
from analytics.outputs.report_model import Report
from api.report import view
from api.report.charts import RESOURCE, STORAGE_LEGEND
from api.report.fmt import (
    DASH,
    OUT_OF_RANGE,
    count,
    day,
    days,
    duration,
    esc,
    minute,
    money,
    num,
    pct,
    points,
    size,
)
from api.report.style import CSS

#: No fetch of any kind, no script, no form, no frame: the page is inert wherever it is opened.
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_LINE_BREAK: Final = re.compile(r"\n[ \t]*")


class OneLine(Extension):
    """`{% oneline %}…{% endoneline %}`: template text without its line breaks and indentation."""

    # A set, as jinja2.ext.Extension declares it.
    tags = {"oneline"}  # noqa: RUF012

    def parse(self, parser: Parser) -> list[nodes.Node]:
        """The block's statements, their text joined."""
        next(parser.stream)
        body = parser.parse_statements(("name:endoneline",), drop_needle=True)
        # The template's own text, never a value: templates can be laid out while the page keeps
        # each section on one line, as every report issued so far has it.
        for node in body:
            for text in node.find_all(nodes.TemplateData):
                text.data = _LINE_BREAK.sub("", text.data)
        return body


def _escaped(value: object) -> Markup:
    """A value as text, escaped; markup as it is."""
    if isinstance(value, Markup):
        return value
    # html.escape's entities (&quot;, &#x27;), not markupsafe's (&#34;, &#39;): the same safety,
    # and the bytes of every report issued so far.
    return Markup(esc(value))


_ENV: Final = Environment(
    loader=PackageLoader("api.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    finalize=_escaped,
    extensions=[OneLine],
    keep_trailing_newline=True,
)
_ENV.filters.update(
    day=day,
    days=days,
    duration=duration,
    minute=minute,
    money=money,
    num=num,
    pct=pct,
    points=points,
    size=size,
    # Not `count`: Jinja's own count filter is the length of a sequence.
    whole=count,
)
_ENV.globals.update(
    DASH=DASH,
    LIMIT=view.LIMIT,
    OUT_OF_RANGE=OUT_OF_RANGE,
    RESOURCE=RESOURCE,
    SECTIONS=view.SECTIONS,
    STORAGE_LEGEND=STORAGE_LEGEND,
    TOP_NAMESPACES=TOP_NAMESPACES,
)


def render(report: Report) -> str:
    """The whole page for the figures of one month."""
    page = _ENV.get_template("report.html.j2")
    return page.render(r=report, v=view.build(report), csp=Markup(CSP), css=Markup(CSS))


__all__ = ["CSP", "render"]
