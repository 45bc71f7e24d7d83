"""Reading a rendered study report's Markdown back: a section's text, and its tables' rows."""


def section(md: str, heading: str) -> str:
    """The text of the section ``## heading``, up to the next section."""
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def rows(md: str, heading: str) -> list[dict[str, str]]:
    """Every table row of section ``heading`` as {column: cell}, Markdown escapes removed."""
    out, header = [], None
    for line in section(md, heading).splitlines():
        if line.startswith("|---"):
            continue
        if not line.startswith("| "):
            header = None
            continue
        cells = [c.strip().replace("\\", "") for c in line.strip("|").split("|")]
        if header is None:
            header = cells
        else:
            out.append(dict(zip(header, cells)))
    return out
