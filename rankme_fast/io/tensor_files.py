"""Named tensors in safetensors files and datasets in HDF5 files (h5py), read by slabs of
their first axis."""

from __future__ import annotations

from rankme_fast.io.source import BadFileError, Rows, Source, check_shape, choose_name, rows_of_slab

_SAFETENSORS_DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2)}


class SafetensorsSource(Source):
    def __init__(self, path: str, key: str | None) -> None:
        from safetensors import safe_open

        self.path = path
        try:
            self._file = safe_open(path, framework="pt")
            names = list(self._file.keys())
        except Exception as error:  # safetensors raises its own SafetensorError on a bad header
            raise BadFileError(path, f"not a readable safetensors file ({error})") from error
        self.key = choose_name(path, names, key, "tensor")
        self._slice = self._file.get_slice(self.key)
        code = self._slice.get_dtype()
        self.dtype, self.itemsize = _SAFETENSORS_DTYPES.get(code, (code, 0))
        self._shape = tuple(self._slice.get_shape())
        self.rows, self.dim = check_shape(path, self._shape, self.dtype, f"tensor {self.key!r}")

    def read(self, start: int, stop: int) -> Rows:
        try:
            return rows_of_slab(lambda a, b: self._slice[a:b], self._shape, start, stop)
        except Exception as error:
            raise BadFileError(self.path, f"tensor {self.key!r} could not be read ({error})") from error


class Hdf5Source(Source):
    def __init__(self, path: str, key: str | None) -> None:
        import h5py  # open_source checked that it is installed
        self.path = path
        try:
            self._file = h5py.File(path, "r")
        except OSError as error:
            raise BadFileError(path, f"not a readable HDF5 file ({error})") from error
        names: list[str] = []
        self._file.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        self.key = choose_name(path, names, key, "dataset")
        dataset = self._file[self.key]
        dtype = dataset.dtype
        # HDF5 converts another byte order while it reads (no second pass over the rows)
        self._dataset = dataset if dtype.isnative else dataset.astype(dtype.newbyteorder("="))
        self._shape = dataset.shape
        self.dtype, self.itemsize = dtype.name, dtype.itemsize
        self.rows, self.dim = check_shape(path, self._shape, self.dtype, f"dataset {self.key!r}")

    def read(self, start: int, stop: int) -> Rows:
        try:
            return rows_of_slab(lambda a, b: self._dataset[a:b], self._shape, start, stop)
        except OSError as error:
            raise BadFileError(self.path, f"dataset {self.key!r} could not be read ({error})") from error

    def close(self) -> None:
        self._file.close()
