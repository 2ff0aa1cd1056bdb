"""Image decoding with Pillow: one file -> a (C, H, W) uint8 array, plus folder walking.

Colour handling (every mode ends as 8-bit "L" for channels=1 or "RGB" for channels=3):

* "L", "RGB": used as they are; "1" (bilevel) becomes 0/255 grayscale.
* 16-bit grayscale ("I;16", "I;16B", ..., and 32-bit "I", which Pillow uses for some 16-bit files):
  the top 8 bits are kept (value >> 8, after clipping to 0..65535). "F" (float) is clipped to 0..255.
* Anything with transparency ("RGBA", "LA", "PA", "P" or "RGB"/"L" with a transparency key) is
  composited onto a BLACK background, so fully transparent pixels become 0 (the MNIST convention of
  a dark background; it also equals Pillow's plain alpha drop for the usual transparent-black pixels).
* Palette ("P"), "CMYK", "YCbCr" and other modes go through Pillow's own RGB conversion.
* Grayscale output from colour uses Pillow's "L" conversion (ITU-R 601-2 luma).

Images whose size differs from the requested one are resized (stretched, aspect ratio not kept) with
Pillow's bilinear filter, which is area-aware when downscaling. JPEGs much larger than the target
are decoded at a reduced scale first (`Image.draft`). EXIF orientation is applied.

`Image.MAX_IMAGE_PIXELS` is left at Pillow's default: files above it are unreadable with the reason
"image too large (decompression-bomb limit)".
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from noisystudent.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

BOMB_REASON = "image too large (decompression-bomb limit)"
MANY_IGNORED = 10  # this many non-image files in a folder earn a warning

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112


class Unreadable(Exception):
    """A file that cannot be decoded; `reason` is a one-line explanation for the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_image_name(name: str) -> bool:
    """True when the file name has one of the image extensions (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def check_shape_args(channels: int, size: tuple[int, int]) -> tuple[int, int]:
    """Validate `channels` (1 or 3) and `size` ((H, W) positive ints); returns size as a tuple."""
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"size must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0 or (height, width) != tuple(size):
        raise UserError(f"size must be two positive integers (height, width), got {size!r}")
    return height, width


def decode_image(path: str | os.PathLike, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Read one image file as a (channels, H, W) uint8 array; an unreadable file raises UserError."""
    height, width = check_shape_args(channels, size)
    try:
        return read_image(Path(path), channels, (height, width))
    except Unreadable as err:
        raise UserError(f"cannot read image {path}: {err.reason}") from None


def read_image(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Decode `path` to (channels, H, W) uint8; raises `Unreadable` with a reason on any failure."""
    return read_image_and_size(path, channels, size)[0]


def read_image_and_size(path: Path, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """`read_image`, plus the file's own (width, height) in pixels, as stored (before EXIF rotation)."""
    _check_file(path)
    original: list[tuple[int, int]] = []
    img = _open_pixels(path, channels, size, original)
    img = _to_eight_bit(img, channels)
    height, width = size
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)  # (H, W) for "L", (H, W, 3) for "RGB"
    if channels == 1:
        return array[None, :, :], original[0]
    return np.ascontiguousarray(array.transpose(2, 0, 1)), original[0]


def _check_file(path: Path) -> None:
    """Fail early, with a clear reason, on missing, unreadable or empty files."""
    try:
        nbytes = path.stat().st_size
    except FileNotFoundError:
        raise Unreadable("file not found (broken link?)") from None
    except OSError as err:
        raise Unreadable(f"cannot access file ({err.strerror or err})") from None
    if nbytes == 0:
        raise Unreadable("empty file (0 bytes)")


def _open_pixels(path: Path, channels: int, size: tuple[int, int], original: list[tuple[int, int]]) -> Image.Image:
    """Open and fully decode `path` (pixels loaded, EXIF orientation applied); appends the stored
    (width, height) to `original`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Our own file object: closing it keeps the decoded pixels (closing the Image would not).
            with open(path, "rb") as handle:
                img = Image.open(handle)
                original.append(img.size)
                _check_bomb(img)
                if img.format == "JPEG":
                    side = max(size)  # square request: safe if EXIF rotation swaps H and W later
                    img.draft("L" if channels == 1 else "RGB", (side, side))
                img.load()  # decode now so truncation is caught here
                return _apply_orientation(img)
    except Unreadable:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Unreadable(BOMB_REASON) from None
    except UnidentifiedImageError:
        raise Unreadable("not a recognisable image (unknown format or corrupt header)") from None
    except PermissionError:
        raise Unreadable("permission denied") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ... on bad data
        raise Unreadable(_describe(err)) from None


def _check_bomb(img: Image.Image) -> None:
    """Also enforce the pixel limit ourselves (the warning filter above is process-global state)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.size[0] * img.size[1] > limit:
        raise Unreadable(BOMB_REASON)


def _apply_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip according to the EXIF orientation tag; a broken EXIF block is ignored."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation != 1:
            return ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a decodable image unreadable
        pass
    return img


def _describe(err: Exception) -> str:
    """One-line reason for a decoding exception."""
    message = " ".join(str(err).split())
    if "truncated" in message.lower():
        return "truncated image data"
    detail = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return f"corrupt image data ({detail})"


def _to_eight_bit(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 8-bit "L" (channels=1) or "RGB" (channels=3)."""
    target = "L" if channels == 1 else "RGB"
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return _high_depth_to_l(img).convert(target)
    if _has_transparency(img):
        return _composite_on_black(img).convert(target)
    if img.mode == target:
        return img
    if img.mode in ("L", "RGB", "1"):
        return img.convert(target)
    try:
        return img.convert("RGB").convert(target)
    except ValueError:
        raise Unreadable(f"unsupported colour mode {img.mode}") from None


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer grayscale -> top 8 bits; float grayscale -> clipped to 0..255."""
    values = np.asarray(img)  # (H, W) uint16 / int32 / float32
    if img.mode == "F":
        eight = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    else:
        eight = (np.clip(values.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(eight, mode="L")


def _has_transparency(img: Image.Image) -> bool:
    """True for modes with an alpha band or images carrying a transparency key (palette, tRNS)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _composite_on_black(img: Image.Image) -> Image.Image:
    """Flatten transparency onto an opaque black background; returns an "RGB" image."""
    try:
        rgba = img.convert("RGBA")
    except ValueError:
        raise Unreadable(f"unsupported colour mode {img.mode}") from None
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def list_image_files(root: Path) -> tuple[list[str], list[str]]:
    """Image files under `root`, recursively: (relative POSIX paths sorted, warnings).

    Hidden files and folders (name starting with ".", e.g. macOS "._x.png") are ignored, and so
    are files without an image extension (a warning counts them when there are many). Folder
    links are followed unless they point inside `root`, at one of its ancestors, or at a folder
    already read, so link loops neither hang nor duplicate images.
    """
    root_real = os.path.realpath(root)
    visited = {root_real}
    found: list[str] = []
    ignored: Counter[str] = Counter()
    notes: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = _folders_to_enter(root, root_real, dirpath, dirnames, visited, notes)
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith("."):
                continue
            if is_image_name(name):
                found.append((rel_dir / name).as_posix())
            else:
                ignored[Path(name).suffix.lower() or "(no extension)"] += 1
    found.sort()
    notes.extend(_ignored_note(root, ignored))
    return found, notes


def _folders_to_enter(
    root: Path, root_real: str, dirpath: str, dirnames: list[str], visited: set[str], notes: list[str]
) -> list[str]:
    """The sub-folders of `dirpath` to walk into; records skipped folder links in `notes`."""
    keep = []
    for name in sorted(dirnames):
        if name.startswith("."):
            continue
        full = os.path.join(dirpath, name)
        real = os.path.realpath(full)
        is_link = os.path.islink(full)
        loops = is_link and (_within(real, root_real) or _within(root_real, real))
        if loops or real in visited:
            if is_link:
                rel = Path(full).relative_to(root).as_posix()
                notes.append(f"did not follow folder link {rel} (following it would loop or read folders twice)")
            continue
        visited.add(real)
        keep.append(name)
    return keep


def _within(path: str, folder: str) -> bool:
    """True when real path `path` is `folder` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)



def _ignored_note(root: Path, ignored: Counter[str]) -> list[str]:
    """A warning about many non-image files (a few, like a README, pass silently)."""
    total = sum(ignored.values())
    if total < MANY_IGNORED:
        return []
    kinds = ", ".join(f"{ext} x{count}" for ext, count in ignored.most_common(5))
    return [f"ignored {total:,} non-image files in {root} ({kinds}); images need one of: {' '.join(IMAGE_EXTENSIONS)}"]
