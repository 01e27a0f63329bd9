"""A tiny document model rendered to Markdown and to self-contained HTML (images inlined as
base64), so the model card and the report are written once and read in either form."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Section:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def text(self, text: str) -> Section:
        self.blocks.append(("text", text))
        return self

    def bullets(self, items: list[str]) -> Section:
        self.blocks.append(("bullets", items))
        return self

    def table(self, header: list[str], rows: list[list[object]]) -> Section:
        self.blocks.append(("table", header, rows))
        return self

    def image(self, alt: str, png: bytes) -> Section:
        self.blocks.append(("image", alt, png))
        return self

    def raw_html(self, markup: str, markdown_fallback: str) -> Section:
        self.blocks.append(("html", markup, markdown_fallback))
        return self


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        self.sections.append(Section(title))
        return self.sections[-1]

    def markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for section in self.sections:
            out.append(f"## {section.title}\n")
            for kind, *rest in section.blocks:
                if kind == "text":
                    out.append(rest[0] + "\n")
                elif kind == "bullets":
                    out.append("".join(f"- {item}\n" for item in rest[0]))
                elif kind == "table":
                    header, rows = rest
                    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                    lines += ["| " + " | ".join(_cell(c).replace("|", "\\|") for c in row) + " |" for row in rows]
                    out.append("\n".join(lines) + "\n")
                elif kind == "image":
                    out.append(f"*{rest[0]}: see the HTML version.*\n")
                elif kind == "html":
                    out.append(rest[1] + "\n")
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for section in self.sections:
            body.append(f"<section><h2>{html.escape(section.title)}</h2>")
            for kind, *rest in section.blocks:
                if kind == "text":
                    body.append(f"<p>{html.escape(rest[0])}</p>")
                elif kind == "bullets":
                    body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in rest[0]) + "</ul>")
                elif kind == "table":
                    header, rows = rest
                    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""  # no empty bar
                    cells = "".join(
                        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
                    )
                    body.append(f"<table>{thead}<tbody>{cells}</tbody></table>")
                elif kind == "image":
                    data = base64.b64encode(rest[1]).decode()
                    body.append(f'<img alt="{html.escape(rest[0])}" src="data:image/png;base64,{data}">')
                elif kind == "html":
                    body.append(rest[0])
            body.append("</section>")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n"
        )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; } img { max-width: 48%; margin: .3em; border: 1px solid #ddd; }
.tokens { font-family: ui-monospace, monospace; margin: .2em 0; } .tok { padding: 0 1px; border-radius: 2px; }
.label { display: inline-block; width: 9em; color: #555; font-family: system-ui, sans-serif; font-size: 90%; }
.completion { margin: .8em 0; padding: .4em .6em; border-left: 3px solid #bbb; }
"""
