"""Embedding sources for offline scoring: files of any size read in row batches with
bounded memory. `open_source` opens one file by its suffix; `embedding_paths` lists the
embedding files of files, directories and globs."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from rankme_fast.corpus import BadFileError, expand_paths
from rankme_fast.io.arrow_files import ArrowSource
from rankme_fast.io.numpy_files import NpySource, NpzMemberSource
from rankme_fast.io.source import Rows, Source
from rankme_fast.io.tensor_files import Hdf5Source, SafetensorsSource

SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet", ".arrow", ".feather", ".h5", ".hdf5")

__all__ = ["SUFFIXES", "BadFileError", "Rows", "Source", "embedding_paths", "open_source"]


def embedding_paths(paths: Sequence[str | Path]) -> list[str]:
    """The embedding files of files, directories (recursive) and globs, in order, each once."""
    return expand_paths(paths, SUFFIXES, kind="embedding")


def open_source(path: str, *, key: str | None = None, column: str | None = None) -> Source:
    """The array in `path` as a Source. `key` names the array (npz), tensor (safetensors) or
    dataset (HDF5) when the file holds several; `column` the list column of a Parquet/Arrow file."""
    suffix = Path(path).suffix.lower()
    needs = {".safetensors": "safetensors", ".h5": "h5py", ".hdf5": "h5py"}.get(suffix)
    needs = "pyarrow" if suffix in (".parquet", ".arrow", ".feather") else needs
    if needs is not None and importlib.util.find_spec(needs) is None:
        raise BadFileError(path, f"reading {suffix} files needs {needs}: pip install 'rankme_fast[io]'")
    if suffix == ".npy":
        return NpySource(path)
    if suffix == ".npz":
        return NpzMemberSource(path, key)
    if suffix == ".safetensors":
        return SafetensorsSource(path, key)
    if suffix in (".h5", ".hdf5"):
        return Hdf5Source(path, key)
    if suffix in (".parquet", ".arrow", ".feather"):
        return ArrowSource(path, column)
    raise BadFileError(path, f"unknown file type {suffix!r}; expected one of {', '.join(SUFFIXES)}")
