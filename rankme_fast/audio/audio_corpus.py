"""`score_encoder`: an audio encoder scored on a corpus of recordings, on the corpus-job engine
(rankme_fast.corpus). What is this command's own: every file is cut into windows, decoded and
resampled by worker processes running ahead of the model (the samples reach the model through
shared memory, not pickles), and each window's frame embeddings stream into a centred float64
state (count, mean, scatter), from which the raw ZᵀZ is derived at the end, so each frame
passes through the kernel once; a clip (a file, or a window) adds the mean of its frames to a
second state. Nothing N×D is kept unless a probe needs the clip embeddings.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import torch

from rankme_fast.accumulate import GramAccumulator
from rankme_fast.api import spectra_many
from rankme_fast.audio.encoders.encoder import AudioEncoder
from rankme_fast.audio.files import AudioInfo, BadAudioError, audio_info, expand_audio_paths, read_windows
from rankme_fast.corpus import Corpus, FileReport, Intervals, JobOptions, Outcome, Unit, interval_report, run_job
from rankme_fast.distributed import world

CLIP_MODES = ("file", "window")
CHUNK_WINDOWS = 4  # windows per decoding task (and the checkpoint granularity)
DECODER_NICENESS = 10  # added to the decoding workers' niceness (lower priority than the model)
STATES = ("frame", "clip")  # accumulated centred; the raw spectra come from `uncentered()`


@dataclass(frozen=True)
class AudioOptions(JobOptions):
    window_seconds: float = 10.0  # long files are cut into windows of this length
    clip: str = "file"  # what one clip is: a whole file, or one window
    workers: int = 2  # decoding processes (0: decode in this process)
    keep_clips: bool = False  # keep one embedding per clip (for a probe)
    layers: str | None = None  # score these inner layers of the encoder (a layer spec) instead of its output

    def check(self) -> None:
        super().check()
        if self.clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {CLIP_MODES}, got {self.clip!r}")
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {self.window_seconds!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be a non-negative integer, got {self.workers!r}")


@dataclass
class EncoderResult:
    encoder: dict[str, Any]
    metrics: dict[str, dict[str, float]]  # state ("frame", "clip", "..._centered") -> metric -> value
    frames: int
    clips: int
    audio_seconds: float
    wall_seconds: float
    decode_seconds: float  # CPU time of the decoding processes (hidden behind the model when they keep up)
    wait_seconds: float  # time the model waited for decoded audio
    model_seconds: float
    gram_seconds: float
    processes: int
    files: list[FileReport] = field(default_factory=list)
    clip_embeddings: np.ndarray | None = None  # of the output, or of the last layer scored
    clip_files: list[str] | None = None
    resumed: bool = False
    layers: list[str] | None = None  # with options.layers: the layers scored; metrics keys "<state>@<layer>"
    layer_clips: dict[str, np.ndarray] | None = None  # with keep_clips and layers: each layer's clip embeddings
    layer_dims: dict[str, int] | None = None  # with layers: each layer's width
    intervals: dict[str, Intervals] | None = None  # with ci: state label -> its metrics' estimates (blocks by file)

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("clip_embeddings")
        data.pop("clip_files")
        data.pop("layer_clips")
        data["intervals"] = None if self.intervals is None else {
            label: {name: e.to_json() for name, e in found.estimates.items()} | (
                {"growth": found.growth.to_json()} if found.growth is not None else {})
            for label, found in self.intervals.items()
        }  # fmt: skip
        return data | {"audio_seconds_per_second": self.audio_seconds_per_second, "hours": self.audio_seconds / 3600}


def score_encoder(encoder: AudioEncoder, paths: Sequence[str], options: AudioOptions = AudioOptions()) -> EncoderResult:
    """Score one encoder on every file (files, directories, globs). Collective under
    torch.distributed: every process calls it and gets the same result."""
    options.check()
    rank, processes = world()
    corpus = AudioCorpus(encoder, expand_audio_paths(paths)[rank::processes], options, rank, processes)
    started = time.perf_counter()
    outcome = run_job(corpus, corpus.files, options)
    return corpus.result(outcome, time.perf_counter() - started)


class AudioCorpus(Corpus):
    """Audio files as windows, embedded by `encoder` into a "frame" and a "clip" state."""

    progress_unit = "s"

    def __init__(
        self, encoder: AudioEncoder, files: list[str], options: AudioOptions, rank: int = 0, processes: int = 1
    ) -> None:
        super().__init__(files, options)
        self.rank, self.processes = rank, processes  # file i here is file rank + i·processes of all
        self.file = 0  # the file being added
        self.encoder, self.options = encoder, options
        self.label = f"{encoder.name} (audio seconds)"
        self.infos: dict[int, AudioInfo] = {}
        self.layers = encoder.layer_names(options.layers) if options.layers is not None else None
        self.parts = [f"@{layer}" for layer in self.layers] if self.layers is not None else [""]  # state suffixes
        self.kept: dict[str, list[np.ndarray]] = {part: [] for part in self.parts}
        self.kept_files: list[str] = []
        self.file_kept: dict[str, list[np.ndarray]] = {part: [] for part in self.parts}
        self.timing = {"decode": 0.0, "wait": 0.0, "model": 0.0, "gram": 0.0}

    def survey(self, path: str) -> FileReport:
        info = audio_info(path)
        self.infos[self.files.index(path)] = info
        return FileReport(path, seconds=info.seconds)

    def new_states(self) -> dict[str, GramAccumulator]:
        o = self.options
        dim = self.encoder.dim if self.layers is None else None  # a layer's width: fixed by its first output
        return {state + part: GramAccumulator(dim, centered=True, precision=o.precision, backend=o.backend,
                                              blocks=o.state_blocks)
                for part in self.parts for state in STATES}  # fmt: skip

    @contextmanager
    def units(self, reports: list[FileReport], start: tuple[int, int]) -> Iterator[Iterator[Unit]]:
        """Decoding tasks of CHUNK_WINDOWS windows from `start` on; worker processes decode up
        to 2 tasks each ahead of the model, into blocks of shared memory."""
        window = self.options.window_seconds
        tasks = [
            (file, first, min(CHUNK_WINDOWS, info.windows(window) - first))
            for file, info in sorted(self.infos.items())
            if file >= start[0] and reports[file].error is None
            for first in range(start[1] if file == start[0] else 0, info.windows(window), CHUNK_WINDOWS)
        ]
        if self.options.workers == 0:
            yield (self._decoded_here(*task) for task in tasks)
            return
        capacity = CHUNK_WINDOWS * (round(window * self.encoder.sample_rate) + 1)  # samples per task
        blocks = [SharedMemory(create=True, size=4 * capacity) for _ in range(2 * self.options.workers)]
        # The workers run only numpy, libsndfile and soxr (never torch, OpenMP or CUDA), so
        # forking them is safe and instant; a spawned worker first re-imports torch, which costs
        # as much CPU as decoding an hour of audio for a cheap encoder.
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        try:
            with ProcessPoolExecutor(self.options.workers, mp_context=context, initializer=_worker_setup,
                                     initargs=(os.getpid(),)) as pool:  # fmt: skip
                yield self._decoded_by_workers(pool, tasks, blocks, capacity)
        finally:
            for block in blocks:
                block.close()
                block.unlink()

    def _decoded_here(self, file: int, first: int, count: int) -> Unit:
        started = time.process_time()
        try:
            windows = list(read_windows(self.infos[file], self.encoder.sample_rate, self.options.window_seconds,
                                        first, count))  # fmt: skip
        except BadAudioError as error:
            return Unit(file, first, count, error=error)
        return Unit(file, first, count, (windows, time.process_time() - started))

    def _decoded_by_workers(
        self, pool: ProcessPoolExecutor, tasks: list[tuple[int, int, int]], blocks: list[SharedMemory], capacity: int
    ) -> Iterator[Unit]:
        rate, length = self.encoder.sample_rate, self.options.window_seconds
        free = deque(blocks)
        pending: deque[tuple[int, int, int, SharedMemory, Future]] = deque()
        queued = iter(tasks)

        def submit() -> None:
            task = next(queued, None)
            if task is not None:
                block = free.popleft()
                future = pool.submit(_decode_into, self.infos[task[0]], rate, length, task[1], task[2], block.name,
                                     capacity)  # fmt: skip
                pending.append((*task, block, future))

        for _ in blocks:
            submit()
        while pending:
            file, first, count, block, future = pending.popleft()
            waited = time.perf_counter()
            lengths, seconds, error = future.result()
            self.timing["wait"] += time.perf_counter() - waited
            samples = np.ndarray((sum(lengths),), dtype=np.float32, buffer=block.buf)
            offsets = np.cumsum([0, *lengths])
            windows = [samples[offsets[i] : offsets[i + 1]] for i in range(len(lengths))]
            if error is not None:
                yield Unit(file, first, count, error=error)
            else:
                yield Unit(file, first, count, (windows, seconds))
            del samples, windows  # the block is written again by the next task it takes
            free.append(block)
            submit()

    def add(self, unit: Unit, states: dict[str, GramAccumulator], report: FileReport) -> float:
        """Embed a task's windows one by one, then add all their frames in one update (fewer,
        larger updates: the per-call cost matters for cheap encoders)."""
        windows, decode_seconds = unit.payload
        self.file = unit.file
        self.timing["decode"] += decode_seconds
        started = time.perf_counter()
        embedded = [self._embed(w, report.path) for w in windows]  # per window: state suffix -> frames
        self.timing["model"] += time.perf_counter() - started
        started = time.perf_counter()
        for part in self.parts:
            frames = torch.cat([window[part] for window in embedded])
            try:
                states["frame" + part].update(frames, groups=self._file_key(unit.file, len(frames)))
            except ValueError as error:
                raise ValueError(f"{self.encoder.name}{part}: {error}") from error
            if self.options.clip == "window":
                clips = torch.stack([window[part].mean(dim=0, dtype=torch.float64) for window in embedded])
                self._add_clips(states, clips, unit.file, part)
            if part == self.parts[0]:
                report.rows += len(frames)
        report.windows += len(windows)
        self.timing["gram"] += time.perf_counter() - started
        return sum(len(wave) for wave in windows) / self.encoder.sample_rate

    def _file_key(self, file: int, rows: int) -> np.ndarray | None:
        """With an interval, the rows' groups key: the file's index among all files (so every
        process count gives the same blocks, and two encoders on the same files pair up)."""
        return None if self.options.ci is None else np.full(rows, self.rank + file * self.processes)

    def _embed(self, wave: np.ndarray, name: str) -> dict[str, torch.Tensor]:
        """A window's frames (float32) per state suffix: the output, or each chosen layer."""
        rate = self.encoder.sample_rate
        if self.layers is None:
            return {"": self.encoder.embed(wave, rate, name=name).values.to(torch.float32)}
        outputs = self.encoder.embed_layers(wave, rate, self.options.layers, name=name)
        return {f"@{layer}": outputs[layer].to(torch.float32) for layer in self.layers}

    def _add_clips(self, states: dict[str, GramAccumulator], clips: torch.Tensor, file: int, part: str) -> None:
        states["clip" + part].update(clips, groups=self._file_key(file, len(clips)))
        if self.options.keep_clips:
            self.file_kept[part] += list(clips.numpy())

    def end_file(self, states: dict[str, GramAccumulator], report: FileReport) -> None:
        if self.options.clip == "file":
            for part in self.parts:
                self._add_clips(states, states["frame" + part].mean[None], self.file, part)  # the file's mean frame
        if self.options.per_file:
            spectrum = states["frame" + self.parts[-1]].uncentered().spectrum()
            wanted = [m for m in self.options.metrics if m != "nesum"]  # NESum: covariance only
            report.metrics = {m: spectrum.metric(m, self.options.eps) for m in wanted}

    def keep_file(self, report: FileReport) -> None:
        self.kept_files += [report.path] * len(self.file_kept[self.parts[0]])
        for part in self.parts:
            self.kept[part] += self.file_kept[part]
        self.forget_file()

    def forget_file(self) -> None:
        self.file_kept = {part: [] for part in self.parts}

    def progress_total(self, reports: list[FileReport]) -> float:
        return sum(r.seconds or 0.0 for r in reports if r.error is None)

    def fingerprint(self) -> dict[str, Any]:
        o = self.options
        return {"encoder": self.encoder.describe(), "window_seconds": o.window_seconds, "clip": o.clip,
                "keep_clips": o.keep_clips, "states": [f"{name} (centred)" for name in STATES],
                "layers": self.layers}  # fmt: skip

    def saved(self) -> dict[str, Any]:
        stack = lambda rows: torch.from_numpy(np.stack(rows)) if rows else None  # noqa: E731
        return {"kept": {part: stack(rows) for part, rows in self.kept.items()}, "kept_files": self.kept_files,
                "file_kept": {part: stack(rows) for part, rows in self.file_kept.items()},
                "timing": self.timing}  # fmt: skip

    def restore(self, saved: dict[str, Any]) -> None:
        unstack = lambda tensor: list(tensor.numpy()) if tensor is not None else []  # noqa: E731
        self.kept = {part: unstack(tensor) for part, tensor in saved["kept"].items()}
        self.file_kept = {part: unstack(tensor) for part, tensor in saved["file_kept"].items()}
        self.kept_files, self.timing = list(saved["kept_files"]), dict(saved["timing"])

    def result(self, outcome: Outcome, seconds: float) -> EncoderResult:
        totals, first, last = outcome.states, self.parts[0], self.parts[-1]
        if totals["frame" + first].count == 0:
            raise ValueError("no audio was scored: every file was empty or skipped")
        kept = {p: [k for part in outcome.gathered if part["kept"][p] is not None for k in part["kept"][p].numpy()]
                for p in self.parts}  # fmt: skip
        kept_files = [f for part in outcome.gathered for f in part["kept_files"]]
        timing = {key: sum(part["timing"][key] for part in outcome.gathered) for key in self.timing}
        labels, accumulators = [], []  # "<state>[_centered][@<layer>]", raw then centred
        for name, centred in totals.items():
            state, at, layer = name.partition("@")
            if centred.count < 2 and state == "clip":
                continue  # one clip has no spectrum worth naming (and no centred one at all)
            labels += [name, f"{state}_centered{at}{layer}"]
            accumulators += [centred.uncentered(), centred]
        metrics, intervals = {}, {}
        for label, acc, spectrum in zip(labels, accumulators, spectra_many(accumulators), strict=True):  # batched
            wanted = tuple(m for m in self.options.metrics if m != "nesum" or acc.centered)  # NESum: centred only
            metrics[label] = {m: spectrum.metric(m, self.options.eps) for m in wanted}
            found = interval_report(acc, self.options, label=f"{self.encoder.name} {label}", metrics=wanted)
            if found is not None:
                intervals[label] = found
        good = [r for r in outcome.reports if r.error is None]
        clips = {p: np.stack(rows) for p, rows in kept.items() if rows}
        return EncoderResult(
            encoder=self.encoder.describe(), metrics=metrics, frames=totals["frame" + first].count,
            clips=totals["clip" + first].count, audio_seconds=sum(r.seconds or 0.0 for r in good),
            wall_seconds=seconds, decode_seconds=timing["decode"], wait_seconds=timing["wait"],
            model_seconds=timing["model"], gram_seconds=timing["gram"], processes=outcome.processes,
            files=outcome.reports, clip_embeddings=clips.get(last), clip_files=kept_files or None,
            resumed=outcome.resumed, intervals=intervals if self.options.ci is not None else None,
            layers=self.layers, layer_clips={p[1:]: c for p, c in clips.items()} if self.layers else None,
            layer_dims={layer: int(totals[f"frame@{layer}"].dim or 0) for layer in self.layers or []} or None,
        )  # fmt: skip


def _worker_setup(job: int) -> None:
    """Decoding workers yield the CPU to the model: they fill the time it leaves, instead of
    slowing it down (bench/README.md, the audio corpus). On Linux they also die with the job:
    a job killed outright (SIGKILL, the OOM killer) would otherwise leave its workers blocked on
    their queue for good, and with them its shared blocks, which are freed only once every
    process holding them has exited."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != job:  # the job died before the line above took effect
            os._exit(1)
    if hasattr(os, "nice"):
        os.nice(DECODER_NICENESS)


_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_attached: dict[str, SharedMemory] = {}  # in a worker: the blocks it has written into


def _decode_into(
    info: AudioInfo, sample_rate: int, window_seconds: float, first: int, count: int, block: str, capacity: int
) -> tuple[list[int], float, BadAudioError | None]:
    """Windows [first, first + count) of a file, decoded in a worker process into shared-memory
    `block` one after another: their lengths, the CPU seconds it took, and the error that
    stopped it, if any."""
    started = time.process_time()
    if block not in _attached:
        _attached[block] = SharedMemory(name=block)
    samples = np.ndarray((capacity,), dtype=np.float32, buffer=_attached[block].buf)
    lengths: list[int] = []
    try:
        for wave in read_windows(info, sample_rate, window_seconds, first, count):
            at = sum(lengths)
            samples[at : at + len(wave)] = wave
            lengths.append(len(wave))
    except BadAudioError as error:
        return [], time.process_time() - started, error
    return lengths, time.process_time() - started, None
