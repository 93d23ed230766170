"""log-mel slowed to at least 30 ms per window, for tests that must stop a `rankme-fast audio`
job part-way through (log-mel alone finishes a test corpus in a tenth of a second). Loaded by
the command as `paced_encoder:paced_log_mel` with this folder on PYTHONPATH."""

from __future__ import annotations

import time

import numpy as np

from rankme_fast import audio
from rankme_fast.audio.encoders.encoder import AudioEncoder, FrameEmbeddings

SECONDS_PER_WINDOW = 0.03


class PacedLogMel(AudioEncoder):
    def __init__(self) -> None:
        self.inner = audio.load_encoder("log-mel")
        self.name, self.dim, self.frame_rate = "paced-log-mel", self.inner.dim, self.inner.frame_rate
        self.n_params, self.sample_rate = self.inner.n_params, self.inner.sample_rate

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        time.sleep(SECONDS_PER_WINDOW)
        return self.inner._embed(wave)


def paced_log_mel() -> PacedLogMel:
    return PacedLogMel()
