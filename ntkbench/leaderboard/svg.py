"""matplotlib figures as inline, accessible, deterministic ``<svg>`` elements: the plumbing
under the leaderboard's and the study's plots.

:func:`new_figure` makes a figure with constrained layout on an Agg canvas (no pyplot, no GUI);
:func:`to_svg` saves it cropped to everything drawn (``bbox_inches="tight"``: no label is cut
off), with text as text, no date, a fixed hash salt and element ids prefixed by a key, so the
same figure always gives the same bytes and several share one page; the element has
``role="img"``, an ``aria-label`` and a ``<title>``. :func:`styled` draws under matplotlib's
default style whatever the user's matplotlibrc says.
"""

from __future__ import annotations

import io
import re
from html import escape

import matplotlib as mpl
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["FIG_WIDTH_IN", "MARKERS", "new_figure", "to_svg", "styled", "as_text"]

FIG_WIDTH_IN = 4.8  # shown at its natural size (about 460 px) on a wide screen, scaled down on a phone
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_RC = {"svg.fonttype": "none", "font.size": 11, "legend.fontsize": 10, "xtick.labelsize": 10.5,
       "ytick.labelsize": 10.5}


def as_text(s: str) -> str:
    """A record string as literal matplotlib text: ``$`` would start mathtext (and can raise on
    bad math), and a leading ``_`` hides a legend entry."""
    s = s.replace("\\", "\\\\").replace("$", r"\$")
    return "\u200b" + s if s.startswith("_") else s


def new_figure(height_in: float, width_in: float = FIG_WIDTH_IN) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


_TAG = re.compile(r"<[^>]*>")
_ID = re.compile(r'(\s)id="([^"]*)"')
_URL = re.compile(r"url\(#([^)]*)\)")
_HREF = re.compile(r'((?:xlink:)?href)="#([^"]*)"')


def to_svg(fig: Figure, key: str, alt: str) -> str:
    """Save ``fig`` as an inline ``<svg role="img" class="plot">`` element labelled ``alt``:
    XML prolog and metadata removed, element ids prefixed with ``key``. Deterministic."""
    overrides = {"svg.hashsalt": f"ntkbench:{key}", "svg.fonttype": "none"}
    with mpl.rc_context(overrides):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.06)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)

    def fix_tag(match: re.Match[str]) -> str:
        tag = _ID.sub(lambda m: f'{m.group(1)}id="{key}-{m.group(2)}"', match.group(0))
        tag = _URL.sub(lambda m: f"url(#{key}-{m.group(1)})", tag)
        return _HREF.sub(lambda m: f'{m.group(1)}="#{key}-{m.group(2)}"', tag)

    svg = _TAG.sub(fix_tag, svg)
    head_end = svg.index(">") + 1
    svg = svg[:head_end] + f"\n <title>{escape(alt)}</title>" + svg[head_end:]
    label = escape(alt, quote=True)
    return svg.replace("<svg xmlns:xlink", f'<svg role="img" class="plot" aria-label="{label}" xmlns:xlink',
                       1).strip() + "\n"


def styled(draw):  # type: ignore[no-untyped-def]
    """Run ``draw`` under matplotlib's default style and this module's font sizes."""

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        with mpl.style.context("default"), mpl.rc_context(_RC):
            return draw(*args, **kwargs)

    wrapper.__doc__ = draw.__doc__
    wrapper.__name__ = draw.__name__
    return wrapper
