"""Score audio encoders on a corpus of recordings (`rankme-fast audio`): every file is cut
into windows, decoded and resampled in worker processes running ahead of the model, and each
window's frame embeddings stream into a centred float64 Gram state (count, mean, scatter), from
which the raw ZᵀZ is derived at the end, so each frame passes through the kernel once; a clip
(a file, or a window) contributes the mean of its frames to a second state. Nothing N×D is kept
unless a probe needs the clip embeddings.

Each file is accumulated on its own and merged into the totals when it ends, so a file found
bad part-way (with `skip_bad`) leaves nothing behind. Checkpoints hold the exact position
(file, window) and are written atomically; under torch.distributed (torchrun) each process
takes every W-th file and the states are summed.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankme_fast.accumulate import GramAccumulator
from rankme_fast.audio.encoders.base import AudioEncoder
from rankme_fast.audio.files import AudioInfo, BadAudioError, audio_info, expand_audio_paths, read_windows
from rankme_fast.distributed import world
from rankme_fast.scoring import checkpoint
from rankme_fast.spectrum import METRIC_NAMES

CLIP_MODES = ("file", "window")
CHUNK_WINDOWS = 4  # windows per decoding task (and the checkpoint granularity)
DECODER_NICENESS = 10  # added to the decoding workers' niceness (lower priority than the model)
STATES = ("frame", "clip")  # accumulated centred; the raw spectra come from `uncentered()`


@dataclass(frozen=True)
class AudioOptions:
    window_seconds: float = 10.0  # long files are cut into windows of this length
    clip: str = "file"  # what one clip is: a whole file, or one window
    workers: int = 2  # decoding processes (0: decode in this process)
    precision: str = "exact"
    backend: str = "auto"
    metrics: tuple[str, ...] = ("rankme",)
    eps: float = 1e-7
    per_file: bool = False
    skip_bad: bool = False
    keep_clips: bool = False  # keep one embedding per clip (for a probe)
    checkpoint: str | None = None
    checkpoint_every: int = 20  # decoding tasks between checkpoints
    resume: bool = False
    progress: bool = True


@dataclass
class FileResult:
    path: str
    seconds: float
    windows: int = 0
    frames: int = 0
    metrics: dict[str, float] | None = None
    error: str | None = None


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
    files: list[FileResult] = field(default_factory=list)
    clip_embeddings: np.ndarray | None = None
    clip_files: list[str] | None = None
    resumed: bool = False

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("clip_embeddings")
        data.pop("clip_files")
        return data | {"audio_seconds_per_second": self.audio_seconds_per_second, "hours": self.audio_seconds / 3600}


def score_encoder(encoder: AudioEncoder, paths: Sequence[str], options: AudioOptions = AudioOptions()) -> EncoderResult:
    """Score one encoder on every file (files, directories, globs). Collective under
    torch.distributed: every process calls it and gets the same result."""
    _check(options)
    rank, processes = world()
    files = expand_audio_paths(paths)[rank::processes]
    job = _Job(encoder, files, options, rank, processes)
    started = time.perf_counter()
    job.run()
    return job.finish(time.perf_counter() - started)


class _Job:
    def __init__(self, encoder: AudioEncoder, files: list[str], options: AudioOptions, rank: int, world_: int) -> None:
        self.encoder, self.files, self.options, self.rank, self.world = encoder, files, options, rank, world_
        self.reports = [FileResult(path, 0.0) for path in files]
        self.infos: list[AudioInfo | None] = [None] * len(files)
        self.total = self._states()
        self.current = self._states()
        self.position = (0, 0)  # (file, window): everything before it is in total + current
        self.kept: list[np.ndarray] = []
        self.kept_files: list[str] = []
        self.current_kept: list[np.ndarray] = []
        self.timing = {"decode": 0.0, "wait": 0.0, "model": 0.0, "gram": 0.0}
        self.resumed = False
        self.path = None if options.checkpoint is None else checkpoint.for_rank(options.checkpoint, rank, world_)
        self._survey()
        if options.resume and self.path is not None and self.path.exists():
            self._restore(checkpoint.load(self.path))

    def _states(self) -> dict[str, GramAccumulator]:
        o = self.options
        dim = self.encoder.dim
        return {name: GramAccumulator(dim, centered=True, precision=o.precision, backend=o.backend) for name in STATES}

    def _survey(self) -> None:
        for index, path in enumerate(self.files):
            try:
                self.infos[index] = audio_info(path)
                self.reports[index].seconds = self.infos[index].seconds
            except BadAudioError as error:
                if not self.options.skip_bad:
                    raise
                self._mark_bad(index, error)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        progress = self._progress_bar()
        tasks = 0
        try:
            for file, first, windows, decode_seconds, error in self._decoded():
                self.timing["decode"] += decode_seconds
                if file != self.position[0]:
                    self._finish_file(self.position[0])
                    self.position = (file, 0)
                if error is not None:
                    if not self.options.skip_bad:
                        raise error
                    self._drop_current(file, error)
                    continue
                if self.reports[file].error is not None:  # found bad earlier in this file
                    continue
                self._add_windows(file, windows)
                progress.update(sum(len(wave) for wave in windows) / self.encoder.sample_rate)
                self.position = (file, first + len(windows))
                tasks += 1
                if self.path is not None and tasks % self.options.checkpoint_every == 0:
                    self._save()
        finally:
            progress.close()
        self._finish_file(self.position[0])
        if self.path is not None:
            self._save()

    def _decoded(self) -> Iterator[tuple[int, int, list[np.ndarray], float, BadAudioError | None]]:
        """(file, first window, windows, decode seconds, error) in order, from the position on;
        worker processes decode up to 2 tasks each ahead of the model."""
        tasks = [
            (file, first, min(CHUNK_WINDOWS, info.windows(self.options.window_seconds) - first))
            for file, info in enumerate(self.infos)
            if info is not None and file >= self.position[0]
            for first in range(self.position[1] if file == self.position[0] else 0,
                               info.windows(self.options.window_seconds), CHUNK_WINDOWS)
        ]  # fmt: skip
        rate, length = self.encoder.sample_rate, self.options.window_seconds
        if self.options.workers == 0:
            for file, first, count in tasks:
                yield (file, first, *_decode(self.infos[file], rate, length, first, count))
            return
        # The workers run only numpy, libsndfile and soxr (never torch, OpenMP or CUDA), so
        # forking them is safe and instant; a spawned worker first re-imports torch, which costs
        # as much CPU as decoding an hour of audio for a cheap encoder.
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ProcessPoolExecutor(self.options.workers, mp_context=context, initializer=_lower_priority) as pool:
            pending: deque[tuple[int, int, Future]] = deque()
            queued = iter(tasks)
            for file, first, count in queued:
                pending.append((file, first, pool.submit(_decode, self.infos[file], rate, length, first, count)))
                if len(pending) >= 2 * self.options.workers:
                    break
            while pending:
                file, first, future = pending.popleft()
                waited = time.perf_counter()
                result = future.result()
                self.timing["wait"] += time.perf_counter() - waited
                following = next(queued, None)
                if following is not None:
                    f, s, c = following
                    pending.append((f, s, pool.submit(_decode, self.infos[f], rate, length, s, c)))
                yield (file, first, *result)

    def _add_windows(self, file: int, windows: list[np.ndarray]) -> None:
        """Embed a task's windows one by one, then fold all their frames in one update (fewer,
        larger folds: the per-call cost matters for cheap encoders)."""
        started = time.perf_counter()
        rate, name = self.encoder.sample_rate, self.files[file]
        embedded = [self.encoder.embed(w, rate, name=name).values.to(torch.float32) for w in windows]
        self.timing["model"] += time.perf_counter() - started
        started = time.perf_counter()
        frames = torch.cat(embedded)
        self.current["frame"].update(frames)
        if self.options.clip == "window":
            self._add_clips(torch.stack([window.mean(dim=0, dtype=torch.float64) for window in embedded]))
        self.reports[file].windows += len(windows)
        self.reports[file].frames += len(frames)
        self.timing["gram"] += time.perf_counter() - started

    def _add_clips(self, clips: torch.Tensor) -> None:
        self.current["clip"].update(clips)
        if self.options.keep_clips:
            self.current_kept += list(clips.numpy())

    def _finish_file(self, file: int) -> None:
        if file >= len(self.files) or self.reports[file].error is not None or self.current["frame"].count == 0:
            self._reset_current()
            return
        if self.options.clip == "file":
            self._add_clips(self.current["frame"].mean[None])  # the file's mean frame
        if self.options.per_file:
            spectrum = self.current["frame"].uncentered().spectrum()
            wanted = [m for m in self.options.metrics if m != "nesum"]  # NESum: covariance only
            self.reports[file].metrics = {m: spectrum.metric(m, self.options.eps) for m in wanted}
        for name in STATES:
            self.total[name].merge(self.current[name])
        self.kept += self.current_kept
        self.kept_files += [self.files[file]] * len(self.current_kept)
        self._reset_current()

    def _reset_current(self) -> None:
        self.current, self.current_kept = self._states(), []

    def _drop_current(self, file: int, error: BadAudioError) -> None:
        """Forget a file found bad while decoding: nothing of it stays in the state."""
        self._mark_bad(file, error)
        self._reset_current()

    def _mark_bad(self, file: int, error: BadAudioError) -> None:
        self.reports[file].error = error.problem
        self.reports[file].windows = self.reports[file].frames = 0
        print(f"rankme-fast audio: skipped {error}", flush=True)

    # -- checkpoints ------------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        o = self.options
        return {
            "files": [(path, os.stat(path).st_size) for path in self.files],
            "encoder": self.encoder.describe(), "window_seconds": o.window_seconds, "clip": o.clip,
            "precision": o.precision, "keep_clips": o.keep_clips, "rank": self.rank, "world": self.world,
            "states": [f"{name} (centred)" for name in STATES],
        }  # fmt: skip

    def _save(self) -> None:
        assert self.path is not None
        checkpoint.save_atomic(
            {
                "job": self._fingerprint(),
                "position": list(self.position),
                "total": {name: acc.state_dict() for name, acc in self.total.items()},
                "current": {name: acc.state_dict() for name, acc in self.current.items()},
                "reports": [asdict(r) for r in self.reports],
                "kept": torch.from_numpy(np.stack(self.kept)) if self.kept else None,
                "kept_files": self.kept_files,
                "current_kept": torch.from_numpy(np.stack(self.current_kept)) if self.current_kept else None,
                "timing": self.timing,
            },
            self.path,
        )

    def _restore(self, state: dict[str, Any]) -> None:
        expected, found = self._fingerprint(), state.get("job", {})
        differing = [name for name in expected if name != "files" and found.get(name) != expected[name]]
        if [tuple(f) for f in found.get("files", [])] != [tuple(f) for f in expected["files"]]:
            differing.insert(0, "files (paths or sizes)")
        if differing:
            raise ValueError(f"{self.path}: this checkpoint is for a different job ({', '.join(differing)} differ)")
        self.total = {name: GramAccumulator.from_state_dict(s, backend=self.options.backend)
                      for name, s in state["total"].items()}  # fmt: skip
        self.current = {name: GramAccumulator.from_state_dict(s, backend=self.options.backend)
                        for name, s in state["current"].items()}  # fmt: skip
        self.position = tuple(state["position"])
        self.reports = [FileResult(**r) for r in state["reports"]]
        self.kept = list(state["kept"].numpy()) if state["kept"] is not None else []
        self.kept_files = list(state["kept_files"])
        self.current_kept = list(state["current_kept"].numpy()) if state["current_kept"] is not None else []
        self.timing = dict(state["timing"])
        self.resumed = True

    # -- the end ----------------------------------------------------------------------------------

    def finish(self, seconds: float) -> EncoderResult:
        reports, kept, kept_files = self.reports, self.kept, self.kept_files
        if self.world > 1:
            import torch.distributed as dist

            for acc in self.total.values():
                acc.all_reduce()
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, (reports, kept, kept_files, self.timing))
            reports = [r for part in gathered for r in part[0]]
            kept = [k for part in gathered for k in part[1]]
            kept_files = [f for part in gathered for f in part[2]]
            self.timing = {key: sum(part[3][key] for part in gathered) for key in self.timing}
        if self.total["frame"].count == 0:
            raise ValueError("no audio was scored: every file was empty or skipped")
        metrics = {}
        for name, centred in self.total.items():
            if centred.count < 2 and name == "clip":
                continue  # one clip has no spectrum worth naming (and no centred one at all)
            for label, acc in ((name, centred.uncentered()), (f"{name}_centered", centred)):
                spectrum = acc.spectrum()
                wanted = [m for m in self.options.metrics if m != "nesum" or acc.centered]  # NESum: covariance only
                metrics[label] = {m: spectrum.metric(m, self.options.eps) for m in wanted}
        good = [r for r in reports if r.error is None]
        return EncoderResult(
            encoder=self.encoder.describe(), metrics=metrics, frames=self.total["frame"].count,
            clips=self.total["clip"].count, audio_seconds=sum(r.seconds for r in good), wall_seconds=seconds,
            decode_seconds=self.timing["decode"], wait_seconds=self.timing["wait"],
            model_seconds=self.timing["model"], gram_seconds=self.timing["gram"], processes=self.world,
            files=reports, clip_embeddings=np.stack(kept) if kept else None, clip_files=kept_files or None,
            resumed=self.resumed,
        )  # fmt: skip

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        total = sum(r.seconds for r in self.reports if r.error is None)
        return tqdm(total=round(total, 1), unit="s", unit_scale=True, desc=f"{self.encoder.name} (audio seconds)",
                    disable=not self.options.progress or self.rank != 0, dynamic_ncols=True)  # fmt: skip


def _lower_priority() -> None:
    """Decoding workers yield the CPU to the model: they fill the time it leaves, instead of
    slowing it down (bench/README.md, the audio corpus)."""
    if hasattr(os, "nice"):
        os.nice(DECODER_NICENESS)


def _decode(
    info: AudioInfo, sample_rate: int, window_seconds: float, first: int, count: int
) -> tuple[list[np.ndarray], float, BadAudioError | None]:
    """Windows [first, first + count) of a file (run in a worker process): the waves, the CPU
    seconds it took, and the error that stopped it, if any."""
    started = time.process_time()
    try:
        waves = list(read_windows(info, sample_rate, window_seconds, first, count))
    except BadAudioError as error:
        return [], time.process_time() - started, error
    return waves, time.process_time() - started, None


def _check(options: AudioOptions) -> None:
    from rankme_fast._checks import check_positive_int
    from rankme_fast.backends import check_choice

    check_choice(options.backend, options.precision)
    if options.clip not in CLIP_MODES:
        raise ValueError(f"clip must be one of {CLIP_MODES}, got {options.clip!r}")
    if not options.window_seconds > 0:
        raise ValueError(f"window_seconds must be positive, got {options.window_seconds!r}")
    if not isinstance(options.workers, int) or options.workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {options.workers!r}")
    check_positive_int(options.checkpoint_every, "checkpoint_every")
    unknown = [m for m in options.metrics if m not in METRIC_NAMES]
    if unknown or not options.metrics:
        raise ValueError(f"metrics must be among {', '.join(METRIC_NAMES)}; got {list(options.metrics)}")
    if options.resume and options.checkpoint is None:
        raise ValueError("resume needs a checkpoint path")
    if options.checkpoint is not None and not Path(options.checkpoint).parent.is_dir():
        raise ValueError(f"checkpoint directory {Path(options.checkpoint).parent} does not exist")
