"""Example images kept in a metric's details, compactly: a lossless PNG (base64) of the uint8 pixels, with their shape.

The N x C x H x W images are laid out as one gray PNG, C*H rows by N*W columns (channel planes stacked, the
images side by side), so any channel count fits and the pixels come back exactly. PNG's compression keeps about a
quarter of the raw bytes for MNIST-like images (mostly background): a third of what base64 of the raw bytes cost,
the format records written before kept (``uint8_b64``), which ``unpack`` still reads, as it reads nested lists.
``compact`` rewrites those older payloads of a record's details in place (``aebench strip``).
"""

from __future__ import annotations

import base64
import io
from typing import Any

PNG = "png_b64"
RAW = "uint8_b64"  # the previous format: base64 of the raw bytes


def is_packed(value: Any) -> bool:
    """True for ``pack``'s output, in either format."""
    return isinstance(value, dict) and "shape" in value and (PNG in value or RAW in value)


def pack(images: Any) -> dict[str, Any]:
    """uint8 (N, C, H, W) tensor or array -> ``{"shape": [N, C, H, W], "png_b64": ...}``."""
    import numpy as np

    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"pack takes uint8 N x C x H x W images, got {arr.dtype} {list(arr.shape)}")
    n, c, h, w = arr.shape
    if arr.size == 0:
        return {"shape": [n, c, h, w], RAW: ""}
    from PIL import Image

    plane = np.ascontiguousarray(arr.transpose(1, 2, 0, 3).reshape(c * h, n * w))
    buf = io.BytesIO()
    Image.fromarray(plane, mode="L").save(buf, format="PNG", optimize=True)
    return {"shape": [n, c, h, w], PNG: base64.b64encode(buf.getvalue()).decode("ascii")}


def unpack(packed: Any) -> list[Any]:
    """The C x H x W uint8 numpy arrays of ``pack``'s output (the older raw base64 and nested lists pass too)."""
    import numpy as np

    if isinstance(packed, dict) and PNG in packed:
        from PIL import Image

        n, c, h, w = (int(v) for v in packed["shape"])
        with Image.open(io.BytesIO(base64.b64decode(packed[PNG]))) as im:
            plane = np.asarray(im.convert("L"), dtype=np.uint8)
        return list(plane.reshape(c, h, n, w).transpose(2, 0, 1, 3))
    if isinstance(packed, dict) and RAW in packed:
        flat = np.frombuffer(base64.b64decode(packed[RAW]), dtype=np.uint8)
        return list(flat.reshape(packed["shape"]))
    return [np.asarray(p, dtype=np.uint8) for p in (packed or [])]


def compact(details: Any) -> bool:
    """Re-pack, in place, every payload of the older raw format found in ``details`` (nested dicts and lists) as
    PNG; the pixels are unchanged. Returns whether anything changed."""
    import numpy as np

    changed = False
    items = details.items() if isinstance(details, dict) else enumerate(details) if isinstance(details, list) else ()
    for k, v in list(items):
        if is_packed(v) and PNG not in v:
            if v[RAW]:  # an empty payload has nothing to compress
                details[k] = pack(np.stack(unpack(v)))
                changed = True
        elif isinstance(v, (dict, list)):
            changed = compact(v) or changed
    return changed


def drop(details: Any) -> bool:
    """Remove, in place, every packed image payload in ``details`` (the rest, indices and distances, stays).
    Returns whether anything was removed."""
    changed = False
    if isinstance(details, dict):
        for k in [k for k, v in details.items() if is_packed(v)]:
            del details[k]
            changed = True
        values = list(details.values())
    elif isinstance(details, list):
        values = list(details)
    else:
        return False
    for v in values:
        if isinstance(v, (dict, list)):
            changed = drop(v) or changed
    return changed
