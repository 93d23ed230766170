"""`rankme-fast score`: every file format against rf.rankme on the same data, directories and
globs, per-file results, the row cap, every bad-input case, resume after SIGKILL, torchrun
with 2 processes, and resident memory bounded on a corpus far larger than it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from common import make_embeddings

import rankme_fast as rf
from rankme_fast.cli import main as cli
from rankme_fast.io import BadFileError, embedding_paths, numpy_files, open_source
from rankme_fast.scoring import ScoreOptions, score_files

EXACT = 1e-9


def _close(value: float, expected: float, tol: float = EXACT) -> bool:
    return abs(value - expected) <= tol * abs(expected)


def _score(paths, **options) -> float:
    return score_files([str(p) for p in paths], ScoreOptions(progress=False, **options)).metrics["rankme"]


@pytest.fixture
def z() -> np.ndarray:
    return make_embeddings("power_law", 1500, 24, seed=31).astype(np.float32)


# -- formats -----------------------------------------------------------------------------------


def test_npy_and_frame_level_npy(tmp_path, z):
    np.save(tmp_path / "a.npy", z)
    np.save(tmp_path / "frames.npy", z.reshape(50, 30, 24).astype(np.float16))
    assert _close(_score([tmp_path / "a.npy"], batch_rows=97), rf.rankme(z))
    assert _close(_score([tmp_path / "frames.npy"], batch_rows=64), rf.rankme(z.astype(np.float16)))


@pytest.mark.parametrize("direct", [True, False], ids=["direct-reads-where-offered", "page-cache-reads"])
def test_npy_row_ranges_at_every_alignment(tmp_path, monkeypatch, direct):
    """Direct reads fetch block-aligned supersets of each batch: rows of 74 bytes after a
    128-byte header start and end at every offset within a block, in both read modes."""
    if not direct:
        monkeypatch.setattr(numpy_files, "_open_direct", lambda path: None)
    rows = make_embeddings("isotropic", 3001, 37, seed=5).astype(np.float16)
    np.save(tmp_path / "odd.npy", rows)
    source = open_source(str(tmp_path / "odd.npy"))
    try:
        assert direct or not source.reads_directly
        for start, stop in [(0, 1), (0, 3001), (55, 56), (1000, 2111), (2999, 3001)]:
            np.testing.assert_array_equal(source.read(start, stop), rows[start:stop])
    finally:
        source.close()
    assert _close(_score([tmp_path / "odd.npy"], batch_rows=113), rf.rankme(rows))


def test_fortran_ordered_npy(tmp_path, z):
    np.save(tmp_path / "f.npy", np.asfortranarray(z))
    assert _close(_score([tmp_path / "f.npy"], batch_rows=97), rf.rankme(z))


def test_npz_compressed_and_stored(tmp_path, z):
    np.savez_compressed(tmp_path / "c.npz", emb=z, labels=np.arange(10.0)[:, None])
    np.savez(tmp_path / "s.npz", z.astype(np.float64))
    assert _close(_score([tmp_path / "c.npz"], key="emb", batch_rows=100), rf.rankme(z))
    assert _close(_score([tmp_path / "s.npz"], batch_rows=100), rf.rankme(z))


def test_safetensors_named_tensor_in_bfloat16(tmp_path, z):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    frames = torch.from_numpy(z).reshape(75, 20, 24).to(torch.bfloat16)
    save_file({"emb": frames, "other": torch.zeros(3, 3)}, str(tmp_path / "t.safetensors"))
    assert _close(_score([tmp_path / "t.safetensors"], key="emb", batch_rows=333), rf.rankme(frames.reshape(-1, 24)))


def test_parquet_fixed_size_and_variable_lists_and_arrow(tmp_path, z):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    fixed = pa.FixedSizeListArray.from_arrays(pa.array(z.ravel()), 24)
    pq.write_table(pa.table({"id": np.arange(len(z)), "emb": fixed}), tmp_path / "f.parquet", row_group_size=400)
    pq.write_table(pa.table({"emb": pa.array(list(z.astype(np.float64)))}), tmp_path / "v.parquet", row_group_size=700)
    table = pa.table({"emb": fixed})
    with pa.ipc.new_file(str(tmp_path / "a.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=256)
    for name in ("f.parquet", "v.parquet", "a.arrow"):
        assert _close(_score([tmp_path / name], batch_rows=333), rf.rankme(z)), name


def test_hdf5_dataset(tmp_path, z):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "e.h5", "w") as handle:
        handle["group/emb"] = z.reshape(30, 50, 24)
        handle["labels"] = np.arange(30.0)
    assert _close(_score([tmp_path / "e.h5"], key="group/emb", batch_rows=77), rf.rankme(z))


def test_directories_globs_per_file_and_the_row_cap(tmp_path, z, capsys):
    shards = tmp_path / "shards"
    (shards / "deeper").mkdir(parents=True)
    parts = np.array_split(z, 3)
    for index, part in enumerate(parts):
        np.save(shards / ("deeper" if index == 2 else "") / f"part{index}.npy", part)
    order = [Path(p).name for p in embedding_paths([shards])]
    assert order == ["part2.npy", "part0.npy", "part1.npy"]  # sorted paths: deeper/ before part0.npy
    assert _close(_score([shards]), rf.rankme(z))
    assert _close(_score([str(shards / "**" / "*.npy")]), rf.rankme(z))
    in_file_order = np.concatenate([parts[2], parts[0], parts[1]])
    assert _close(_score([shards], max_rows=700, batch_rows=128), rf.rankme(in_file_order[:700]))

    out = tmp_path / "result.json"
    assert cli(["score", str(shards), "--per-file", "--metrics", "rankme,stable_rank", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    per_file = {Path(f["path"]).name: f["metrics"]["rankme"] for f in result["files"]}
    assert all(_close(per_file[f"part{i}.npy"], rf.rankme(part)) for i, part in enumerate(parts))
    assert result["rows"] == len(z) and result["dim"] == 24
    printed = capsys.readouterr().out
    assert "rankme" in printed and "stable_rank" in printed and "rows/s" in printed


# -- bad input ---------------------------------------------------------------------------------


def _bad_files(tmp_path: Path, z: np.ndarray) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must say)."""
    (tmp_path / "garbage.npy").write_bytes(b"this is not an array" * 10)
    np.save(tmp_path / "truncated.npy", z)
    with open(tmp_path / "truncated.npy", "r+b") as handle:
        handle.truncate(os.path.getsize(tmp_path / "truncated.npy") - 1000)
    np.save(tmp_path / "ints.npy", np.arange(48).reshape(2, 24))
    np.save(tmp_path / "wrong_dim.npy", z[:, :20])
    nan = z.copy()
    nan[1234, 5] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez(tmp_path / "two.npz", a=z, b=z)
    return {
        "garbage": (tmp_path / "garbage.npy", "not a readable .npy"),
        "truncated": (tmp_path / "truncated.npy", r"truncated: \d+ bytes, the header needs \d+"),
        "ints": (tmp_path / "ints.npy", "dtype int64"),
        "wrong_dim": (tmp_path / "wrong_dim.npy", "D=20 but"),
        "nan": (tmp_path / "nan.npy", "NaN or Inf"),
        "two_arrays": (tmp_path / "two.npz", "pick one with --key"),
    }


def test_a_file_that_shrinks_while_read_is_named(tmp_path, z):
    path = tmp_path / "shrinks.npy"
    np.save(path, z)
    source = open_source(str(path))
    try:
        np.testing.assert_array_equal(source.read(0, 10), z[:10])
        os.truncate(path, os.path.getsize(path) - 1000)
        with pytest.raises(BadFileError, match=f"{path}: truncated at row"):
            source.read(0, len(z))
    finally:
        source.close()


def test_each_bad_file_is_named_in_a_clear_error(tmp_path, z):
    good = tmp_path / "good.npy"
    np.save(good, z)
    for name, (path, message) in _bad_files(tmp_path, z).items():
        with pytest.raises(BadFileError, match=message) as caught:
            _score([good, path], batch_rows=500)
        assert str(path) in str(caught.value), name
    with pytest.raises(BadFileError, match="no array named 'nope'"):
        _score([tmp_path / "two.npz"], key="nope")
    with pytest.raises(ValueError, match="no such file"):
        _score([tmp_path / "missing*.npy"])


def test_wrong_parquet_column_is_named(tmp_path, z):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": np.arange(3), "emb": pa.array(list(z[:3]))}), tmp_path / "p.parquet")
    with pytest.raises(BadFileError, match="column 'id' has type int64"):
        _score([tmp_path / "p.parquet"], column="id")
    with pytest.raises(BadFileError, match="no list column named 'vec'"):
        _score([tmp_path / "p.parquet"], column="vec")


def test_skip_bad_reports_and_scores_the_rest(tmp_path, z, capsys):
    np.save(tmp_path / "good.npy", z)
    bad = _bad_files(tmp_path, z)
    paths = [str(tmp_path / "good.npy")] + [str(path) for path, _ in bad.values()]
    result = score_files(paths, ScoreOptions(skip_bad=True, batch_rows=500, progress=False))
    assert _close(result.metrics["rankme"], rf.rankme(z))  # nan.npy is dropped whole, not from row 1000
    skipped = {Path(f.path).name for f in result.files if f.error}
    assert skipped == {path.name for path, _ in bad.values()}
    assert "skipped" in capsys.readouterr().err


def test_nonfinite_rows_name_the_flag_and_drop_skips_and_counts_them(tmp_path, z, capsys):
    dirty = z.copy()
    dirty[[7, 700, 1400], [0, 5, 23]] = [np.nan, np.inf, -np.inf]
    np.save(tmp_path / "dirty.npy", dirty)
    assert cli(["score", str(tmp_path / "dirty.npy"), "--no-progress", "--batch-rows", "500"]) == 1
    error = capsys.readouterr().err
    assert "dirty.npy: rows 0..499: 1 of 500 rows hold NaN or Inf" in error and "--nonfinite drop" in error
    out = tmp_path / "out.json"
    argv = ["score", str(tmp_path / "dirty.npy"), "--no-progress", "--nonfinite", "drop", "--per-file"]
    assert cli([*argv, "--batch-rows", "500", "--json", str(out)]) == 0
    assert "dropped 3 rows" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["rows"] == 1497 and result["dropped"] == 3 and result["files"][0]["dropped"] == 3
    assert _close(result["metrics"]["rankme"], rf.rankme(np.delete(z, [7, 700, 1400], axis=0)))


def test_big_endian_files_score_as_native(tmp_path, z):
    h5py = pytest.importorskip("h5py")
    big = z.astype(">f4")
    np.save(tmp_path / "big.npy", big)
    np.savez_compressed(tmp_path / "big.npz", embeddings=big.astype(">f2"))
    with h5py.File(tmp_path / "big.h5", "w") as handle:
        handle.create_dataset("embeddings", data=big.astype(">f8"))
    assert _close(_score([tmp_path / "big.npy"], batch_rows=333), rf.rankme(z))
    assert _close(_score([tmp_path / "big.npz"], batch_rows=333), rf.rankme(z.astype(np.float16)))
    assert _close(_score([tmp_path / "big.h5"], batch_rows=333), rf.rankme(z.astype(np.float64)))


def test_bad_options_are_refused(tmp_path):
    for options, message in [
        ({"metrics": ("rankme", "bogus")}, "metrics"),
        ({"metrics": ("nesum",)}, "--centered"),
        ({"batch_rows": 0}, "batch_rows"),
        ({"resume": True}, "checkpoint"),
        ({"checkpoint": str(tmp_path / "no" / "state.pt")}, "does not exist"),
    ]:
        with pytest.raises(ValueError, match=message):
            score_files([str(tmp_path)], ScoreOptions(**options))


# -- crash and resume --------------------------------------------------------------------------


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rankme_fast.cli", "score", *args, "--no-progress"]


@pytest.mark.parametrize("centered", [False, True])
def test_resume_after_sigkill_gives_the_identical_result(tmp_path, centered):
    rng = np.random.default_rng(32)
    for index in range(3):
        np.save(tmp_path / f"shard{index}.npy", (rng.standard_normal((20_000, 64)) + 5).astype(np.float32))
    common = [str(tmp_path / "shard*.npy"), "--batch-rows", "200", "--metrics", "rankme,effective_rank"]
    common += ["--centered", "--ci"] if centered else []  # centred: with the interval's block states too
    straight = tmp_path / "straight.json"
    subprocess.run(_command(*common, "--json", str(straight)), check=True, timeout=300)

    state = tmp_path / "state.pt"
    slow = [*common, "--checkpoint", str(state), "--checkpoint-every", "1"]
    victim = subprocess.Popen(_command(*slow))
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.001)
    # Killed as soon as its first checkpoint is on disk: 300 batches, each checkpointed (written,
    # flushed, renamed), are far from done then, on a busy machine too.
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = tmp_path / "resumed.json"
    subprocess.run(_command(*slow, "--resume", "--json", str(resumed)), check=True, timeout=300)

    first, second = json.loads(straight.read_text()), json.loads(resumed.read_text())
    assert 0 < second["resumed_from_row"] < 60_000
    assert second["rows"] == first["rows"] == 60_000
    assert second["metrics"] == first["metrics"]  # bitwise: same batches, same order
    assert second["intervals"] == first["intervals"]


def test_resume_refuses_a_checkpoint_of_another_job(tmp_path, z):
    np.save(tmp_path / "a.npy", z)
    state = str(tmp_path / "state.pt")
    _score([tmp_path / "a.npy"], checkpoint=state, batch_rows=100)
    with pytest.raises(ValueError, match="batch_rows"):
        _score([tmp_path / "a.npy"], checkpoint=state, resume=True, batch_rows=101)
    assert _close(_score([tmp_path / "a.npy"], checkpoint=state, resume=True, batch_rows=100), rf.rankme(z))


def test_a_checkpoint_of_the_earlier_format_is_refused_with_a_clear_message(tmp_path, z):
    np.save(tmp_path / "a.npy", z)
    state = tmp_path / "state.pt"
    torch.save({"format": "rankme_fast.score-checkpoint", "version": 1, "job": {}, "position": [0, 0]}, state)
    with pytest.raises(ValueError, match="earlier version of rankme-fast, which cannot be resumed"):
        _score([tmp_path / "a.npy"], checkpoint=str(state), resume=True)


# -- several processes ----------------------------------------------------------------------------


def test_torchrun_two_processes_equal_one(tmp_path):
    rng = np.random.default_rng(33)
    parts = [rng.standard_normal((n, 40)).astype(np.float32) + 3 for n in (900, 500, 700)]
    for index, part in enumerate(parts):
        np.save(tmp_path / f"p{index}.npy", part)
    out = tmp_path / "two.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "rankme_fast.cli", "score", str(tmp_path), "--centered", "--per-file", "--json", str(out),
               "--no-progress"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, timeout=300, env=env)
    result = json.loads(out.read_text())
    everything = np.concatenate(parts)
    assert result["processes"] == 2 and result["rows"] == len(everything)
    assert _close(result["metrics"]["rankme"], rf.rankme(everything, centered=True))
    assert sorted(Path(f["path"]).name for f in result["files"]) == ["p0.npy", "p1.npy", "p2.npy"]


# -- memory ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resident_memory_stays_bounded_on_a_large_corpus(tmp_path):
    """2 GiB of fp16 rows (D = 768) in 4 shards, scored with the peak RSS growing by under 160 MB
    over that of the same process after scoring a small file (the interpreter, torch, the
    kernels and whatever library the dispatch loaded: ~300 MB here, more where more is loaded)."""
    rows_per_shard, dim = 349_526, 768
    block = np.random.default_rng(34).standard_normal((1 << 14, dim)).astype(np.float16)
    shape = (rows_per_shard, dim)
    header = {"descr": np.lib.format.dtype_to_descr(block.dtype), "fortran_order": False, "shape": shape}
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index in range(4):
        with open(corpus / f"big{index}.npy", "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for start in range(0, rows_per_shard, len(block)):
                handle.write((block[: rows_per_shard - start] * (1 + index + start / rows_per_shard)).tobytes())
    assert sum(p.stat().st_size for p in corpus.iterdir()) >= 2 << 30
    np.save(tmp_path / "small.npy", block[:4096])
    # The probe's own peak (VmHWM), not ru_maxrss: Linux folds the parent's peak into the
    # ru_maxrss of a child started by vfork + exec, so it grew with whatever pytest held.
    probe = (
        "import sys\n"
        "from rankme_fast.cli import main\n"
        "peak = lambda: next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
        "main(['score', sys.argv[2], '--precision', 'fast', '--no-progress'])\n"
        "print('BASE_KB', peak())\n"
        "code = main(['score', sys.argv[1], '--precision', 'fast', '--no-progress'])\n"
        "print('PEAK_KB', peak())\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(corpus), str(tmp_path / "small.npy")],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    base_mb = int(done.stdout.split("BASE_KB")[1].split()[0]) / 1024
    peak_mb = int(done.stdout.split("PEAK_KB")[1]) / 1024
    assert f"rows {4 * rows_per_shard:,}" in done.stdout
    grown = f"peak RSS {peak_mb:.0f} MB after {base_mb:.0f} MB for a 2 GiB corpus\n{done.stdout}"
    assert peak_mb - base_mb < 160, grown
