"""Example images kept in a metric's details, compactly: uint8 pixels as base64 with their shape.

A JSON list of pixel values costs a line per value in an indented ``metrics.json`` (about 1 MB for a dozen
MNIST images); base64 of the raw bytes costs 4/3 of a byte per pixel. The report decodes them for its figures.
"""

from __future__ import annotations

import base64
from typing import Any


def pack(images: Any) -> dict[str, Any]:
    """uint8 (N, C, H, W) tensor -> ``{"shape": [N, C, H, W], "uint8_b64": ...}``."""
    arr = images.detach().cpu().contiguous()
    return {"shape": list(arr.shape), "uint8_b64": base64.b64encode(arr.numpy().tobytes()).decode("ascii")}


def unpack(packed: Any) -> list[Any]:
    """The C x H x W uint8 numpy arrays of ``pack``'s output (nested lists, as older records kept them, pass)."""
    import numpy as np

    if isinstance(packed, dict) and "uint8_b64" in packed:
        flat = np.frombuffer(base64.b64decode(packed["uint8_b64"]), dtype=np.uint8)
        return list(flat.reshape(packed["shape"]))
    return [np.asarray(p, dtype=np.uint8) for p in (packed or [])]
