"""A reader thread that runs ahead of the Gram kernel: it opens the files and reads or
decodes the next batches while the kernel works on the current one. At most `depth` batches
wait, so memory stays bounded."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rankme_fast.io import BadFileError, Rows, Source


@dataclass(frozen=True)
class Batch:
    file: int  # index into the job's file list
    first: int  # first row of `rows` in that file
    rows: Rows
    source: Source


@dataclass(frozen=True)
class BadFile:
    file: int
    error: BadFileError


_DONE = object()


class Prefetcher:
    """Iterate over Batch (and BadFile, for files that fail while read) from (file, row) on."""

    def __init__(
        self,
        opener: Callable[[int], Source],
        files: int,
        start: tuple[int, int],
        batch_rows: int,
        *,
        depth: int = 2,
        keep_going: bool = False,
    ) -> None:
        self._opener, self._files, self._start, self._batch_rows = opener, files, start, batch_rows
        self._keep_going = keep_going
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rankme-fast-reader", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[Batch | BadFile]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the reader (it may be blocked on a full queue) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            file, row = self._start
            for index in range(file, self._files):
                if not self._read_file(index, row if index == file else 0):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)

    def _read_file(self, index: int, start: int) -> bool:
        source = None
        try:
            source = self._opener(index)
            for first, rows in source.batches(start, self._batch_rows):
                source.prefetch(first + self._batch_rows, first + 2 * self._batch_rows)  # readahead
                if not self._put(Batch(index, first, rows, source)):
                    return False
        except BadFileError as error:
            if not self._keep_going:
                raise
            return self._put(BadFile(index, error))
        finally:
            if source is not None:
                source.close()
        return True
