"""Image decoding that survives real files: every PIL mode to RGB, EXIF rotation, bombs, truncation."""
from __future__ import annotations

import io
import os
import warnings
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MediaError, UnsupportedMediaError

__all__ = ["MAX_IMAGE_PIXELS", "load_image", "load_image_bytes", "as_rgb_array", "to_rgb"]

MAX_IMAGE_PIXELS: int = 89_478_485
"""Images with more pixels than this are refused before decoding (PIL's own default limit)."""

_WHITE = (255, 255, 255)


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """I;16 / I / F -> 8-bit greyscale by scaling the value range rather than clipping it."""
    arr = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        finite = arr[np.isfinite(arr)]
        top = float(finite.max()) if finite.size else 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / max(top, 1e-12)
    else:
        top = float(arr.max()) if arr.size else 0.0
        scale = 1.0 if top <= 255 else (255.0 / 65535.0 if top <= 65535 else 255.0 / top)
    arr = np.nan_to_num(arr * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_depth_to_l(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file to an RGB PIL image (first frame of animations, EXIF orientation applied).

    Raises MediaError naming the file for missing, empty, truncated, non-image and oversized
    (more than ``max_pixels``, checked from the header before any pixel is decoded) files.
    PIL's own decompression-bomb guard still applies above twice its global limit.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(path, "file not found")
    if os.path.isdir(path):
        raise MediaError(path, "is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return _decode(path, path, max_pixels)


def load_image_bytes(data: bytes, name: str | None = None, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image held in memory (a file's bytes) exactly as :func:`load_image` decodes the file.

    ``name`` only labels errors (e.g. ``shard.tar#000123.jpg``); the checks are load_image's.
    """
    if not data:
        raise MediaError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: str | IO[bytes], path: str | None, max_pixels: int) -> Image.Image:
    """The decoding shared by load_image and load_image_bytes; errors name ``path``."""
    try:
        with warnings.catch_warnings():
            # PIL warns for big images; we apply our own limit just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
    except Image.DecompressionBombError as e:
        raise MediaError(path, f"refused as a possible decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise UnsupportedMediaError(path, "not a recognised image format (corrupt or not an image)") from None
    except OSError as e:
        raise MediaError(path, f"cannot open image: {e}") from None
    with img:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise MediaError(path, f"image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise MediaError(
                path,
                f"{w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels} (possible decompression bomb); "
                "pass a larger max_pixels if the file is trusted",
            )
        try:
            if getattr(img, "is_animated", False):
                img.seek(0)
            img.load()
            oriented = ImageOps.exif_transpose(img)
            out = to_rgb(oriented)
            if out is img:
                out = img.copy()
            out.load()
        except MediaError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
            reason = str(e) or type(e).__name__
            if "truncated" in reason.lower():
                reason = f"truncated image data ({reason})"
            raise MediaError(path, f"cannot decode image: {reason}") from None
    return out


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def as_rgb_array(obj: Any) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, a numpy array (HWC or HW; uint8, or float in [0, 1]),
    or a torch tensor (CHW or HWC). Anything else raises MediaError(None, reason)."""
    if isinstance(obj, Image.Image):
        return np.array(to_rgb(obj), dtype=np.uint8)
    chw = False
    if _is_torch_tensor(obj):
        arr = obj.detach().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            chw = True
    elif isinstance(obj, np.ndarray):
        arr = obj
    else:
        raise MediaError(None, f"expected a PIL image, numpy array or torch tensor, got {type(obj).__name__}")
    if chw:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MediaError(
            None,
            f"cannot read an image from an array of shape {tuple(obj.shape)} and dtype {arr.dtype}: "
            "expected HW or HWC with 1, 3 or 4 channels (torch tensors may also be CHW)",
        )
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) if arr.shape[-1] == 4 else arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise MediaError(None, f"image array of dtype {arr.dtype} contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise MediaError(
                None, f"float image array must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}] (dtype {arr.dtype})"
            )
        out = np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0
    else:
        raise MediaError(
            None, f"unsupported image array dtype {arr.dtype} (shape {tuple(arr.shape)}): use uint8 or float in [0, 1]"
        )
    if out.shape[-1] == 4:  # composite on white, in float
        rgb, alpha = out[..., :3].astype(np.float32), out[..., 3:].astype(np.float32) / 255.0
        out = rgb * alpha + 255.0 * (1.0 - alpha)
    elif out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    if out.dtype != np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)
