"""Reading one array out of a (possibly huge) .npz without loading it all into memory.

An uncompressed member (``np.savez``) is memory-mapped in place inside the zip file; a compressed
one (``np.savez_compressed``) is streamed into a caller-provided array (e.g. a cache memory map).
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import BinaryIO, List, Optional, Tuple

import numpy as np

from ..errors import DataError

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header, 30 bytes


def _read_npy_header(fp: BinaryIO) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    return np.lib.format._read_array_header(fp, version)  # (3, 0): utf-8 header, no public reader


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{str(path)!r}: file not found") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{str(path)!r}: not a readable .npz file (corrupt or truncated: {exc})") from exc


def npz_keys(path: Path) -> List[str]:
    """Array names stored in the .npz at ``path``."""
    with _open_zip(path) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _member(zf: zipfile.ZipFile, path: Path, key: str) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(key + ".npy")
    except KeyError:
        found = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        raise DataError(
            f"{str(path)!r}: no array {key!r} in this .npz; found {', '.join(map(repr, found)) or '(none)'}"
        ) from None


def npz_header(path: Path, key: str) -> Tuple[Tuple[int, ...], np.dtype]:
    """(shape, dtype) of member ``key`` without reading its data."""
    with _open_zip(path) as zf:
        info = _member(zf, path, key)
        try:
            with zf.open(info) as m:
                shape, _, dtype = _read_npy_header(m)
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"{str(path)!r}: array {key!r} has no valid .npy header ({exc})") from exc
    return tuple(shape), dtype


def npz_mmap(path: Path, key: str) -> Optional[np.ndarray]:
    """Read-only memory map of an uncompressed member ``key``; None if the member is compressed."""
    with _open_zip(path) as zf:
        info = _member(zf, path, key)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise ValueError("bad local file header")
            name_len, extra_len = fields[-2], fields[-1]
            f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
            shape, fortran, dtype = _read_npy_header(f)
            offset = f.tell()
        if dtype.hasobject:
            raise ValueError("object arrays are not supported")
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="F" if fortran else "C")
    except (ValueError, OSError, struct.error) as exc:
        raise DataError(f"{str(path)!r}: cannot map array {key!r} ({exc}); the file may be truncated") from exc


def npz_read_into(path: Path, key: str, out: np.ndarray, chunk_bytes: int = 1 << 24) -> None:
    """Stream member ``key`` (C order, same shape/dtype as ``out``) into the C-contiguous array ``out``."""
    flat = memoryview(out.reshape(-1)).cast("B")
    with _open_zip(path) as zf:
        info = _member(zf, path, key)
        try:
            with zf.open(info) as m:
                shape, fortran, dtype = _read_npy_header(m)
                if tuple(shape) != out.shape or dtype != out.dtype or (fortran and out.ndim > 1):
                    raise DataError(f"{str(path)!r}: array {key!r} is {dtype} {tuple(shape)}, expected {out.dtype} {out.shape}")
                pos = 0
                while pos < flat.nbytes:
                    got = m.readinto(flat[pos : pos + chunk_bytes])
                    if not got:
                        raise DataError(f"{str(path)!r}: array {key!r} is truncated ({pos} of {flat.nbytes} bytes)")
                    pos += got
        except DataError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DataError(f"{str(path)!r}: cannot read array {key!r} (corrupt or truncated: {exc})") from exc
