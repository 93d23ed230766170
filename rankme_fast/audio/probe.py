"""Linear and shallow-MLP probes on frozen embeddings, following the HEAR protocol:
standardise on the training split, pick hyper-parameters on a held-out validation part of
it, report accuracy and macro-F1 on the test split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    macro_f1: float
    kind: str
    weight_decay: float | None
    epochs: int | None
    n_train: int
    n_test: int
    n_classes: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def probe(
    train_emb, train_y, test_emb, test_y, *, kind: str = "linear", validation: float = 0.2, seed: int = 0
) -> ProbeResult:
    """Train a probe on (train_emb, train_y) and score it on (test_emb, test_y).

    kind="linear": multinomial logistic regression (L-BFGS), weight decay chosen from
    `WEIGHT_DECAYS` on a stratified `validation` fraction of the training data, then refit on all
    of it. kind="mlp": one hidden layer of 1024 ReLU units with dropout 0.1, Adam (lr 1e-3),
    early stopping on validation loss (patience 20, at most 500 epochs)."""
    if kind not in ("linear", "mlp"):
        raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")
    x_train, y_train = _as_data(train_emb, train_y, "train")
    x_test, y_test = _as_data(test_emb, test_y, "test")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train has D={x_train.shape[1]} but test has D={x_test.shape[1]}")
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    generator = torch.Generator().manual_seed(seed)
    fit_idx, val_idx = _stratified_split(y_train, validation, generator)
    if kind == "linear":
        scores = {
            wd: _accuracy(
                _logistic(x_train[fit_idx], y_train[fit_idx], n_classes, wd)(x_train[val_idx]), y_train[val_idx]
            )
            for wd in WEIGHT_DECAYS
        }
        best = max(WEIGHT_DECAYS, key=lambda wd: (scores[wd], wd))  # ties: the stronger regulariser
        model = _logistic(x_train, y_train, n_classes, best)
        epochs = None
    else:
        model, epochs = _mlp(
            x_train[fit_idx], y_train[fit_idx], x_train[val_idx], y_train[val_idx], n_classes, generator
        )
        best = None
    predicted = model(x_test).argmax(1)
    return ProbeResult(
        _accuracy(model(x_test), y_test),
        _macro_f1(predicted, y_test, n_classes),
        kind,
        best,
        epochs,
        len(y_train),
        len(y_test),
        n_classes,
    )


def _as_data(embeddings, labels, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{split}: need embeddings (n, D) and labels (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{split}: need at least 2 examples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{split}: embeddings contain NaN or infinite values")
    if (y < 0).any():
        raise ValueError(f"{split}: labels must be non-negative class indices")
    return x, y


def _stratified_split(
    y: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, `fraction` of the examples (at least one when a class has two or more) to validation."""
    fit, val = [], []
    for c in torch.unique(y):
        members = torch.nonzero(y == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = round(fraction * len(members)) if len(members) > 1 else 0
        count = max(count, 1) if len(members) > 1 else 0
        val.append(members[:count])
        fit.append(members[count:])
    return torch.cat(fit), torch.cat(val)


def _logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float):
    linear = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(linear.weight), torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=300, history_size=20, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda z: linear(z).detach()


def _mlp(x, y, x_val, y_val, n_classes, generator, *, hidden=1024, patience=20, max_epochs=500, batch=1024):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(hidden, n_classes)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, best_state, since, epoch = -float("inf"), None, 0, 0
    for epoch in range(1, max_epochs + 1):  # noqa: B007 - the last epoch is reported
        model.train()
        for rows in torch.randperm(len(y), generator=generator).split(batch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():  # validation loss: smoother than accuracy on small validation sets
            score = -float(torch.nn.functional.cross_entropy(model(x_val), y_val)) if len(y_val) else 0.0
        if score > best:
            best, best_state, since = score, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return (lambda z: model(z).detach()), epoch


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


def _macro_f1(predicted: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    """Mean over the classes present in y or predicted of 2·TP / (2·TP + FP + FN)."""
    confusion = torch.bincount(y * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)
    tp = confusion.diag().double()
    denominator = confusion.sum(0).double() + confusion.sum(1).double()
    present = denominator > 0
    return float((2 * tp[present] / denominator[present]).mean())
