"""Procedural stand-ins for the synthesisers, used when espeak-ng/flite/fluidsynth/timidity are
absent: "words" are sequences of formant-filtered harmonic syllables and noise bursts (the
pattern set by the word, the formant scale and pitch by the voice, the rhythm and a formant
shift by the language); "notes" are harmonic tones whose overtone profile and envelope are set
by the instrument family and perturbed per soundfont. Learnable, but not speech or music."""

from __future__ import annotations

import zlib

import numpy as np

from rankme_fast.audio.waves import SAMPLE_RATE


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _harmonics(f0: np.ndarray, amplitudes, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Sum of harmonics k·f0(t) (f0 may glide) with per-harmonic amplitudes (k, t) or (k,)."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    amplitudes = np.asarray(amplitudes)
    out = np.zeros_like(f0)
    for k in range(1, amplitudes.shape[0] + 1):
        alias_free = (k * f0 < sr / 2).astype(np.float64)
        out += amplitudes[k - 1] * alias_free * np.sin(k * phase)
    return out


def speak(word: int, language: int, voice: int, *, speed: float, pitch: float) -> np.ndarray:
    """A procedural 'utterance' of `word` in `language` by `voice` (all small ints)."""
    word_rng, lang_rng, voice_rng = _rng("word", word), _rng("language", language), _rng("voice", voice)
    n_syllables = 2 + word % 2
    formant_shift = lang_rng.uniform(0.85, 1.15)
    rate = lang_rng.uniform(0.8, 1.25) * speed
    burst_centre = lang_rng.uniform(2500, 6000)
    formant_scale = voice_rng.uniform(0.85, 1.2)
    f0_base = voice_rng.uniform(90, 240) * pitch
    pieces = []
    for s in range(n_syllables):
        length = int(SAMPLE_RATE * word_rng.uniform(0.12, 0.2) / rate)
        t = np.linspace(0, 1, length)
        f1 = formant_shift * formant_scale * np.interp(t, [0, 1], word_rng.uniform(300, 900, 2))
        f2 = formant_shift * formant_scale * np.interp(t, [0, 1], word_rng.uniform(900, 2600, 2))
        f0 = f0_base * (1 + 0.1 * np.sin(np.pi * t) * (1 if s % 2 else -1))
        k = np.arange(1, 41)[:, None]
        amplitudes = (np.exp(-(((k * f0 - f1) / 150) ** 2)) + 0.6 * np.exp(-(((k * f0 - f2) / 250) ** 2))) / k**0.5
        syllable = _harmonics(f0, amplitudes) * np.sin(np.pi * t) ** 0.5
        if word_rng.random() < 0.5:  # a fricative-like noise burst before the vowel
            burst = _rng("burst", word, language, voice, s).standard_normal(length // 3)
            spectrum = np.fft.rfft(burst)
            freqs = np.fft.rfftfreq(burst.size, 1 / SAMPLE_RATE)
            burst = np.fft.irfft(spectrum * np.exp(-(((freqs - burst_centre) / 800) ** 2)), burst.size)
            pieces.append(0.5 * burst / (np.abs(burst).max() + 1e-9))
        pieces.append(syllable / (np.abs(syllable).max() + 1e-9))
        pieces.append(np.zeros(int(0.03 * SAMPLE_RATE / rate)))
    return (0.3 * np.concatenate(pieces)).astype(np.float32)


def note(family: int, midi_note: int, font: int, program: int, *, duration: float = 0.8) -> np.ndarray:
    """A procedural instrument note: family sets overtones and envelope, font/program perturb them."""
    family_rng, variant_rng = _rng("family", family), _rng("variant", family, font, program)
    k = np.arange(1, 31)
    tilt = family_rng.uniform(0.5, 2.5) + variant_rng.normal(0, 0.15)
    odd_only = family_rng.random() < 0.3
    amplitudes = k ** (-tilt) * (1.0 if not odd_only else (k % 2 == 1) + 0.05)
    amplitudes *= 1 + 0.2 * variant_rng.standard_normal(k.size).clip(-2, 2)
    attack, decay = family_rng.uniform(0.002, 0.15), family_rng.uniform(0.15, 3.0) * variant_rng.uniform(0.8, 1.25)
    t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = np.full(t.size, 440.0 * 2 ** ((midi_note - 69) / 12))
    envelope = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    tone = _harmonics(f0, amplitudes) * envelope
    return (0.3 * tone / (np.abs(tone).max() + 1e-9)).astype(np.float32)
