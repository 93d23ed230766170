"""The documentation runs: every Python block of the README and of docs/ executes as written,
and the examples in the public API's docstrings (rf.rankme, rf.spectrum, GramAccumulator,
RankMeMetric, score_files) give what they show."""

from __future__ import annotations

import doctest
import re

import pytest
from common import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(block, id=f"{page.name}:{number}")
    for page in PAGES
    for number, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S), 1)
]


@pytest.mark.parametrize("block", BLOCKS)
def test_every_python_block_of_the_docs_runs(block, tmp_path, monkeypatch, bench_cache):
    import matplotlib

    matplotlib.use("Agg")  # a block that plots needs no screen
    monkeypatch.chdir(tmp_path)  # files a block writes land here
    exec(compile(block, "<docs>", "exec"), {"__name__": "__docs__"})


def test_the_docs_have_python_blocks_and_no_links_to_missing_files():
    assert len(BLOCKS) >= 8
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize(
    "module",
    ["rankme_fast.api", "rankme_fast.accumulate", "rankme_fast.integrations.metric",
     "rankme_fast.scoring.embedding_corpus"],
)  # fmt: skip
def test_the_docstring_examples_of_the_public_api(module):
    import importlib

    found = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert found.attempted > 0 and found.failed == 0, found
