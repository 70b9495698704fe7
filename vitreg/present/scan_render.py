"""Write the report card of ``vitreg scan``: ``scan_<model>.png``, ``.html`` and ``.json``, atomically.

Paper: Fig. 2, 3, 4a, 7 (what the card shows; see :mod:`vitreg.measure.scan`). The figure is drawn by
:func:`vitreg.present.plots.plot_scan_card`; the HTML page embeds it beside the verdict and its evidence. A card
computed from random weights says so in its title, its verdict and its JSON (``random_weights``).
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any

from vitreg.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from vitreg.present.plots import RANDOM_LABEL, figure_png, plot_scan_card
from vitreg.measure.scan import ScanReport


def card_stem(model: str) -> str:
    """``scan_<model>`` with anything but letters, digits, ``-``, ``_`` and ``.`` replaced (a timm name with a
    slash or a hub tag stays one file name)."""
    return "scan_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def _html(card: dict[str, Any], png: bytes) -> str:
    """A self-contained page: verdict, evidence, the figure (inline PNG), the key numbers."""
    e = html.escape
    m = card["model"]
    warn = (f'<p class="random"><b>{e(RANDOM_LABEL)}</b>: the weights are random, so this card tests the scan, '
            "not the model.</p>") if card["random_weights"] else ""
    evidence = "".join(f"<li>{e(line)}</li>" for line in card["evidence"])
    facts = [("model", f"{m['paper_name']} ({m['timm_name']}{'.' + m['tag'] if m['tag'] else ''})"),
             ("weights", m["weights_source"]), ("image size", "x".join(map(str, m["image_size"]))),
             ("tokens", f"{card['tokens']['cls']} class + {card['tokens']['registers']} registers + "
                        f"{card['tokens']['grid'][0]}x{card['tokens']['grid'][1]} patches"),
             ("images", f"{card['n_images']} ({card['images']})"), ("outlier rule", card["outliers"]["rule"]),
             ("scan time", f"{card['seconds']:.1f} s")]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts)
    img = base64.b64encode(png).decode("ascii")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>vitreg scan: {e(m['name'])}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}.verdict{font-size:1.3em}"
            ".random{color:#a00}th{text-align:left;padding-right:1em}img{max-width:100%}</style></head><body>"
            f"<h1>vitreg scan: {e(m['name'])}</h1>{warn}<p class='verdict'><b>{e(card['verdict'])}</b></p>"
            f"<h2>Evidence</h2><ul>{evidence}</ul><img alt='report card' src='data:image/png;base64,{img}'>"
            f"<h2>Run</h2><table>{rows}</table></body></html>\n")


def write_card(report: ScanReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``<out_dir>/scan_<model>.png``, ``.html`` and ``.json`` atomically; return them by suffix."""
    card = report.to_dict()
    png = figure_png(plot_scan_card(card, report.maps, report.images))
    stem = card_stem(report.model["name"])
    path = {kind: Path(out_dir) / f"{stem}.{kind}" for kind in ("png", "html", "json")}
    return {"png": atomic_write_bytes(path["png"], png), "html": atomic_write_text(path["html"], _html(card, png)),
            "json": atomic_write_json(path["json"], card)}
