"""Files, directories and globs as one ordered list of files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path


def expand_paths(paths: Sequence[str | Path], suffixes: Sequence[str], kind: str) -> list[str]:
    """Files named, the files with one of `suffixes` (any case) under directories (recursive,
    sorted), and glob matches (sorted), in the order given, each once. A path that matches
    nothing raises ValueError naming it and the `kind` of file looked for."""
    files: list[str] = []
    seen: set[str] = set()
    for given in map(str, paths):
        if Path(given).is_file():
            found = [given]
        elif Path(given).is_dir():
            found = sorted(str(p) for p in Path(given).rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        else:
            found = sorted(p for p in glob.glob(given, recursive=True) if Path(p).is_file())
        if not found:
            raise ValueError(f"{given}: no such file, or no {kind} files ({', '.join(suffixes)}) there")
        for file in found:
            if file not in seen:
                seen.add(file)
                files.append(file)
    return files
