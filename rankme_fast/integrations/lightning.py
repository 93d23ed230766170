"""RankMeCallback: RankMe of a layer's outputs, logged from a Lightning training run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rankme_fast._extras import require

require("rankme_fast.integrations.lightning", "train", "lightning")

from lightning.pytorch import Callback, LightningModule, Trainer

from rankme_fast._checks import check_positive_int
from rankme_fast.integrations.hooks import ForwardCapture, Select
from rankme_fast.integrations.metric import NothingSeenError, RankMeMetric

StepHook = Callable[[LightningModule, Any, Any], torch.Tensor]
_STAGES = ("train", "validation")


@dataclass(frozen=True)
class LoggedRankMe:
    """One logged value: when (global step, epoch), the value, and the rows this process fed it
    (with `ci`, also the interval's ends)."""

    step: int
    epoch: int
    value: float
    rows: int
    low: float | None = None
    high: float | None = None


class RankMeCallback(Callback):
    """Logs RankMe of embeddings collected during training (or validation).

    `layer_or_hook` is where the embeddings come from: a module name inside the LightningModule
    ("encoder.proj") or the module itself, whose outputs a forward hook collects, or a function
    `hook(pl_module, batch, outputs) -> Tensor` called after each batch (for embeddings the
    step returns). With `every_n_steps` the value is logged every n batches over those n
    batches' rows; without, once per epoch over the epoch's rows. `max_samples` keeps the first
    rows of each window (rankme_fast.sample_limit). With `ci` (e.g. 0.95), each window's rows go
    round-robin by batch into `blocks` block states and the delete-one-block jackknife interval
    is logged next to the value as `<name>_se`, `<name>_low` and `<name>_high` (so a
    `ModelCheckpoint` can monitor `<name>_low`, the cautious choice). The value is synced across
    processes (RankMeMetric) and also kept in `history`.
    """

    def __init__(
        self,
        layer_or_hook: str | nn.Module | StepHook,
        every_n_steps: int | None = None,
        max_samples: int | None = None,
        *,
        stage: str = "train",
        name: str | None = None,
        select: Select | None = None,
        centered: bool = False,
        precision: str = "exact",
        eps: float = 1e-7,
        ci: float | None = None,
        blocks: int = 10,
    ) -> None:
        if not isinstance(layer_or_hook, (str, nn.Module)) and not callable(layer_or_hook):
            raise TypeError(f"layer_or_hook must be a module name, an nn.Module or a callable, got {layer_or_hook!r}")
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
        check_positive_int(every_n_steps, "every_n_steps", optional=True)
        if every_n_steps is not None and stage != "train":
            raise ValueError("every_n_steps applies to stage='train'; validation logs once per validation run")
        self.target, self.every_n_steps, self.stage = layer_or_hook, every_n_steps, stage
        self.name = name or ("rankme" if stage == "train" else "val_rankme")
        self.select = select
        self.metric = RankMeMetric(centered=centered, precision=precision, eps=eps, max_samples=max_samples, ci=ci,
                                   blocks=blocks)  # fmt: skip
        self.history: list[LoggedRankMe] = []
        self._capture: ForwardCapture | None = None
        self._batches = 0

    # -- wiring ----------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._capture is None and isinstance(self.target, (str, nn.Module)):
            module = pl_module.get_submodule(self.target) if isinstance(self.target, str) else self.target
            if not any(module is m for m in pl_module.modules()):
                raise ValueError("the module given to RankMeCallback is not part of the LightningModule")
            self._capture = ForwardCapture(module, self.metric.update, self.select)
            self._capture.active = False
            self._capture.attach()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._capture is not None:
            self._capture.detach()
            self._capture = None

    # -- training ----------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stage == "train" and self.every_n_steps is None:
            self.metric.reset()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.stage == "train":
            self._start(pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.stage != "train":
            return
        self._end(pl_module, batch, outputs)
        self._batches += 1
        if self.every_n_steps is not None and self._batches % self.every_n_steps == 0:
            self._log(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stage == "train" and self.every_n_steps is None:
            self._log(trainer, pl_module, on_step=False)

    # -- validation --------------------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stage == "validation":
            self.metric.reset()

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.stage == "validation" and not trainer.sanity_checking:
            self._start(pl_module)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.stage == "validation" and not trainer.sanity_checking:
            self._end(pl_module, batch, outputs)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stage == "validation" and not trainer.sanity_checking:
            self._log(trainer, pl_module, on_step=False)

    # -- helpers -----------------------------------------------------------------------------------

    def _start(self, pl_module: LightningModule) -> None:
        if self.metric.device != pl_module.device:
            self.metric.to(pl_module.device)
        if self._capture is not None:
            self._capture.active = True

    def _end(self, pl_module: LightningModule, batch: Any, outputs: Any) -> None:
        if self._capture is not None:
            self._capture.active = False
        else:
            self.metric.update(self.target(pl_module, batch, outputs).detach())

    def _log(self, trainer: Trainer, pl_module: LightningModule, *, on_step: bool) -> None:
        """Compute (synced over processes), log, keep in history, start a new window."""
        try:
            value = self.metric.compute()
        except NothingSeenError:
            return
        rows = int(self.metric.count.sum())  # the local count (over blocks): compute() restores the unsynced state
        values = value if isinstance(value, dict) else {"rankme": value}  # with ci: rankme, rankme_se, _low, _high
        for key, logged in values.items():
            pl_module.log(self.name + key.removeprefix("rankme"), logged, on_step=on_step, on_epoch=not on_step,
                          batch_size=max(rows, 1))  # fmt: skip
        ends = (values.get(f"rankme_{end}") for end in ("low", "high"))
        self.history.append(LoggedRankMe(trainer.global_step, trainer.current_epoch, float(values["rankme"]), rows,
                                         *(None if v is None else float(v) for v in ends)))  # fmt: skip
        self.metric.reset()
