"""The study as one HTML page (`study/report.html` of the parent run), for people browsing MLflow.

MLflow's artifact viewer shows an .html artifact in a sandboxed frame with no network of its own,
so the page is self-contained: the best trial's audio (input, SPICE target, prediction, as 16-bit
wavs) and every figure are embedded as data: URIs. It holds the trials table with a link to each
trial's run, the best trial's players and comparison plot, and the study's figures.

That frame may run scripts but not open windows or navigate the page around it, so no link can
open from inside it (a click used to load MLflow into the frame, which stayed blank). There the
page says so at its top, and a click on a link points there instead of blanking the frame:
download the page and open it in its own tab, or follow the study run's description, which links
the best trials on whichever server shows it. In its own
tab the links are absolute, on the UI address written into the page (`training.tracking.ui_base`),
which a field at the top changes for a UI served elsewhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

MAX_AUDIO_SETTINGS = 2  # knob settings of the best trial whose clips are embedded
ROLES = ("input", "target", "prediction")
ROLE_TITLES = {"input": "DI input", "target": "SPICE amp (target)", "prediction": "model"}


def audio_data_uri(path: Path) -> str:
    """A wav as a 16-bit PCM data: URI (half the size of the float wavs the runs log)."""
    audio, fs = sf.read(path, dtype="float32")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    buffer = io.BytesIO()
    sf.write(buffer, audio / peak if peak > 1.0 else audio, fs, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def study_page(title: str, summary: str, rows: list[dict[str, Any]], links: dict[str, str], best: dict[str, Any] | None,
               audio_dirs: list[Path], best_plots: list[Path], figures: list[Path], base: str) -> str:
    """The page. `links`: run id -> its URL; `best`: the best trial's row; `audio_dirs`: its
    audio/setting_* folders; `best_plots` its comparison figures; `figures` the study's PNGs."""
    parts = [f"<h1>{html.escape(title)}</h1>", f"<pre class=summary>{html.escape(summary)}</pre>"]
    if best is not None:
        run = best.get("mlflow_run_id", "")
        parts.append(f"<h2>Best trial: #{best['number']} (validation ESR, tail-aware {best['val_esr_tail_aware']:.4g})</h2>"
                     + (f'<p><a href="{html.escape(links.get(run, ""))}">open its run</a></p>' if run in links else ""))
        for folder in audio_dirs[:MAX_AUDIO_SETTINGS]:
            label = folder.name.removeprefix("setting_").replace("_", " ")
            cells = "".join(
                f"<figure><figcaption>{ROLE_TITLES[role]}</figcaption><audio controls preload=metadata "
                f'src="{audio_data_uri(folder / (role + ".wav"))}"></audio></figure>'
                for role in ROLES if (folder / f"{role}.wav").is_file())
            parts.append(f"<h3>Knob setting {html.escape(label)}</h3><div class=players>{cells}</div>")
        parts.extend(f'<img alt="{html.escape(p.stem)}" src="{image_data_uri(p)}">' for p in best_plots)
    parts.append("<h2>Trials</h2>" + trials_table(rows, links))
    if figures:
        parts.append("<h2>Figures</h2>" + "".join(f'<img alt="{html.escape(p.stem)}" src="{image_data_uri(p)}">'
                                                  for p in figures))
    return PAGE.format(title=html.escape(title), body="\n".join(parts), base=html.escape(base))


def trials_table(rows: list[dict[str, Any]], links: dict[str, str]) -> str:
    params = sorted({k for r in rows for k in r if k.startswith("param.")})
    header = ["trial", "state", "val ESR (tail-aware)", "geomean (floored)", "mean", "worst setting",
              "training samples", "MACs/sample", "RTF", "seconds", *[p.removeprefix("param.") for p in params]]
    body = []
    for r in sorted(rows, key=lambda r: (r["state"] != "COMPLETE", _sort_value(r.get("val_esr_tail_aware")),
                                         r["number"])):
        run = r.get("mlflow_run_id", "")
        number = (f'<a href="{html.escape(links[run])}">#{r["number"]}</a>' if run in links else f"#{r['number']}")
        cells = [number, r["state"].lower(), _cell(r.get("val_esr_tail_aware"), ".4g"),
                 _cell(r.get("val_esr_geomean_floored"), ".4g"), _cell(r.get("val_esr_mean_scored_settings"), ".4g"),
                 _cell(r.get("val_esr_worst_scored_setting"), ".4g"), _cell(r.get("samples_trained"), ",.0f"),
                 _cell(r.get("macs_per_sample"), ".0f"), _cell(r.get("rtf"), ".1f"), _cell(r.get("seconds"), ".0f"),
                 *[_cell(r.get(p)) for p in params]]
        body.append(f'<tr class="{r["state"].lower()}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _sort_value(value: Any) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf


def _cell(value: Any, fmt: str = "") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return format(value, fmt or ".3g") if math.isfinite(value) else "-"
    return html.escape(format(value, fmt) if fmt and isinstance(value, int) else str(value))


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
pre.summary {{ background: #f5f5f5; padding: .8em; overflow-x: auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
tr.pruned td {{ color: #888; }} tr.fail td {{ color: #b00; }}
.note {{ background: #fff3cd; padding: .6em; }} .note.asked {{ outline: 3px solid #e0a800; }}
.players {{ display: flex; flex-wrap: wrap; gap: 1em; }} figure {{ margin: 0; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head>
<body data-base="{base}">
<p id=framed hidden class=note>MLflow shows this page in a sandboxed frame, where links cannot open.
Download it (the download button above this preview) and open it in its own tab, or open the trials
from the study run's description (its Overview tab), which links each of them.</p>
<p id=ui-address hidden class=note><label>MLflow UI address for the links on this page:
<input id=ui-base size=32 value="{base}"></label></p>
{body}
<script>
const links = [...document.querySelectorAll("a[href]")];
const written = document.body.dataset.base;
if (window.self !== window.top) {{  // MLflow's preview frame: say why links cannot open, keep the page
  const note = document.getElementById("framed");
  note.hidden = false;
  for (const a of links) a.addEventListener("click", event => {{
    event.preventDefault(); note.scrollIntoView(); note.classList.add("asked");
  }});
}} else {{  // its own tab: the links go to the UI address in the field
  const field = document.getElementById("ui-base");
  document.getElementById("ui-address").hidden = false;
  const point = () => {{
    const base = field.value.trim().replace(/[/]+$/, "");
    for (const a of links) a.href = base + a.getAttribute("href").slice(written.length);
  }};
  field.addEventListener("input", point);  // as typed: nothing rewrites a link while it is clicked
}}
</script>
</body></html>
"""
