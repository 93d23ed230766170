"""`.npy` files (rows read into a fresh buffer per batch, by direct reads where the file
system offers them) and `.npz` members (streamed from the zip, compressed or not)."""

from __future__ import annotations

import os
import zipfile
from typing import BinaryIO

import numpy as np

from rankme_fast.io.source import BadFileError, Rows, Source, check_shape, choose_name, swapped_to_native

_DIRECT_ALIGN = 4096  # a multiple of any block size direct reads need


def read_npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the stream's .npy header; the stream is left at the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


class NpySource(Source):
    """A C-ordered array is read with pread into private buffers, so the kernel's threads take
    no page faults and resident memory is the batches in flight: by O_DIRECT where offered
    (the disk DMAs into the buffer, no page-cache copy), else through the page cache with
    readahead. A Fortran-ordered 2-D array is memory-mapped and read as a strided view."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        except OSError as error:
            raise BadFileError(path, f"cannot be opened ({error})") from error
        try:
            shape, fortran, dtype = read_npy_header(self._file)
            self._offset = self._file.tell()
        except Exception as error:  # numpy raises ValueError/OSError/EOFError on a bad header
            self._file.close()
            raise BadFileError(path, f"not a readable .npy file ({error})") from error
        try:
            self.rows, self.dim = check_shape(path, shape, dtype.name, "the array")
            if fortran and len(shape) > 2:
                raise BadFileError(path, "a Fortran-ordered array of more than 2 dimensions cannot be read by rows")
            expected = self._offset + self.rows * self.dim * dtype.itemsize
            size = os.fstat(self._file.fileno()).st_size
            if size < expected:
                raise BadFileError(path, f"truncated: {size} bytes, the header needs {expected}")
        except BadFileError:
            self._file.close()
            raise
        self.dtype, self.itemsize, self._numpy_dtype = dtype.name, dtype.itemsize, dtype
        self._fortran, self._direct = None, None
        if fortran:
            flat = np.memmap(path, dtype=dtype, mode="r", offset=self._offset, shape=(self.dim * self.rows,))
            self._fortran = flat.reshape((self.rows, self.dim), order="F")
        else:
            os.posix_fadvise(self._file.fileno(), self._offset, 0, os.POSIX_FADV_SEQUENTIAL)
            self._direct = _open_direct(path)

    @property
    def reads_directly(self) -> bool:
        """True while rows come by direct reads (O_DIRECT), False for page-cache reads."""
        return self._direct is not None

    def read(self, start: int, stop: int) -> Rows:
        if self._fortran is not None:
            return self._fortran[start:stop]
        row_bytes = self.dim * self.itemsize
        first, end = self._offset + start * row_bytes, self._offset + stop * row_bytes
        if self._direct is not None:
            try:
                return self._as_rows(_read_direct(self._direct, first, end), start, stop)
            except OSError:  # this file system takes no direct reads after all
                os.close(self._direct)
                self._direct = None
        buffer = np.empty(end - first, dtype=np.uint8)
        done = _read_into(self._file.fileno(), buffer, first)
        return self._as_rows(buffer[:done], start, stop)

    def _as_rows(self, data: np.ndarray, start: int, stop: int) -> np.ndarray:
        wanted = (stop - start) * self.dim * self.itemsize
        if data.size < wanted:  # the file shrank since it was opened
            raise BadFileError(self.path, f"truncated at row {start + data.size // (self.dim * self.itemsize)}")
        return swapped_to_native(data[:wanted].view(self._numpy_dtype).reshape(stop - start, self.dim))

    def prefetch(self, start: int, stop: int) -> None:
        stop = min(stop, self.rows)
        if self._fortran is None and self._direct is None and stop > start:  # direct reads skip the cache
            row_bytes = self.dim * self.itemsize
            offset = self._offset + start * row_bytes
            os.posix_fadvise(self._file.fileno(), offset, (stop - start) * row_bytes, os.POSIX_FADV_WILLNEED)

    def close(self) -> None:
        self._fortran = None
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
        self._file.close()


def _open_direct(path: str) -> int | None:
    """A descriptor for direct reads (disk to our buffer by DMA: no page-cache copy, so the
    reader thread takes next to no CPU from the kernel), or None where they are not offered."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_RDONLY | flag)
    except OSError:  # e.g. tmpfs
        return None


def _read_into(fd: int, buffer: np.ndarray, offset: int) -> int:
    """Fill `buffer` from `offset`; the byte count, short only at the end of the file."""
    done = 0
    while done < buffer.size:
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


def _read_stream_into(stream: BinaryIO, buffer: np.ndarray) -> int:
    """Fill `buffer` from a file-like stream; the byte count, short only at its end."""
    view, done = memoryview(buffer), 0
    while done < buffer.size:
        got = stream.readinto(view[done:])
        if not got:
            break
        done += got
    return done


def _read_direct(fd: int, first: int, end: int) -> np.ndarray:
    """Bytes [first, end) through a direct-read descriptor: offset, length and buffer address
    must be multiples of the block size, so an aligned superset is read and sliced."""
    low, high = first // _DIRECT_ALIGN * _DIRECT_ALIGN, -(-end // _DIRECT_ALIGN) * _DIRECT_ALIGN
    raw = np.empty(high - low + _DIRECT_ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % _DIRECT_ALIGN
    aligned = raw[skip : skip + high - low]
    done = _read_into(fd, aligned, low)
    return aligned[first - low : max(first - low, done)][: end - first]


class NpzMemberSource(Source):
    """One array of an .npz, read sequentially from the zip (seeking back re-reads)."""

    def __init__(self, path: str, key: str | None) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            names = [n.removesuffix(".npy") for n in self._zip.namelist() if n.endswith(".npy")]
        except (OSError, zipfile.BadZipFile) as error:
            raise BadFileError(path, f"not a readable .npz file ({error})") from error
        self.key = choose_name(path, names, key, "array")
        try:
            self._stream = self._zip.open(f"{self.key}.npy")
            shape, fortran, dtype = read_npy_header(self._stream)
        except Exception as error:
            raise BadFileError(path, f"array {self.key!r} is not a readable .npy member ({error})") from error
        self.rows, self.dim = check_shape(path, shape, dtype.name, f"array {self.key!r}")
        if fortran and len(shape) > 1 and self.rows > 1:
            raise BadFileError(path, f"array {self.key!r} is Fortran-ordered: it cannot be streamed by rows")
        self.dtype, self.itemsize, self._numpy_dtype = dtype.name, dtype.itemsize, dtype
        self._data_start = self._stream.tell()
        self._next_row = 0

    def read(self, start: int, stop: int) -> Rows:
        row_bytes = self.dim * self.itemsize
        if start != self._next_row:
            self._stream.seek(self._data_start + start * row_bytes)
        buffer = np.empty((stop - start) * row_bytes, dtype=np.uint8)  # private: swapped in place if need be
        try:
            done = _read_stream_into(self._stream, buffer)
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise BadFileError(self.path, f"array {self.key!r} is corrupt ({error})") from error
        if done != buffer.size:
            raise BadFileError(self.path, f"array {self.key!r} is truncated at row {start + done // row_bytes}")
        self._next_row = stop
        return swapped_to_native(buffer.view(self._numpy_dtype).reshape(stop - start, self.dim))

    def close(self) -> None:
        self._stream.close()
        self._zip.close()

