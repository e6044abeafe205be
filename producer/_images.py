"""``log_image``'s helpers: what an image is, and PNG encoding of arrays.

Every call of ``run.log_image(name, …, step=…)`` stores one file, so a newer image of a
name never replaces an older one: step ``s`` of image ``name`` is the artifact
``<name>/step_<s><ext>`` (``schemas/image_names.py``: the API reads the name and step back
from it), its extension that of the file given (``.png`` for a figure or an array).

Arrays are encoded as PNG with ``zlib`` from the standard library: HxW (grayscale),
HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) of uint8 (or any integers in 0..255), bools (black
and white), or floats in [0, 1]. numpy is imported only when an array is given (the SDK
does not depend on it); anything with ``__array__`` (a CPU torch tensor, a PIL image)
goes through ``numpy.asarray``.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any, Protocol

from schemas.image_names import image_artifact_name, image_of

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageArray",
    "encode_png",
    "image_artifact_name",
    "image_content_type",
    "image_file_suffix",
    "image_of",
    "is_array",
]

#: Image files ``log_image(path=…)`` takes, by the first bytes of the file (its
#: extension is kept; SVG, being text, is known by its extension).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
)
#: Content type by stored extension.
_CONTENT_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".bmp": "image/bmp", ".webp": "image/webp", ".avif": "image/avif", ".svg": "image/svg+xml",
}
IMAGE_SUFFIXES = tuple(_CONTENT_TYPES)

class ImageArray(Protocol):
    """A numpy array, or anything ``numpy.asarray`` reads (a CPU torch tensor, a PIL image)."""

    def __array__(self) -> Any: ...


#: Largest side of an encoded array, in pixels (a 16k x 16k RGBA image is 1 GiB raw).
MAX_SIDE = 16_384


def image_content_type(suffix: str) -> str:
    """The content type an image file with this extension is served with."""
    return _CONTENT_TYPES.get(suffix.lower(), "application/octet-stream")


def image_file_suffix(path: Path) -> str:
    """The extension an image file is stored with (lower case); raises ``ValueError`` for
    a missing file or one that is not an image."""
    if not path.is_file():
        raise ValueError(f"log_image: no such file: {str(path)!r}")
    suffix = path.suffix.lower()
    with path.open("rb") as f:
        head = f.read(16)
    sniffed = next((ext for magic, ext in _MAGIC if head.startswith(magic)), None)
    if sniffed is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        sniffed = ".webp"
    if sniffed is None and head[4:12] in (b"ftypavif", b"ftypavis"):
        sniffed = ".avif"
    if sniffed is not None:  # the file's own extension unless it names another format
        same = suffix == sniffed or (suffix == ".jpeg" and sniffed == ".jpg")
        return suffix if same else sniffed
    if suffix == ".svg":
        return suffix
    raise ValueError(
        f"log_image: {str(path)!r} is not a PNG, JPEG, GIF, BMP, WebP, AVIF or SVG image "
        "(for any other file use run.upload_file)"
    )


def is_array(value: object) -> bool:
    """Whether ``value`` looks like an array (numpy, or anything numpy can read)."""
    if isinstance(value, str | bytes | os.PathLike):
        return False
    return hasattr(value, "__array__") or hasattr(value, "__array_interface__")


def encode_png(value: Any) -> bytes:
    """A PNG of an image array (see the module docstring); ``TypeError``/``ValueError``
    say what is wrong with it."""
    try:
        import numpy as np
    except ImportError as exc:  # an array-like without numpy installed
        raise TypeError(
            f"log_image: a {type(value).__name__} is encoded with numpy, which is not "
            "installed (pip install numpy), or give a file path or a matplotlib figure"
        ) from exc
    array = np.asarray(value)
    shape = array.shape
    if array.ndim == 3 and shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        color_type, channels = 0, 1
    elif array.ndim == 3 and shape[2] in (3, 4):
        color_type, channels = (2, 3) if shape[2] == 3 else (6, 4)
    else:
        raise ValueError(
            f"log_image: an array of shape {shape} is not an image; give HxW (grayscale), "
            "HxWx3 (RGB) or HxWx4 (RGBA)"
        )
    height, width = int(array.shape[0]), int(array.shape[1])
    if height == 0 or width == 0:
        raise ValueError(f"log_image: the image array is empty (shape {shape})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ValueError(
            f"log_image: a {width}x{height} image is over the {MAX_SIDE}-pixel limit of a side"
        )
    pixels = _to_uint8(np, array, shape)
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", header),
        _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
        _chunk(b"IEND", b""),
    ))


def _to_uint8(np: Any, array: Any, shape: tuple[int, ...]) -> Any:
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind in "ui":
        if array.dtype == np.uint8:
            return array
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"log_image: integer pixels must be in 0..255, found {low}..{high} "
                f"({array.dtype}, shape {shape}); scale them, or give floats in [0, 1]"
            )
        return array.astype(np.uint8)
    if kind == "f":
        if not bool(np.isfinite(array).all()):
            raise ValueError(f"log_image: the image array (shape {shape}) holds NaN or infinity")
        least, most = float(array.min()), float(array.max())
        if least < 0.0 or most > 1.0:
            raise ValueError(
                f"log_image: float pixels must be in [0, 1], found {least:g}..{most:g} "
                f"(shape {shape}); divide by 255 for 0..255 values"
            )
        return np.rint(array * 255.0).astype(np.uint8)
    raise TypeError(
        f"log_image: an array of {array.dtype} is not an image; give uint8, integers in "
        "0..255, bools or floats in [0, 1]"
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
    )
