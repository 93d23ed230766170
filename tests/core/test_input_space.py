"""Property tests over the input space (tests/layouts.py): whatever dtype, byte order, layout and
leading dimensions a user's array has, every CPU backend and every entry point gives the RankMe
of a float64 SVD of the same values, within the precision mode's tolerance (conftest.py).

`make test` runs the small profile; RANKME_FAST_HYPOTHESIS=thorough explores many more inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from common import CPU_BACKENDS, reference_rankme, relative_error, tolerance
from hypothesis import given
from hypothesis import strategies as st
from layouts import LAYOUTS, NUMPY_DTYPES, NUMPY_LAYOUTS, Held, held_inputs

import rankme_fast as rf
from rankme_fast.integrations import RankMeMetric

PRECISIONS = ("exact", "fast")
EVERY_LAYOUT = pytest.mark.parametrize("layout", LAYOUTS, ids=["-".join(pair) for pair in LAYOUTS])


def _check(value: float, held: Held, precision: str) -> None:
    reference = reference_rankme(held.values)
    allowed = tolerance(held.values, precision)
    assert relative_error(value, reference) <= allowed, (held, value, reference)


@EVERY_LAYOUT
@given(data=st.data(), backend=st.sampled_from(CPU_BACKENDS), precision=st.sampled_from(PRECISIONS))
def test_rankme_of_any_input(layout, data, backend, precision):
    held = data.draw(held_inputs(layouts=[layout]))
    _check(rf.rankme(held.data, backend=backend, precision=precision), held, precision)


@EVERY_LAYOUT
@given(
    data=st.data(),
    backend=st.sampled_from(CPU_BACKENDS),
    precision=st.sampled_from(PRECISIONS),
    cuts=st.lists(st.integers(0, 64), max_size=4),
)
def test_accumulator_fed_random_splits_of_any_input(layout, data, backend, precision, cuts):
    held = data.draw(held_inputs(layouts=[layout]))
    acc = rf.GramAccumulator(precision=precision, backend=backend)
    for chunk in held.row_chunks(cuts):
        acc.update(chunk)
    assert acc.count == held.values.shape[0]
    _check(acc.rankme(), held, precision)


@given(held=held_inputs(), cuts=st.lists(st.integers(0, 64), max_size=4), precision=st.sampled_from(PRECISIONS))
def test_metric_update_with_any_input(held, cuts, precision):
    metric = RankMeMetric(precision=precision)
    for chunk in held.row_chunks(cuts):
        metric.update(chunk)
    _check(float(metric.compute()), held, precision)


@EVERY_LAYOUT
@given(data=st.data())
def test_kernels_read_memory_their_matrix_owns(layout, data):
    """What C is handed is the KernelInput's own data, native-endian, aligned, with whole-element
    strides: so it lives as long as the KernelInput a kernel call is given, and no temporary copy
    can be freed under the kernel."""
    from rankme_fast._inputs import kernel_input
    from rankme_fast.backends.cpu_backend import _view

    held = data.draw(held_inputs(layouts=[layout]))
    matrix = kernel_input(held.data)
    data = matrix.data
    if isinstance(data, np.ndarray):
        assert data.dtype.isnative and data.flags.aligned
        own, itemsize = data.ctypes.data, data.itemsize
        assert all(s % itemsize == 0 for s, n in zip(data.strides, data.shape, strict=True) if n > 1)
    else:
        own, itemsize = data.data_ptr(), data.element_size()
        assert not data.is_neg()
    assert own % itemsize == 0
    if rf._C is not None:
        assert _view(matrix)[0] == own
    np.testing.assert_array_equal(np.asarray(matrix.torch().double()), held.values)


# -- every file reader, through `rankme-fast score` -----------------------------------------------

READERS = {  # format -> (dtypes it can hold, byte orders it can hold, leading dimensions allowed)
    "npy": (("float64", "float32", "float16"), (False, True), True),
    "npz": (("float64", "float32", "float16"), (False, True), True),
    "hdf5": (("float64", "float32", "float16"), (False, True), True),
    "safetensors": (tuple(NUMPY_DTYPES), (False,), True),
    "parquet": (("float64", "float32", "float16"), (False,), False),
    "arrow": (("float64", "float32", "float16"), (False,), False),
}


@st.composite
def files(draw: st.DrawFn) -> tuple[str, Held, bool, bool]:
    """(format, the array to write, big-endian, Fortran order) for one embedding file."""
    fmt = draw(st.sampled_from(sorted(READERS)))
    dtypes, orders, leading = READERS[fmt]
    held = draw(held_inputs(dtypes=dtypes, layouts=[("numpy", name) for name in NUMPY_LAYOUTS]))
    big_endian = draw(st.sampled_from(orders))
    fortran = fmt == "npy" and held.data.ndim == 2 and draw(st.booleans())
    if not leading:
        held = Held(np.asarray(held.data).reshape(held.values.shape), held.values, held.description)
    return fmt, held, big_endian, fortran


def _write(path, fmt: str, data: np.ndarray, big_endian: bool, fortran: bool, dtype) -> None:
    array = np.asarray(data).astype(np.dtype(dtype).newbyteorder(">" if big_endian else "<"))
    array = np.asfortranarray(array) if fortran else np.ascontiguousarray(array)
    if fmt == "npy":
        np.save(path, array)
    elif fmt == "npz":
        np.savez_compressed(path, embeddings=array)
    elif fmt == "hdf5":
        import h5py

        with h5py.File(path, "w") as handle:
            handle.create_dataset("embeddings", data=array)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float64)).to(_torch_dtype(dtype))
        save_file({"embeddings": tensor}, str(path))
    else:
        import pyarrow as pa
        import pyarrow.feather
        import pyarrow.parquet

        d = array.shape[-1]
        values = pa.array(np.ascontiguousarray(array).reshape(-1))
        table = pa.table({"id": np.arange(array.shape[0]), "emb": pa.FixedSizeListArray.from_arrays(values, d)})
        if fmt == "parquet":
            pyarrow.parquet.write_table(table, path, row_group_size=7)
        else:
            pyarrow.feather.write_feather(table, path, chunksize=7, compression="uncompressed")


def _torch_dtype(dtype) -> torch.dtype:
    name = np.dtype(dtype).name
    return {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[name]  # fmt: skip


SUFFIX = {"npy": ".npy", "npz": ".npz", "hdf5": ".h5", "safetensors": ".safetensors", "parquet": ".parquet",
          "arrow": ".arrow"}  # fmt: skip


@given(case=files(), precision=st.sampled_from(PRECISIONS), batch_rows=st.integers(1, 50))
def test_every_reader_through_the_score_command(tmp_path_factory, case, precision, batch_rows):
    from rankme_fast.cli import main

    fmt, held, big_endian, fortran = case
    directory = tmp_path_factory.mktemp("score")
    path = directory / f"embeddings{SUFFIX[fmt]}"
    _write(path, fmt, held.data, big_endian, fortran, np.asarray(held.data).dtype.newbyteorder("="))
    out = directory / "result.json"
    code = main(["score", str(path), "--precision", precision, "--batch-rows", str(batch_rows), "--no-progress",
                 "--json", str(out)])  # fmt: skip
    assert code == 0, held
    result = json.loads(out.read_text())
    assert result["rows"] == held.values.shape[0]
    _check(result["metrics"]["rankme"], held, precision)
