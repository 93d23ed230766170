"""Parquet files (row groups streamed) and Arrow IPC files (record batches memory-mapped),
with the embeddings in a list or fixed-size-list column (nested lists are frames: flattened)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rankme_fast.io.source import BadFileError, Rows, Source, check_shape, choose_name

_ARROW_FLOATS = {"double": "float64", "float": "float32", "halffloat": "float16"}
_DECODE_ROWS = 8192  # rows per decoded Parquet chunk


class ArrowSource(Source):
    """Blocks of rows (Parquet row groups or IPC record batches) holding one list column."""

    def __init__(self, path: str, column: str | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self._pa = path, pa
        try:
            if path.endswith(".parquet"):
                self._parquet = pq.ParquetFile(path)
                schema = self._parquet.schema_arrow
                metadata = self._parquet.metadata
                self._block_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
            else:
                self._parquet = None
                self._ipc = pa.ipc.open_file(pa.memory_map(path))
                schema = self._ipc.schema
                self._block_rows = [self._ipc.get_batch(i).num_rows for i in range(self._ipc.num_record_batches)]
        except (OSError, pa.ArrowException) as error:
            kind = "Parquet" if path.endswith(".parquet") else "Arrow"
            raise BadFileError(path, f"not a readable {kind} file ({error})") from error
        lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)]
        if column is not None and column in schema.names and column not in lists:
            raise BadFileError(path, f"column {column!r} has type {schema.field(column).type}, not a list of floats")
        self.column = choose_name(path, lists if column is None else schema.names, column, "list column")
        value_type, depth = schema.field(self.column).type, 0
        while pa.types.is_list(value_type) or pa.types.is_fixed_size_list(value_type):
            value_type, depth = value_type.value_type, depth + 1
        self.dtype = _ARROW_FLOATS.get(str(value_type), str(value_type))
        self.itemsize = np.dtype(self.dtype).itemsize if self.dtype in _ARROW_FLOATS.values() else 0
        self._depth = depth
        self._starts = np.concatenate([[0], np.cumsum(self._block_rows)]).astype(int)
        self._per_row = 1  # embeddings per table row: > 1 for fixed-size nested lists (frames)
        dim = self._dim_from(schema.field(self.column).type)
        shape = (self._per_row * int(self._starts[-1]), dim)
        self.rows, self.dim = check_shape(path, shape, self.dtype, f"column {self.column!r}")

    def batches(self, start: int, batch_rows: int) -> Iterator[tuple[int, Rows]]:
        pending: list[np.ndarray] = []
        held, first = 0, start
        for block_first, values in self._decoded_from(start):
            skip = max(start - block_first, 0)
            values = values[skip:]
            while len(values):
                take = min(batch_rows - held, len(values))
                pending.append(values[:take])
                held, values = held + take, values[take:]
                if held == batch_rows:
                    yield first, np.concatenate(pending) if len(pending) > 1 else pending[0]
                    pending, held, first = [], 0, first + batch_rows
        if held:
            yield first, np.concatenate(pending) if len(pending) > 1 else pending[0]

    def read(self, start: int, stop: int) -> Rows:
        for _, rows in self.batches(start, stop - start):
            return rows
        return np.empty((0, self.dim), dtype=self.dtype)

    # -- internals -----------------------------------------------------------------------------

    def _dim_from(self, list_type: object) -> int:
        """D from the innermost fixed size, else from the data of the first block."""
        pa, sizes = self._pa, []
        node = list_type
        while pa.types.is_list(node) or pa.types.is_fixed_size_list(node):
            sizes.append(node.list_size if pa.types.is_fixed_size_list(node) else None)
            node = node.value_type
        if all(size is not None for size in sizes):
            self._per_row = int(np.prod(sizes[:-1])) if len(sizes) > 1 else 1
            return int(sizes[-1])
        if len(sizes) > 1:
            raise BadFileError(self.path, f"column {self.column!r}: nested variable-length lists are not supported")
        if self._starts[-1] == 0:
            return 0
        first = next(self._raw_blocks(0))
        return int(self._pa.compute.list_value_length(first)[0].as_py())

    def _raw_blocks(self, block: int) -> Iterator[object]:
        """Arrow arrays of the column, from block `block` on (Parquet in decoded chunks)."""
        pa = self._pa
        try:
            if self._parquet is not None:
                groups = list(range(block, len(self._block_rows)))
                chunks = self._parquet.iter_batches(batch_size=_DECODE_ROWS, row_groups=groups, columns=[self.column])
                for batch in chunks:
                    yield batch.column(0)
            else:
                for index in range(block, len(self._block_rows)):
                    yield self._ipc.get_batch(index).column(self.column)
        except (OSError, pa.ArrowException) as error:
            raise BadFileError(self.path, f"column {self.column!r} could not be read ({error})") from error

    def _decoded_from(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first embedding, (k, D) values) from the block holding embedding `start` on."""
        per_row = self._per_row
        block = max(int(np.searchsorted(self._starts, start // per_row, side="right")) - 1, 0)
        position = int(self._starts[block]) * per_row
        for array in self._raw_blocks(block):
            values = self._values(array)
            yield position, values
            position += len(values)

    def _values(self, array: object) -> np.ndarray:
        """(embeddings, D) numpy values of one chunk of the list column; checks nulls and sizes."""
        pa = self._pa
        if array.null_count:
            raise BadFileError(self.path, f"column {self.column!r} has {array.null_count} null rows")
        values = array
        for _ in range(self._depth):
            if pa.types.is_list(values.type):
                lengths = pa.compute.list_value_length(values).to_numpy(zero_copy_only=False)
                if len(lengths) and (lengths.min() != self.dim or lengths.max() != self.dim):
                    found = f"{lengths.min()}..{lengths.max()}"
                    problem = f"column {self.column!r} has lists of length {found}, not all {self.dim}"
                    raise BadFileError(self.path, problem)
            values = values.flatten()
        if values.null_count:
            raise BadFileError(self.path, f"column {self.column!r} holds {values.null_count} null values")
        return values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)
