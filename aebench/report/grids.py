"""The image grids a job wrote (samples, reconstructions, interpolation, first and last epoch), per model.

Images are not covered by a job's ``done`` marker, so each is checked to decode before the report uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aebench.report.results import Results

SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass
class Grid:
    title: str
    caption: str
    source: Path  # the job's PNG
    rel: str  # path in the report folder, relative to README.md


@dataclass
class ModelGrids:
    label: str
    dataset: str
    job_id: str
    seed: int
    grids: list[Grid]


def safe_name(text: str) -> str:
    """A file-name-safe version of a user-supplied name (job ids are already safe; this is belt and braces)."""
    return SAFE.sub("_", str(text))[:100] or "_"


def decodes(path: Path) -> bool:
    """True if ``path`` is a PNG that Pillow can decode (a truncated file would show as a broken image)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            if im.format != "PNG":
                return False
            im.load()
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "leave it out"
        return False


def job_grids(res: Results, notes: list[str]) -> list[ModelGrids]:
    """For the first seed of each model: every grid image present and decodable, in a fixed order."""
    out = []
    for r in res.first_seed_jobs().itertuples():
        d = res.job_path(r.job_id)
        met = res.metrics.get(r.job_id) or {}
        samplers = met.get("sampled_with") or (res.configs.get(r.job_id) or {}).get("eval", {}).get("samplers") or []
        samplers = [s for s in samplers if isinstance(s, str)]
        wanted = [(f"samples-{s}.png", f"samples ({s})", f"generated from codes drawn by the {s} sampler")
                  for s in samplers]
        wanted += [
            ("reconstructions.png", "reconstructions", "test images (odd rows) above their reconstructions"),
            ("interpolation.png", "interpolation", "decoded along the line between two test images' codes"),
            ("samples-epoch-first.png", "after the first epoch", "the same prior codes decoded after epoch 1"),
            ("samples-epoch-last.png", "after the last epoch", "the same prior codes decoded after the last epoch"),
        ]
        grids = []
        folder = safe_name(r.job_id)
        for fname, title, caption in wanted:
            p = d / fname
            if not p.is_file():
                continue
            if not decodes(p):
                notes.append(f"{r.job_id}/{fname} does not decode as PNG; left out")
                continue
            grids.append(Grid(title, caption, p, f"images/{folder}/{safe_name(fname)}"))
        out.append(ModelGrids(str(r.label), str(r.dataset), str(r.job_id), int(r.seed), grids))
    return out
