"""`rankme-fast audio` on a folder the tests write: the generated benchmark's clips as wav, flac,
ogg and mp3 at several rates and channel counts in nested folders, one long file, and bad
files. Results equal `audio.extract` on the same decoded audio; bad files stop the job naming
them or are skipped leaving nothing behind; resume after SIGKILL is exact; two processes
under torchrun equal one; labels give a probe; a fitted law gives a prediction and a warning."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import rankme_fast as rf
from rankme_fast import audio
from rankme_fast.audio.audio_corpus import AudioOptions, score_encoder
from rankme_fast.audio.files import BadAudioError, audio_info, expand_audio_paths, read_windows
from rankme_fast.audio.waves import resample
from rankme_fast.cli import main as cli

soundfile = pytest.importorskip("soundfile")
FORMATS = [("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("mp3", 8000, 2), ("wav", 48000, 2)]
EXACT = 1e-9


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, bench_cache):
    """The tiny benchmark's first 40 clips (spoken digits) in nested folders and five
    formats/rates/channel counts, one 100-second file, and a CSV of their digit and voice."""
    root = tmp_path_factory.mktemp("corpus")
    bench = audio.make_benchmark("tiny", seed=0)
    rows = []
    for i in range(40):
        suffix, rate, channels = FORMATS[i % len(FORMATS)]
        wave = resample(bench.waves[i], audio.SAMPLE_RATE, rate)
        data = np.stack([wave, 0.6 * wave], axis=1) if channels == 2 else wave
        path = root / f"speaker{i % 4}" / ("deep" if i % 2 else "") / f"clip{i:02d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, data, rate)
        rows.append({"path": str(path), "digit": bench.meta["text"][i], "voice": bench.meta["voice"][i]})
    long = np.concatenate([bench.waves[i] for i in range(100)])
    soundfile.write(root / "long.flac", long, audio.SAMPLE_RATE)
    rows.append({"path": str(root / "long.flac"), "digit": "0", "voice": "mixed"})
    with open(root.parent / f"{root.name}-labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "digit", "voice"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def log_mel():
    return audio.load_encoder("log-mel")


def _decoded(paths: list[str], sample_rate: int, window_seconds: float) -> list[tuple[str, np.ndarray]]:
    """Every window of every file, read independently of the job (the same decoder)."""
    return [(p, w) for p in paths for w in read_windows(audio_info(p), sample_rate, window_seconds)]


def test_frame_and_clip_states_equal_audio_extract(corpus, log_mel):
    result = score_encoder(log_mel, [str(corpus)], AudioOptions(workers=2, window_seconds=7.0, clip="window",
                                                                 progress=False))  # fmt: skip
    windows = _decoded(expand_audio_paths([str(corpus)]), log_mel.sample_rate, 7.0)
    frames = [rf.GramAccumulator(), rf.GramAccumulator(centered=True)]
    extraction = audio.extract(log_mel, [w for _, w in windows], sr=log_mel.sample_rate, level="frame",
                               accumulator=frames, progress=False)  # fmt: skip
    assert result.frames == extraction.frames and result.clips == len(windows)
    for state, acc in zip(("frame", "frame_centered"), frames, strict=True):
        assert abs(result.metrics[state]["rankme"] - acc.rankme()) <= EXACT * acc.rankme()
    clips = rf.GramAccumulator().update(torch.from_numpy(extraction.clip_embeddings))
    # extract keeps each clip mean in float32, the job in float64: only that rounding differs
    assert abs(result.metrics["clip"]["rankme"] - clips.rankme()) <= 1e-6 * clips.rankme()
    assert result.audio_seconds == pytest.approx(40 + 100, abs=0.05)
    assert result.model_seconds > 0 and result.gram_seconds > 0


def test_a_clip_is_a_file_by_default_and_workers_change_nothing(corpus, log_mel):
    one = score_encoder(log_mel, [str(corpus)], AudioOptions(workers=0, progress=False))
    two = score_encoder(log_mel, [str(corpus)], AudioOptions(workers=2, progress=False))
    assert one.clips == two.clips == 41
    assert one.metrics == two.metrics  # the same windows in the same order: bitwise equal


def _bad_files(directory: Path) -> dict[str, str]:
    directory.mkdir(exist_ok=True)
    (directory / "noise.wav").write_bytes(os.urandom(3000))
    soundfile.write(directory / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    good = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    soundfile.write(directory / "cut.flac", good, 16000)
    data = (directory / "cut.flac").read_bytes()
    (directory / "cut.flac").write_bytes(data[: len(data) // 3])
    return {"noise.wav": "not a readable audio file", "empty.wav": "holds no audio samples",
            "cut.flac": "could not be decoded|ends before its header says|not a readable"}  # fmt: skip


def test_each_bad_file_stops_the_job_naming_it_or_is_skipped_leaving_nothing(tmp_path, corpus, log_mel):
    good = [str(p) for p in sorted(corpus.rglob("clip0*"))]
    for name, message in _bad_files(tmp_path / "bad").items():
        with pytest.raises(BadAudioError, match=message) as caught:
            score_encoder(log_mel, [*good, str(tmp_path / "bad" / name)], AudioOptions(workers=0, progress=False))
        assert name in str(caught.value)
    skipped = score_encoder(log_mel, [*good, str(tmp_path / "bad")], AudioOptions(workers=2, skip_bad=True,
                                                                                 progress=False))  # fmt: skip
    alone = score_encoder(log_mel, good, AudioOptions(workers=0, progress=False))
    assert skipped.metrics == alone.metrics and skipped.frames == alone.frames
    assert {Path(f.path).name for f in skipped.files if f.error} == set(_bad_files(tmp_path / "bad2"))


def test_silent_and_mixed_channel_files_are_scored(tmp_path, log_mel):
    soundfile.write(tmp_path / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    soundfile.write(tmp_path / "tone.ogg", np.stack([np.sin(np.arange(44100) / 7.0)] * 3, axis=1) * 0.3, 44100)
    result = score_encoder(log_mel, [str(tmp_path)], AudioOptions(workers=0, progress=False))
    assert result.frames > 0 and np.isfinite(result.metrics["frame"]["rankme"])


def test_an_hour_long_file_is_read_a_window_at_a_time(tmp_path):
    path = tmp_path / "hour.wav"
    rng = np.random.default_rng(1)
    with soundfile.SoundFile(path, "w", 8000, 2, subtype="PCM_16") as handle:
        for _ in range(60):  # 60 minutes of stereo 8 kHz, written a minute at a time
            handle.write((0.1 * rng.standard_normal((8000 * 60, 2))).astype(np.float32))
    probe = (
        "import resource, sys\n"
        "from rankme_fast.cli import main\n"
        f"main(['audio', 'log-mel', {str(path)!r}, '--window-seconds', '20', '--workers', '1', '--no-progress'])\n"
        "print('peak', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.split("peak")[-1].split()[0]) / 1024
    # the whole file as float32 at 16 kHz would be 230 MB more than the ~330 MB this process needs
    assert peak_mb < 450, f"peak RSS {peak_mb:.0f} MB"
    assert "1.000 |" in done.stdout  # one hour


def _command(corpus: Path, out: Path, *extra: str, encoder: str = "log-mel") -> list[str]:
    return [sys.executable, "-m", "rankme_fast.cli", "audio", encoder, str(corpus), "--no-progress",
            "--workers", "1", "--window-seconds", "4", "--json", str(out), *extra]  # fmt: skip


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())[0]["result"]["metrics"]


def _processes_mentioning(text: str) -> list[int]:
    """Live (not zombie) processes whose command line holds `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            alive = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            if entry.name.isdigit() and alive and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def test_resume_after_sigkill_gives_the_identical_result(tmp_path, corpus):
    """Killed as soon as its first checkpoint lands: the paced encoder leaves ~2 s of work."""
    paced = {"encoder": "paced_encoder:paced_log_mel"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(_command(corpus, tmp_path / "whole.json", **paced), check=True, capture_output=True, env=env,
                   timeout=300)  # fmt: skip
    state = tmp_path / "state.pt"
    command = _command(corpus, tmp_path / "killed.json", "--checkpoint", str(state), "--checkpoint-every", "1",
                       **paced)  # fmt: skip
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert state.exists() and not (tmp_path / "killed.json").exists()
    deadline = time.time() + 10  # its decoding worker dies with it (else blocked on its queue for good)
    while _processes_mentioning("killed.json") and time.time() < deadline:
        time.sleep(0.05)
    assert not _processes_mentioning("killed.json")
    resumed = subprocess.run(_command(corpus, tmp_path / "resumed.json", "--checkpoint", str(state), "--resume",
                                      **paced), capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stdout
    assert _metrics(tmp_path / "resumed.json") == _metrics(tmp_path / "whole.json")


def test_torchrun_two_processes_equal_one(tmp_path, corpus):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found beside this Python")
    subprocess.run(_command(corpus, tmp_path / "one.json"), check=True, capture_output=True, timeout=300)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "rankme_fast.cli",
                           *_command(corpus, tmp_path / "two.json")[3:]], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _metrics(tmp_path / "one.json"), _metrics(tmp_path / "two.json")
    for state in one:  # the same rows summed in another order; the 41-clip states are nearly rank-deficient
        assert abs(one[state]["rankme"] - two[state]["rankme"]) <= 1e-6 * one[state]["rankme"]
    result = json.loads((tmp_path / "two.json").read_text())[0]["result"]
    assert result["processes"] == 2 and result["clips"] == 41


def test_torchrun_two_processes_score_every_layer_as_one(tmp_path, corpus):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found beside this Python")
    layered = str(Path(__file__).resolve().parents[1] / "integrations")
    path = os.pathsep.join([layered, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = _command(corpus, tmp_path / "one.json", "--layers", "all", encoder="layered_model:framed_stack")
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=env)
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "rankme_fast.cli",
                           *_command(corpus, tmp_path / "two.json", "--layers", "all",
                                     encoder="layered_model:framed_stack")[3:]],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text())[0] for n in ("one", "two"))
    assert [layer["layer"] for layer in two["layers"]] == ["stack.layers.0", "stack.layers.1", "stack.layers.2"]
    for a, b in zip(one["layers"], two["layers"], strict=True):
        for state in ("frame", "frame_centered", "clip", "clip_centered"):
            assert abs(a[f"{state}_rankme"] - b[f"{state}_rankme"]) <= 1e-6 * a[f"{state}_rankme"]
    assert two["result"]["processes"] == 2


def test_labels_give_a_probe_and_a_law_a_prediction_with_its_warning(tmp_path, corpus, capsys):
    labels = corpus.parent / f"{corpus.name}-labels.csv"
    law = Path(__file__).resolve().parents[2] / "bench" / "results" / "study-full" / "fits.json"
    out = tmp_path / "out.json"
    code = cli(["audio", "log-mel", str(corpus), "--no-progress", "--workers", "0", "--labels", str(labels),
                "--label-column", "digit", "--group-column", "voice", "--law", str(law), "--plot",
                str(tmp_path / "rankme.png"), "--json", str(out)])  # fmt: skip
    assert code == 0
    row = json.loads(out.read_text())[0]
    assert 0.0 <= row["probe_accuracy"] <= 1.0 and row["probe"]["grouped"] and row["probe"]["classes"] == 10
    low, high = row["law"]["interval"]
    assert low <= row["law"]["predicted"] <= high and "not of the family" in row["law"]["warning"]
    assert (tmp_path / "rankme.png").stat().st_size > 1000
    assert "WARNING" in capsys.readouterr().out
    assert "bound" not in row["law"]["warning"]
    flat = json.loads(law.read_text())["quality_laws"]["trained/clip_rankme/mean"] | {"pinned": ["b"]}
    flat_path = tmp_path / "flat.json"
    flat_path.write_text(json.dumps(flat))
    assert cli(["audio", "log-mel", str(corpus), "--no-progress", "--workers", "0", "--law", str(flat_path),
                "--json", str(out)]) == 0  # fmt: skip
    warning = json.loads(out.read_text())[0]["law"]["warning"]
    assert warning.startswith("the law's exponent b ended at its bound") and "does not record" in warning


def test_bad_options_and_encoders_are_refused(tmp_path, corpus, log_mel):
    with pytest.raises(ValueError, match="clip must be one of"):
        score_encoder(log_mel, [str(corpus)], AudioOptions(clip="frame"))
    with pytest.raises(ValueError, match="no such file, or no audio files"):
        score_encoder(log_mel, [str(tmp_path / "nothing*.wav")], AudioOptions())
    with pytest.raises(ValueError, match="is none of: a built-in name"):
        audio.encoder_from_spec("no-such-encoder")
    assert cli(["audio", "log-mel", str(corpus), "--labels", "x.csv"]) == 1


def test_ci_gives_intervals_by_file_and_a_paired_table_of_differences(tmp_path, corpus, log_mel, capsys):
    """Blocks by file: the clip state's interval is rf.rankme's with one group per file, and
    two encoders on the same files pair up block by block (their frame counts differ)."""
    result = score_encoder(log_mel, [str(corpus)], AudioOptions(workers=0, ci=0.95, keep_clips=True, progress=False))
    clips = result.clip_embeddings.astype(np.float64)
    expected = rf.rankme(clips, ci=0.95, groups=np.arange(len(clips)))
    found = result.intervals["clip"].estimates["rankme"]
    assert found.blocks == 10 and found.standard_error == pytest.approx(expected.standard_error, rel=1e-6)
    out = tmp_path / "out.json"
    assert cli(["audio", "log-mel,crepe-tiny", str(corpus), "--option", "crepe-tiny:hop_length=1600",
                "--no-progress", "--workers", "0", "--ci", "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    rows, differences = written[:2], written[2]["paired_differences"]
    assert [d["state"] for d in differences] == ["frame", "frame_centered", "clip", "clip_centered"]
    for d in differences:
        assert d["difference"] == pytest.approx(rows[0][f"{d['state']}_rankme"] - rows[1][f"{d['state']}_rankme"])
        low, high = d["interval"]
        assert low < d["difference"] < high and d["beyond_noise"] == (not low <= 0 <= high)
        name = f"{d['state']}_rankme"
        assert rows[0][f"{name}_low"] < rows[0][name] < rows[0][f"{name}_high"]
    assert "| log-mel − crepe-tiny |" in printed and "paired intervals, blocks by file" in printed


def test_layers_score_every_layer_in_one_pass_with_a_probe_each_and_resume(tmp_path, corpus, monkeypatch, capsys):
    """A module:callable's three hooked layers: the first equals the encoder's own output
    scored alone; labels give a probe per layer and the best layer by each; a run stopped
    part-way resumes to the same states."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "integrations"))
    labels = corpus.parent / f"{corpus.name}-labels.csv"
    out = tmp_path / "layers.json"
    assert cli(["audio", "layered_model:framed_stack", str(corpus), "--layers", "all", "--labels", str(labels),
                "--label-column", "digit", "--no-progress", "--workers", "0", "--json", str(out), "--plot",
                str(tmp_path / "layers.png")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    row = json.loads(out.read_text())[0]
    assert [layer["layer"] for layer in row["layers"]] == ["stack.layers.0", "stack.layers.1", "stack.layers.2"]
    assert [layer["dim"] for layer in row["layers"]] == [24, 24, 16]
    assert all(0 <= layer["probe_accuracy"] <= 1 for layer in row["layers"])
    assert row["accuracy_lost_picking_by_rankme"] >= 0 and "best layer by clip RankMe" in printed
    assert (tmp_path / "layers.png").stat().st_size > 1000
    encoder = audio.encoder_from_spec("layered_model:framed_stack")
    alone = score_encoder(encoder, [str(corpus)], AudioOptions(workers=0, progress=False))
    first = row["layers"][0]
    for state in ("frame", "frame_centered", "clip", "clip_centered"):
        assert first[f"{state}_rankme"] == pytest.approx(alone.metrics[state]["rankme"], rel=EXACT)

    class StopsPartWay(type(encoder)):
        calls = 0

        def _embed_layers(self, wave, layers):
            StopsPartWay.calls += 1
            if StopsPartWay.calls == 30:
                raise RuntimeError("stopped part-way")
            return super()._embed_layers(wave, layers)

    stopping = StopsPartWay(encoder.model, name=encoder.name, frame_rate=encoder.frame_rate)
    options = AudioOptions(workers=0, progress=False, layers="1:", checkpoint=str(tmp_path / "state.pt"),
                           checkpoint_every=1)  # fmt: skip
    with pytest.raises(RuntimeError, match="stopped part-way"):
        score_encoder(stopping, [str(corpus)], options)
    resumed = score_encoder(encoder, [str(corpus)], AudioOptions(**{**options.__dict__, "resume": True}))
    whole = score_encoder(encoder, [str(corpus)], AudioOptions(workers=0, progress=False, layers="1:"))
    assert resumed.resumed and resumed.layers == ["stack.layers.1", "stack.layers.2"]
    assert resumed.metrics == whole.metrics
