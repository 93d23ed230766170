"""Real synthesisers driven as subprocesses: espeak-ng and flite for speech, fluidsynth (with
the FluidR3_GM and TimGM6mb soundfonts) and timidity (with freepats) for instrument notes.
`missing()` says which are absent; the benchmark then falls back to procedural audio.

The synthesisers return WAV bytes, and `decode` turns them into 16 kHz float32 audio. The two
steps are apart because only the first is safe to run from several threads at once: libsoxr
(the resampler) keeps process-wide state that concurrent calls must not share. Callers run the
subprocesses concurrently and decode in one thread.

Every synthesiser process starts in the same state: its own empty folder as working directory,
HOME and XDG runtime/config/cache directories, the C.UTF-8 locale, and nothing else from the
caller's environment but PATH and LD_LIBRARY_PATH (`_sandbox`). The output depends on that
state: espeak-ng's breath noise (voices such as "+f3") and fluidsynth's dither draw from the C
library's process-wide rand(), and the PulseAudio client both load at start-up draws 12 values
from it when it has to create its runtime directory (no XDG_RUNTIME_DIR, and no
~/.config/pulse/*-runtime link yet, as on a machine's first run). Without a runtime directory
of its own, the first espeak-ng process on a fresh machine spoke differently from every later
one. timidity seeds rand() from the clock, but nothing it draws reaches the audio (checked by
reseeding it).

`versions()` names the programs, data files and libraries the audio depends on; the benchmark's
cache key includes it."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mido
import numpy as np
import soundfile
import soxr

from rankme_fast.audio.waves import SAMPLE_RATE, resample, to_mono

SOUNDFONTS = {
    "FluidR3_GM": Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    "TimGM6mb": Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
}
FREEPATS_CONFIG = Path("/etc/timidity/freepats.cfg")
NOTE_SPACING = 1.5  # seconds between the notes of one render_notes call
APT_PACKAGES = "espeak-ng flite fluidsynth fluid-soundfont-gm timgm6mb-soundfont timidity freepats"


def missing() -> dict[str, str]:
    """Name → reason for every synthesiser the real benchmark needs that is not usable here."""
    reasons = {}
    for program in ("espeak-ng", "flite", "fluidsynth", "timidity"):
        if shutil.which(program) is None:
            reasons[program] = f"{program} not on PATH (apt-get install {APT_PACKAGES})"
    for name, path in SOUNDFONTS.items():
        if not path.exists():
            reasons[name] = f"soundfont {path} missing"
    if not FREEPATS_CONFIG.exists():
        reasons["freepats"] = f"{FREEPATS_CONFIG} missing (apt-get install freepats)"
    return reasons


def decode(data: bytes, what: str) -> np.ndarray:
    """WAV bytes from a synthesiser as mono float32 at 16 kHz. Not thread-safe (see above)."""
    try:
        wave, sr = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for a truncated stream
        raise RuntimeError(f"{what}: synthesiser produced no readable audio ({error})") from error
    return resample(to_mono(wave), sr, SAMPLE_RATE)


def versions() -> dict[str, str]:
    """What the rendered audio depends on besides the plan: each synthesiser's own version line,
    the size and modification time of each data file, and the decoders' versions."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    found = {}
    for program in ("espeak-ng", "flite", "fluidsynth", "timidity"):
        with _sandbox() as folder:
            try:
                result = subprocess.run([program, "--version"], capture_output=True, timeout=30, check=False,
                                        cwd=folder, env=_environment(folder))  # fmt: skip
                lines = (result.stdout + result.stderr).decode(errors="replace").strip().splitlines()
            except OSError as error:
                lines = [f"not runnable: {error}"]
        found[program] = lines[0].strip() if lines else ""
    for name, path in [*SOUNDFONTS.items(), ("freepats", FREEPATS_CONFIG)]:
        found[name] = f"{path.stat().st_size} bytes, mtime {path.stat().st_mtime_ns}" if path.exists() else "missing"
    found["soxr"] = soxr.__version__
    found["libsndfile"] = soundfile.__libsndfile_version__
    return tuple(sorted(found.items()))


@contextlib.contextmanager
def _sandbox() -> Iterator[Path]:
    """A fresh private folder for one synthesiser process (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="rankme-fast-synth-") as folder:
        for name in ("runtime", "config", "cache"):
            (Path(folder) / name).mkdir(mode=0o700)
        yield Path(folder)


def _environment(folder: Path) -> dict[str, str]:
    environment = {
        "HOME": str(folder),
        "XDG_RUNTIME_DIR": str(folder / "runtime"),
        "XDG_CONFIG_HOME": str(folder / "config"),
        "XDG_CACHE_HOME": str(folder / "cache"),
        "LC_ALL": "C.UTF-8",
    }
    for name in ("PATH", "LD_LIBRARY_PATH"):
        if name in os.environ:
            environment[name] = os.environ[name]
    return environment


def _run(command: list[str], what: str, folder: Path) -> bytes:
    """Stdout of `command`, run in `folder` (from `_sandbox`) with the fixed environment."""
    result = subprocess.run(command, capture_output=True, timeout=120, check=False, cwd=folder,
                            env=_environment(folder))  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{what}: {' '.join(command[:3])} … failed: {result.stderr.decode(errors='replace')[-300:]}")
    return result.stdout


def espeak(text: str, voice: str, *, speed: int, pitch: int) -> bytes:
    """WAV bytes of `text` spoken by espeak-ng voice `voice` (e.g. "de+m3")."""
    what = f"espeak-ng {voice} {text!r}"
    with _sandbox() as folder:
        return _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text], what, folder)


def flite(text: str, voice: str) -> bytes:
    """WAV bytes of `text` spoken by a flite built-in voice (kal, awb, rms, slt, kal16)."""
    with _sandbox() as folder:
        path = folder / "out.wav"
        _run(["flite", "-voice", voice, "-t", text, "-o", str(path)], f"flite {voice} {text!r}", folder)
        return path.read_bytes()


def note_sequence_midi(
    path: Path, program: int, notes: list[int], *, spacing: float, duration: float, velocity: int
) -> None:
    """A one-track MIDI file playing `notes` one after another, every `spacing` seconds."""
    ticks_per_second = 960  # with the default tempo of 120 bpm and 480 ticks per beat
    track = mido.MidiTrack([mido.Message("program_change", program=program, time=0)])
    clock = 0
    for index, note in enumerate(notes):
        on, off = round(index * spacing * ticks_per_second), round((index * spacing + duration) * ticks_per_second)
        track.append(mido.Message("note_on", note=note, velocity=velocity, time=on - clock))
        track.append(mido.Message("note_off", note=note, velocity=0, time=off - on))
        clock = off
    mido.MidiFile(tracks=[track], ticks_per_beat=480).save(str(path))


def render_notes(
    font: str, program: int, notes: list[int], *, spacing: float = NOTE_SPACING, duration: float = 0.8,
    velocity: int = 100,
) -> bytes:
    """WAV bytes of `notes` played one after another, every `spacing` seconds, with one
    soundfont ("FluidR3_GM", "TimGM6mb" via fluidsynth, "freepats" via timidity), in one process."""
    with _sandbox() as folder:
        midi, wav = folder / "notes.mid", folder / "notes.wav"
        note_sequence_midi(midi, program, notes, spacing=spacing, duration=duration, velocity=velocity)
        what = f"{font} program {program}"
        if font == "freepats":
            _run(
                [
                    "timidity",
                    "-c",
                    str(FREEPATS_CONFIG),
                    "-Ow",
                    "--output-mono",
                    "-s",
                    str(SAMPLE_RATE),
                    "-o",
                    str(wav),
                    str(midi),
                ],
                what,
                folder,
            )
        else:
            _run(
                [
                    "fluidsynth",
                    "-ni",
                    "-R",
                    "0",
                    "-C",
                    "0",
                    "-g",
                    "0.5",
                    "-r",
                    str(SAMPLE_RATE),
                    "-F",
                    str(wav),
                    str(SOUNDFONTS[font]),
                    str(midi),
                ],
                what,
                folder,
            )
        return wav.read_bytes()


def note_slices(audio: np.ndarray, count: int, spacing: float = NOTE_SPACING) -> list[np.ndarray]:
    """The `count` notes of decoded `render_notes` audio, one `spacing`-second slice each."""
    step = round(spacing * SAMPLE_RATE)
    audio = np.pad(audio, (0, max(0, step * count - audio.size)))
    return [audio[i * step : (i + 1) * step] for i in range(count)]
