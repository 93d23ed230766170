"""Embedding sources for offline scoring: files of any size read in row batches with
bounded memory. `expand_paths` turns files, directories and globs into a sorted file list;
`open_source` opens one file by its suffix."""

from __future__ import annotations

import glob
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from rankme_fast.io.source import BadFileError, Rows, Source

SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet", ".arrow", ".feather", ".h5", ".hdf5")

__all__ = ["SUFFIXES", "BadFileError", "Rows", "Source", "expand_paths", "open_source"]


def expand_paths(paths: Sequence[str | Path], suffixes: Sequence[str] = SUFFIXES, kind: str = "embedding") -> list[str]:
    """Files named, the files with one of `suffixes` (any case) under directories (recursive,
    sorted), and glob matches (sorted), in the order given, each once. A path that matches
    nothing raises ValueError naming it and the `kind` of file looked for."""
    files: list[str] = []
    seen: set[str] = set()
    for given in map(str, paths):
        if Path(given).is_file():
            found = [given]
        elif Path(given).is_dir():
            found = sorted(str(p) for p in Path(given).rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        else:
            found = sorted(p for p in glob.glob(given, recursive=True) if Path(p).is_file())
        if not found:
            raise ValueError(f"{given}: no such file, or no {kind} files ({', '.join(suffixes)}) there")
        for file in found:
            if file not in seen:
                seen.add(file)
                files.append(file)
    return files


def open_source(path: str, *, key: str | None = None, column: str | None = None) -> Source:
    """The array in `path` as a Source. `key` names the array (npz), tensor (safetensors) or
    dataset (HDF5) when the file holds several; `column` the list column of a Parquet/Arrow file."""
    suffix = Path(path).suffix.lower()
    needs = {".safetensors": "safetensors", ".h5": "h5py", ".hdf5": "h5py"}.get(suffix)
    needs = "pyarrow" if suffix in (".parquet", ".arrow", ".feather") else needs
    if needs is not None and importlib.util.find_spec(needs) is None:
        raise BadFileError(path, f"reading {suffix} files needs {needs}: pip install 'rankme_fast[io]'")
    if suffix == ".npy":
        from rankme_fast.io.numpy_files import NpySource

        return NpySource(path)
    if suffix == ".npz":
        from rankme_fast.io.numpy_files import NpzMemberSource

        return NpzMemberSource(path, key)
    if suffix == ".safetensors":
        from rankme_fast.io.tensor_files import SafetensorsSource

        return SafetensorsSource(path, key)
    if suffix in (".h5", ".hdf5"):
        from rankme_fast.io.tensor_files import Hdf5Source

        return Hdf5Source(path, key)
    if suffix in (".parquet", ".arrow", ".feather"):
        from rankme_fast.io.arrow_files import ArrowSource

        return ArrowSource(path, column)
    raise BadFileError(path, f"unknown file type {suffix!r}; expected one of {', '.join(SUFFIXES)}")
