"""`make_benchmark`: labelled 1-second clips rendered here by real synthesisers, with tasks
whose test splits hold out what a probe must generalise over.

Tasks (labels -1 where a clip is not part of a task):
  digit       English 0-9 from espeak-ng and flite voices; split by voice
  language    digits/numbers in 10 espeak-ng languages; split by voice
  voice       who speaks (the first 10 of those voices); split by the number spoken
  instrument  General MIDI family (10) of a rendered note; split by soundfont (TimGM6mb held out)
  pitch       which of 8 notes (C3 … B5, a fourth apart) is played; split by soundfont
Each clip gets a random onset, gain (-12 … 0 dB) and white noise (20 … 40 dB SNR), all fixed by
the seed.

What is guaranteed: on one machine, a preset's audio is a pure function of (preset, seed, the
versions of the synthesisers, their data files, libsndfile and soxr): bit-identical across
processes, worker counts, test order, and a cold or warm cache. The cache key holds all of
these (`synthesizers.versions()`), and each entry stores two digests per clip, of the
synthesiser's WAV bytes and of the decoded audio, so a difference says which stage it came
from (`first_difference`). Across CPUs the resampler may choose other SIMD code and differ in
the last bit."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rankme_fast.audio.datasets import procedural, synthesizers
from rankme_fast.audio.waves import SAMPLE_RATE, fix_length

VERSION = 1  # bump when the generated audio changes, so stale caches are not reused
CLIP_SECONDS = 1.0
LANGUAGES = ["en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "fi"]
ENGLISH_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan"]
VARIANTS = [
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "adam",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "Denis",
    "Diogo",
    "ed",
    "edward",
    "Gene",
    "gustave",
    "Henrique",
    "Hugo",
    "iven",
    "Jacky",
    "john",
    "kaukovalta",
    "Lee",
    "linda",
    "marcelo",
    "Marco",
    "Mario",
    "max",
    "Michael",
    "michel",
    "miguel",
    "Mike",
    "Nguyen",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "steph",
    "Storm",
    "travis",
    "victor",
    "zac",
    "anika",
    "grandpa",
    "grandma",
    "norbert",
    "sandro",
    "shelby",
    "klatt",
    "klatt2",
    "klatt3",
    "croak",
]
FLITE_VOICES = ["kal", "awb", "rms", "slt", "kal16"]
FAMILIES = {  # General MIDI family → programs that FluidR3_GM, TimGM6mb and freepats all have
    "piano": [0, 1, 2, 4],
    "chromatic percussion": [8, 9, 13, 14],
    "organ": [16, 19, 21, 23],
    "guitar": [24, 25, 26, 27],
    "bass": [32, 33, 34, 35],
    "strings": [40, 42, 44, 45],
    "ensemble": [48, 53, 48, 53],
    "brass": [56, 57, 58, 60],
    "reed": [64, 65, 66, 68],
    "pipe": [72, 73, 74, 75],
}
PITCHES = [48, 53, 58, 63, 68, 73, 78, 83]
DIGESTS = ("synthesised", "decoded")  # the stages a render records a digest of, in order
FONTS = ["FluidR3_GM", "freepats", "TimGM6mb"]  # the last is the held-out test soundfont
TEST_FONT = "TimGM6mb"
PRESETS = {
    # English digit voices × takes, language voices × numbers per language, programs per family × notes
    "tiny": dict(digit_voices=6, digit_takes=1, language_voices=4, numbers=2, programs=1, notes=3),
    "mini": dict(digit_voices=16, digit_takes=1, language_voices=10, numbers=4, programs=2, notes=6),
    "small": dict(digit_voices=40, digit_takes=2, language_voices=24, numbers=8, programs=4, notes=12),
    "large": dict(digit_voices=80, digit_takes=3, language_voices=48, numbers=12, programs=4, notes=40),
}


@dataclass
class Task:
    """One classification task over a subset of the clips."""

    name: str
    classes: list[str]
    labels: np.ndarray  # (clips,) int, -1 where the clip is not part of the task
    train: np.ndarray  # clip indices
    test: np.ndarray

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {len(self.classes)} classes, train={len(self.train)}, test={len(self.test)})"


@dataclass
class Benchmark:
    """Clips (N, samples) float32 at `sr`, per-clip metadata and the tasks."""

    waves: np.ndarray
    meta: dict[str, np.ndarray]
    tasks: dict[str, Task]
    preset: str
    seed: int
    synthesizers: str  # "real" or "procedural"
    sr: int = SAMPLE_RATE
    notes: list[str] = field(default_factory=list)
    digests: dict[str, np.ndarray] = field(default_factory=dict)
    """Per clip, for real synthesisers: sha256 (hex, 16 digits) of the synthesiser's WAV bytes
    ("synthesised") and of the decoded float32 audio before augmentation ("decoded")."""

    def __len__(self) -> int:
        return self.waves.shape[0]

    @property
    def names(self) -> list[str]:
        return [f"{self.preset}/{i:05d}:{self.meta['source'][i]}" for i in range(len(self))]

    def __repr__(self) -> str:
        return (
            f"Benchmark({self.preset!r}, {len(self)} clips of {self.waves.shape[1] / self.sr:g} s, "
            f"{self.synthesizers} synthesizers, tasks={list(self.tasks)})"
        )


def cache_dir() -> Path:
    """Where rendered benchmarks are kept: $RANKME_FAST_CACHE, else ~/.cache/rankme_fast."""
    root = (
        os.environ.get("RANKME_FAST_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rankme_fast"
    )
    return Path(root) / "audio"


def make_benchmark(
    preset: str = "tiny",
    *,
    seed: int = 0,
    synthesizers_: str = "auto",
    cache: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> Benchmark:
    """Render (or load from the cache) the labelled benchmark `preset` ("tiny" ≈ 230 clips,
    "mini" ≈ 920, "small" ≈ 4.2k, "large" ≈ 13k). `synthesizers_`: "auto" (real when all are installed, else
    procedural with a warning), "real" (error if any is missing) or "procedural"."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if synthesizers_ not in ("auto", "real", "procedural"):
        raise ValueError(f"synthesizers_ must be 'auto', 'real' or 'procedural', got {synthesizers_!r}")
    absent = synthesizers.missing()
    if synthesizers_ == "real" and absent:
        raise RuntimeError("real synthesizers unavailable: " + "; ".join(absent.values()))
    mode = "procedural" if synthesizers_ == "procedural" or absent else "real"
    notes = []
    if mode == "procedural" and synthesizers_ == "auto":
        notes.append("procedural fallback: " + "; ".join(absent.values()))
        warnings.warn(f"make_benchmark: {notes[-1]}", RuntimeWarning, stacklevel=2)
    plan = _plan(preset, seed)
    depends_on = synthesizers.versions() if mode == "real" else {}
    key = hashlib.sha256(
        json.dumps([VERSION, preset, seed, mode, plan, depends_on], sort_keys=True).encode()
    ).hexdigest()[:16]
    path = cache_dir() / f"{preset}-seed{seed}-{mode}-{key}.npz"
    with _one_renderer(path) if cache else contextlib.nullcontext():
        if cache and path.exists():
            with np.load(path) as stored:
                waves = stored["pcm"].astype(np.float32) / 32767.0
                digests = {name: stored[name] for name in DIGESTS if name in stored}
        else:
            raw, digests = _render(plan, mode, workers, progress)
            waves = _augment(raw, plan, seed)
            if cache:
                _store_atomically(path, pcm=_pcm(waves), **digests)
                waves = _pcm(waves).astype(np.float32) / 32767.0  # as a reload gives
    meta = {
        name: np.array([clip[name] for clip in plan], dtype=object)
        for name in ("source", "kind", "engine", "voice", "language", "text", "font", "program")
    }
    return Benchmark(waves, meta, _tasks(plan, seed), preset, seed, mode, notes=notes, digests=digests)


def first_difference(a: Benchmark, b: Benchmark) -> str | None:
    """Where two renders of one preset first differ, stage by stage (synthesiser output,
    decoded audio, the stored 16-bit clip), or None when they store the same bits."""
    if a.waves.shape != b.waves.shape:
        return f"shapes differ: {a.waves.shape} and {b.waves.shape}"
    for stage in DIGESTS:
        if stage in a.digests and stage in b.digests:
            differ = np.flatnonzero(a.digests[stage] != b.digests[stage])
            if differ.size:
                return f"{stage} audio differs in clips {_clip_list(a, differ)}"
    differ = np.flatnonzero((_pcm(a.waves) != _pcm(b.waves)).any(axis=1))
    return f"stored 16-bit audio differs in clips {_clip_list(a, differ)}" if differ.size else None


def _pcm(waves: np.ndarray) -> np.ndarray:
    """The 16-bit samples a cache entry stores (a render not cached is compared in this form)."""
    return np.round(waves * 32767.0).astype(np.int16)


def _clip_list(bench: Benchmark, clips: np.ndarray) -> str:
    shown = ", ".join(f"{i} ({bench.meta['source'][i]})" for i in clips[:5])
    return shown + (f" and {clips.size - 5} more" if clips.size > 5 else "")


@contextlib.contextmanager
def _one_renderer(path: Path) -> Iterator[None]:
    """Held while this process looks for or renders the cache entry `path`: another process
    asking for the same entry meanwhile waits, then loads what this one stored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def _store_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz cache entry that readers see whole or not at all, even after a crash: a
    temporary file of this process's own in the same directory, flushed to disk, then renamed
    over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _plan(preset: str, seed: int) -> list[dict]:
    """Every clip to render, as plain dicts (also the cache key)."""
    p = PRESETS[preset]
    rng = np.random.default_rng(seed)
    clips: list[dict] = []

    english = [("espeak", f"{accent}+{variant}") for variant in VARIANTS for accent in ENGLISH_ACCENTS]
    order = rng.permutation(len(english))
    voices = [english[i] for i in order]
    flite_count = min(len(FLITE_VOICES), max(1, p["digit_voices"] // 8))
    voices = [("flite", v) for v in FLITE_VOICES[:flite_count]] + voices[: p["digit_voices"] - flite_count]
    for engine, voice in voices:
        base_pitch = int(rng.integers(25, 75))
        for digit in range(10):
            for take in range(p["digit_takes"]):
                clips.append(
                    dict(
                        kind="speech",
                        engine=engine,
                        voice=voice,
                        language="en",
                        text=str(digit),
                        speed=int(rng.integers(140, 200)),
                        pitch=base_pitch + int(rng.integers(-8, 9)),
                        task="digit",
                        take=take,
                    )
                )

    variants = [VARIANTS[i] for i in rng.permutation(len(VARIANTS))[: p["language_voices"]]]
    for variant in variants:
        base_pitch = int(rng.integers(25, 75))
        for language in LANGUAGES:
            low = rng.choice(50, size=p["numbers"] // 2, replace=False)
            high = 50 + rng.choice(50, size=p["numbers"] - p["numbers"] // 2, replace=False)
            for number in [*low, *high]:
                clips.append(
                    dict(
                        kind="speech",
                        engine="espeak",
                        voice=f"{language}+{variant}",
                        language=language,
                        text=str(int(number)),
                        speed=int(rng.integers(140, 200)),
                        pitch=base_pitch + int(rng.integers(-8, 9)),
                        task="language",
                        variant=variant,
                    )
                )

    for font in FONTS:
        groups = len(FAMILIES) * p["programs"]  # deal the notes from shuffled decks: pitches stay balanced
        deck = np.concatenate([rng.permutation(PITCHES) for _ in range(-(-groups * p["notes"] // len(PITCHES)))])
        dealt = iter(deck.reshape(-1)[: groups * p["notes"]].reshape(groups, p["notes"]))
        for family, programs in FAMILIES.items():
            for program in programs[: p["programs"]]:
                for note in next(dealt):
                    clips.append(
                        dict(
                            kind="note",
                            engine=font,
                            font=font,
                            family=family,
                            program=int(program),
                            note=int(note),
                            velocity=int(rng.integers(70, 120)),
                        )
                    )
    for index, clip in enumerate(clips):
        clip["index"] = index
        clip["source"] = (
            f"{clip['engine']}:{clip['voice']}:{clip['text']}"
            if clip["kind"] == "speech"
            else f"{clip['font']}:{clip['program']}:{clip['note']}"
        )
        for name in ("engine", "voice", "language", "text", "font", "program"):
            clip.setdefault(name, "")
        clip["program"] = str(clip["program"])
    return clips


def _render(
    plan: list[dict], mode: str, workers: int | None, progress: bool
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Raw audio of every planned clip (speech per clip, notes batched per soundfont/program),
    and the per-clip digests of each stage (`DIGESTS`; none for procedural audio).
    Synthesiser processes run `workers` at a time; their output is decoded afterwards, in plan
    order, in this thread (the resampler is not thread-safe), so the audio is bit-identical
    however the processes were scheduled."""
    if mode == "procedural":
        return _render_procedural(plan), {}
    speech = [c for c in plan if c["kind"] == "speech"]
    groups: dict[tuple[str, int], list[dict]] = {}
    for clip in plan:
        if clip["kind"] == "note":
            groups.setdefault((clip["font"], int(clip["program"])), []).append(clip)

    def say(clip: dict) -> bytes:
        if clip["engine"] == "flite":
            return synthesizers.flite(clip["text"], clip["voice"])
        return synthesizers.espeak(clip["text"], clip["voice"], speed=clip["speed"], pitch=clip["pitch"])

    def play(key: tuple[str, int]) -> bytes:
        # one velocity per render call: the group's first (velocity still varies across groups)
        clips = groups[key]
        return synthesizers.render_notes(*key, [c["note"] for c in clips], velocity=clips[0]["velocity"])

    jobs = [(say, clip, [clip], f"{clip['engine']} {clip['voice']} {clip['text']!r}") for clip in speech]
    jobs += [(play, key, groups[key], f"{key[0]} program {key[1]}") for key in groups]
    out: list[np.ndarray | None] = [None] * len(plan)
    digests = {stage: np.empty(len(plan), dtype="<U16") for stage in DIGESTS}
    bar = _progress(len(jobs), progress)
    with ThreadPoolExecutor(max_workers=workers or min(4, (os.cpu_count() or 1) + 1)) as pool:
        futures = [pool.submit(fn, arg) for fn, arg, _, _ in jobs]
        for future, (_, _, clips, what) in zip(futures, jobs, strict=True):
            data = future.result()
            audio = synthesizers.decode(data, what)
            pieces = [audio] if clips[0]["kind"] == "speech" else synthesizers.note_slices(audio, len(clips))
            for clip, piece in zip(clips, pieces, strict=True):
                out[clip["index"]] = piece
                digests["synthesised"][clip["index"]] = _digest(data)
                digests["decoded"][clip["index"]] = _digest(np.ascontiguousarray(piece, dtype=np.float32).tobytes())
            bar.update(1)
    bar.close()
    return out, digests  # type: ignore[return-value]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _render_procedural(plan: list[dict]) -> list[np.ndarray]:
    out = []
    for clip in plan:
        if clip["kind"] == "speech":
            voice = zlib.crc32(clip["voice"].split("+")[-1].encode()) % 1000
            out.append(procedural.speak(
                int(clip["text"]), LANGUAGES.index(clip["language"]), voice, speed=clip["speed"] / 170,
                pitch=2 ** ((clip["pitch"] - 50) / 100),
            ))  # fmt: skip
        else:
            family = list(FAMILIES).index(clip["family"])
            out.append(procedural.note(family, clip["note"], FONTS.index(clip["font"]), int(clip["program"])))
    return out


def _progress(total: int, enabled: bool):
    return tqdm(total=total, desc="rendering audio", unit="job", disable=not enabled)


def _augment(raw: list[np.ndarray], plan: list[dict], seed: int) -> np.ndarray:
    """Place each clip in a 1 s window at a random onset, then random gain and white noise."""
    length = round(CLIP_SECONDS * SAMPLE_RATE)
    waves = np.zeros((len(raw), length), dtype=np.float32)
    for i, (audio, clip) in enumerate(zip(raw, plan, strict=True)):
        rng = np.random.default_rng([seed, i])
        audio = _trim(np.asarray(audio, dtype=np.float32))
        if clip["kind"] == "speech" and audio.size < length:
            start = int(rng.integers(0, length - audio.size + 1))
            placed = np.pad(audio, (start, length - audio.size - start))
        else:
            placed = fix_length(audio, length)
        peak = np.abs(placed).max()
        placed = placed / peak * 0.7 if peak > 0 else placed
        gain = 10 ** (rng.uniform(-12, 0) / 20)
        rms = np.sqrt(np.mean(placed**2)) if peak > 0 else 0.01
        noise = rng.standard_normal(length) * rms * 10 ** (-rng.uniform(20, 40) / 20)
        waves[i] = np.clip(gain * (placed + noise), -1, 1)
    return waves


def _trim(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading/trailing near-silence (synthesisers pad their output)."""
    loud = np.flatnonzero(np.abs(audio) > threshold * (np.abs(audio).max() + 1e-12))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def _tasks(plan: list[dict], seed: int) -> dict[str, Task]:
    n = len(plan)
    rng = np.random.default_rng([seed, 7])

    def task(name: str, classes: list[str], label_of, group_of, test_groups) -> Task:
        labels = np.full(n, -1, dtype=np.int64)
        groups = np.empty(n, dtype=object)
        for clip in plan:
            value = label_of(clip)
            if value is not None:
                labels[clip["index"]] = classes.index(value)
                groups[clip["index"]] = group_of(clip)
        members = np.flatnonzero(labels >= 0)
        held = test_groups(sorted(set(groups[members])))
        is_test = np.array([groups[i] in held for i in members], dtype=bool)
        return Task(name, classes, labels, members[~is_test], members[is_test])

    def held_out(fraction: float):
        def choose(groups: list) -> set:
            count = max(1, round(fraction * len(groups)))
            return {groups[i] for i in rng.permutation(len(groups))[:count]}

        return choose

    speaker = [c for c in plan if c.get("task") == "language"]
    voice_classes = sorted({c["variant"] for c in speaker})[:10]
    return {
        "digit": task(
            "digit",
            [str(d) for d in range(10)],
            lambda c: c["text"] if c.get("task") == "digit" else None,
            lambda c: c["voice"],
            held_out(0.25),
        ),
        "language": task(
            "language",
            LANGUAGES,
            lambda c: c["language"] if c.get("task") == "language" else None,
            lambda c: c["variant"],
            held_out(0.25),
        ),
        "voice": task(
            "voice",
            voice_classes,
            lambda c: c.get("variant") if c.get("variant") in voice_classes else None,
            lambda c: int(c["text"]) >= 50,
            lambda groups: {True},
        ),
        "instrument": task(
            "instrument", list(FAMILIES), lambda c: c.get("family"), lambda c: c["font"], lambda groups: {TEST_FONT}
        ),
        "pitch": task(
            "pitch",
            [str(p) for p in PITCHES],
            lambda c: str(c["note"]) if c["kind"] == "note" else None,
            lambda c: c["font"],
            lambda groups: {TEST_FONT},
        ),
    }
