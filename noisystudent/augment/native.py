"""The native CPU backend of RandAugment: native.c, built on first use, loaded with ctypes.

    lib = native.load()          # a NativeLibrary, or None (no C compiler, or the build failed)
    native.available()           # the same as a bool
    native.unavailable_reason()  # why not, in words (None when available)

native.c is plain C99 (no Python or torch headers). On first use it is compiled with the system C
compiler (the first of `COMPILERS` found on the PATH) with `CFLAGS` into
``<cache>/<hash of the source, flags, compiler version and platform>/`` (cache: the `cache_dir`
argument, else ``$XDG_CACHE_HOME/noisystudent/native``, else ``~/.cache/noisystudent/native``),
and later processes load that file without compiling. The compiler writes to a temporary file in
the same directory, moved into place with os.replace, so concurrent processes (torchrun ranks,
pytest workers) never load a half-written library. Any failure (no compiler, a compile error, an
unwritable cache) is logged once at INFO and makes `load` return None: RandAugment then runs its
torch code, which gives the same bytes.

The C code only does the pixel work; torch draws every random number and computes the per-sample
parameters (`ops.sample_params`, `ops.affine_terms`), see `RandAugment`.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from noisystudent.augment import ops as O

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
COMPILERS = ("cc", "gcc")  # tried in this order (names on the PATH)
# No -march=native (a cached build must run on any machine of the platform); no FMA contraction
# (the blends round after every float operation, as the torch ops do).
CFLAGS = ("-O3", "-shared", "-fPIC", "-std=c99", "-ffp-contract=off")
ABI_VERSION = 1  # native.c's NS_ABI_VERSION
LIBRARY_NAME = "libnoisystudent_augment.so"
COMPILE_TIMEOUT_S = 120.0  # seconds

# The C kernels, in native.c's enum order; RandAugment maps each op to one of them.
KERNELS = ("identity", "autocontrast", "equalize", "solarize", "color", "posterize", "contrast", "brightness",
           "sharpness", "cutout", "warp", "shift")


def kernel_of(op: str) -> int:
    """The native.c kernel id of RandAugment op `op` (geometric ops: "shift" or "warp")."""
    if op in O.GEOMETRIC_KINDS:
        return KERNELS.index("shift" if op in O.SHIFT_KINDS else "warp")
    return KERNELS.index(op)


class NativeLibrary:
    """The loaded native.c (ctypes), with a checked Python entry point."""

    def __init__(self, path: Path):
        self.path = path
        lib = ctypes.CDLL(str(path))
        for name in ("ns_abi_version", "ns_kernel_count", "ns_param_count", "ns_simd"):
            getattr(lib, name).restype = ctypes.c_int
        expected = (ABI_VERSION, len(KERNELS), O.N_PARAMS)
        found = (lib.ns_abi_version(), lib.ns_kernel_count(), lib.ns_param_count())
        if found != expected:
            raise OSError(f"{path} has ABI (version, kernels, params) {found}, expected {expected}")
        self.simd = "sse2" if lib.ns_simd() else "scalar"  # the instruction set of the float kernels
        fn = lib.ns_randaugment
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
                       ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p]
        self._randaugment = fn

    def randaugment(
        self, images: torch.Tensor, out: torch.Tensor, kernels: torch.Tensor, params: torch.Tensor,
        col_terms: torch.Tensor | None, row_terms: torch.Tensor | None,
    ) -> torch.Tensor:
        """Run every sample through its kernels, layer after layer, into `out`; returns out.

        images, out: (B, C, H, W) uint8 contiguous CPU tensors (distinct); kernels: (n, B) int32 ids
        into KERNELS; params: (n * B, N_PARAMS) float64 `ops.sample_params` rows (layer-major);
        col_terms (n * B, 2, W), row_terms (n * B, 2, H): int32 `ops.affine_terms`, or None when no
        sample is geometric.
        """
        b, c, h, w = images.shape
        n = kernels.shape[0]
        checks = [
            (images, torch.uint8, (b, c, h, w)), (out, torch.uint8, (b, c, h, w)), (kernels, torch.int32, (n, b)),
            (params, torch.float64, (n * b, O.N_PARAMS)),
        ]
        if col_terms is not None or row_terms is not None:
            checks += [(col_terms, torch.int32, (n * b, 2, w)), (row_terms, torch.int32, (n * b, 2, h))]
        for t, dtype, shape in checks:
            if t.dtype != dtype or tuple(t.shape) != shape or not t.is_contiguous() or t.device.type != "cpu":
                raise ValueError(f"native RandAugment: expected a contiguous CPU {dtype} tensor {shape}, got "
                                 f"{t.dtype} {tuple(t.shape)} on {t.device}")
        if images.numel() == 0:
            return out
        if out.data_ptr() == images.data_ptr():
            raise ValueError("native RandAugment: out must not be the input")

        def pointer(t: torch.Tensor | None) -> int | None:
            return None if t is None else t.data_ptr()

        status = self._randaugment(images.data_ptr(), out.data_ptr(), b, c, h, w, n, kernels.data_ptr(),
                                   params.data_ptr(), pointer(col_terms), pointer(row_terms))
        if status == 1:
            raise MemoryError("native RandAugment: out of memory for its scratch images")
        if status != 0:
            raise ValueError(f"native RandAugment: bad kernel ids or missing terms (status {status})")
        return out


# ----------------------------------------------------------------------------------------------
# Building and loading
# ----------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/noisystudent/native, else ~/.cache/noisystudent/native."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "noisystudent" / "native"


def find_compiler(names: tuple[str, ...]) -> str | None:
    """Full path of the first of `names` on the PATH, or None."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def compiler_version(compiler: str) -> str:
    """`compiler --version`'s output (part of the build hash)."""
    done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def build_key(source: bytes, flags: tuple[str, ...], version: str) -> str:
    """16 hex digits naming a build: the source, flags, compiler version and platform."""
    digest = hashlib.sha256()
    for part in (source, " ".join(flags).encode(), version.encode(), sys.platform.encode(),
                 platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build(cache_dir: Path, compilers: tuple[str, ...], extra_flags: tuple[str, ...] = ()) -> Path:
    """The path of the compiled library under cache_dir, compiling it unless a build is there.
    Raises OSError (no compiler, the cache is not writable) or RuntimeError (the compile failed)."""
    compiler = find_compiler(compilers)
    if compiler is None:
        raise OSError(f"no C compiler found (tried {', '.join(compilers)})")
    source = SOURCE.read_bytes()
    flags = (*CFLAGS, *extra_flags)
    directory = cache_dir / build_key(source, flags, compiler_version(compiler))
    library = directory / LIBRARY_NAME
    if library.is_file():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *flags, "-o", partial, str(SOURCE)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            first = next((line for line in lines if "error" in line), lines[0] if lines else "no message")
            raise RuntimeError(f"{compiler} failed (exit {done.returncode}): {first.strip()}")
        os.replace(partial, library)  # atomic: other processes see no file or the whole file
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return library


def _load_uncached(cache_dir: Path, compilers: tuple[str, ...], extra_flags: tuple[str, ...]) -> NativeLibrary:
    path = build(cache_dir, compilers, extra_flags)
    try:
        return NativeLibrary(path)
    except (OSError, AttributeError):  # a damaged or foreign file: build it again, once
        path.unlink(missing_ok=True)
        return NativeLibrary(build(cache_dir, compilers, extra_flags))


_lock = threading.Lock()
# The module's cache: (cache_dir, compilers, extra_flags) as passed -> (library, None) or (None, reason).
_loaded: dict[tuple, tuple[NativeLibrary | None, str | None]] = {}


def _load_entry(
    cache_dir: str | Path | None, compilers: tuple[str, ...] | None, extra_flags: tuple[str, ...]
) -> tuple[NativeLibrary | None, str | None]:
    """(library, None) or (None, reason), cached per argument values (a dict look-up once loaded)."""
    key = (None if cache_dir is None else str(cache_dir), None if compilers is None else tuple(compilers),
           tuple(extra_flags))
    entry = _loaded.get(key)
    if entry is not None:
        return entry
    with _lock:
        if key not in _loaded:
            directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            names = tuple(COMPILERS if compilers is None else compilers)
            try:
                _loaded[key] = (_load_uncached(directory, names, tuple(extra_flags)), None)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                reason = str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
                log.info("native RandAugment backend unavailable (%s); using the torch backend", reason)
                _loaded[key] = (None, reason)
        return _loaded[key]


def load(
    cache_dir: str | Path | None = None, compilers: tuple[str, ...] | None = None, extra_flags: tuple[str, ...] = ()
) -> NativeLibrary | None:
    """The native library (built on first use, then cached per process), or None if it cannot be
    built or loaded; `unavailable_reason` says why. cache_dir: where builds live (default
    `default_cache_dir()`); compilers: C compiler names to try (default `COMPILERS`); extra_flags:
    more compiler flags (e.g. ("-DNS_NO_SIMD",) for the scalar kernels alone)."""
    return _load_entry(cache_dir, compilers, extra_flags)[0]


def available(cache_dir: str | Path | None = None, compilers: tuple[str, ...] | None = None) -> bool:
    """Whether the native backend can run here (builds it on first call)."""
    return load(cache_dir, compilers) is not None


def unavailable_reason(cache_dir: str | Path | None = None, compilers: tuple[str, ...] | None = None) -> str | None:
    """Why the native backend is unavailable, in words; None when it is available."""
    return _load_entry(cache_dir, compilers, ())[1]


def clear_cache() -> None:
    """Forget loaded libraries and failures (the next `load` looks again; for tests)."""
    with _lock:
        _loaded.clear()
