"""`.npy` files (memory-mapped; pages asked for ahead and dropped behind, so resident memory
stays bounded) and `.npz` members (streamed from the zip, compressed or not)."""

from __future__ import annotations

import contextlib
import mmap
import zipfile

import numpy as np

from rankme_fast.io.source import BadFileError, Rows, Source, check_shape, choose_name

_PAGE = mmap.PAGESIZE


class NpySource(Source):
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            header = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as error:  # numpy raises ValueError/OSError/EOFError on a bad header or size
            raise BadFileError(path, f"not a readable .npy file ({error})") from error
        shape, dtype, offset = header.shape, header.dtype, header.offset
        fortran = header.flags.f_contiguous and not header.flags.c_contiguous
        del header
        self.rows, self.dim = check_shape(path, shape, dtype.name, "the array")
        if fortran and len(shape) > 2:
            raise BadFileError(path, "a Fortran-ordered array of more than 2 dimensions cannot be read by rows")
        self.dtype, self.itemsize, self._offset, self._fortran = dtype.name, dtype.itemsize, offset, fortran
        with open(path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        flat = np.frombuffer(self._map, dtype=dtype, count=int(np.prod(shape)), offset=offset)
        self._array = flat.reshape((self.rows, self.dim), order="F" if fortran else "C")

    def read(self, start: int, stop: int) -> Rows:
        return self._array[start:stop]

    def prefetch(self, start: int, stop: int) -> None:
        # Readahead only: faulting the range in here (MADV_POPULATE_READ) pushed peak RSS past
        # 1.3 GB on a 2 GiB corpus (tests/test_score.py) for no steady throughput gain.
        self._advise(mmap.MADV_WILLNEED, start, stop)

    def release(self, start: int, stop: int) -> None:
        self._advise(mmap.MADV_DONTNEED, start, stop)

    def close(self) -> None:
        del self._array
        with contextlib.suppress(BufferError):  # a batch still refers to it: it goes with the batch
            self._map.close()

    def _advise(self, option: int, start: int, stop: int) -> None:
        if self._fortran:
            return
        row_bytes = self.dim * self.itemsize
        first = (self._offset + start * row_bytes) // _PAGE * _PAGE
        end = self._offset + stop * row_bytes
        if end > first:
            with contextlib.suppress(ValueError):  # the mapping was closed: nothing to advise
                self._map.madvise(option, first, end - first)


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
            version = np.lib.format.read_magic(self._stream)
            formats = np.lib.format
            read_header = formats.read_array_header_1_0 if version == (1, 0) else formats.read_array_header_2_0
            shape, fortran, dtype = read_header(self._stream)
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
        try:
            raw = self._stream.read((stop - start) * row_bytes)
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise BadFileError(self.path, f"array {self.key!r} is corrupt ({error})") from error
        if len(raw) != (stop - start) * row_bytes:
            raise BadFileError(self.path, f"array {self.key!r} is truncated at row {start + len(raw) // row_bytes}")
        self._next_row = stop
        return np.frombuffer(raw, dtype=self._numpy_dtype).reshape(stop - start, self.dim)

    def close(self) -> None:
        self._stream.close()
        self._zip.close()

