"""LiDAR from the streaming class-conditional accumulator, against a direct float64 numpy
computation of the paper's formula; streaming, merging and bad labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankme_fast.lidar import ClassScatterAccumulator


def _direct_lidar(z: np.ndarray, labels: np.ndarray, delta: float = 1e-4, eps: float = 1e-7) -> float:
    classes = np.unique(labels)
    means = np.stack([z[labels == c].mean(axis=0) for c in classes])
    spread = means - means.mean(axis=0)
    between = spread.T @ spread / (len(classes) - 1)
    centred = z - means[np.searchsorted(classes, labels)]
    within = centred.T @ centred / len(z) + delta * np.eye(z.shape[1])
    values, vectors = np.linalg.eigh(within)
    inverse_root = (vectors / np.sqrt(values)) @ vectors.T
    values = np.clip(np.linalg.eigvalsh(inverse_root @ between @ inverse_root), 0, None)
    p = values / values.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def _data(rng, classes=12, per_class=20, dim=16):
    centres = rng.standard_normal((classes, dim)) * 3.0
    labels = np.repeat(np.arange(classes), per_class)
    z = centres[labels] + rng.standard_normal((labels.size, dim)) + 100.0  # a large common offset
    order = rng.permutation(labels.size)
    return z[order], labels[order]


def test_lidar_matches_the_formula_and_streaming_equals_one_shot(rng):
    z, labels = _data(rng)
    one_shot = ClassScatterAccumulator(12).update(z, labels)
    assert one_shot.lidar() == pytest.approx(_direct_lidar(z, labels), rel=1e-8)
    streamed = ClassScatterAccumulator(12)
    for chunk in np.array_split(np.arange(len(z)), 7):
        streamed.update(torch.from_numpy(z[chunk]), torch.from_numpy(labels[chunk]))
    assert streamed.lidar() == pytest.approx(one_shot.lidar(), rel=1e-10)
    parts = np.array_split(np.arange(len(z)), 2)
    halves = [ClassScatterAccumulator(12).update(z[part], labels[part]) for part in parts]
    assert halves[0].merge(halves[1]).lidar() == pytest.approx(one_shot.lidar(), rel=1e-10)
    assert one_shot.count == len(z) and one_shot.class_counts.tolist() == [20] * 12


def test_classes_of_size_one_and_absent_classes(rng):
    z = rng.standard_normal((6, 4))
    labels = np.array([0, 1, 2, 3, 3, 3])  # classes 0-2 have one row each; class 4 never appears
    acc = ClassScatterAccumulator(5).update(z, labels)
    assert acc.lidar() == pytest.approx(_direct_lidar(z, labels), rel=1e-8)


def test_bad_labels_are_refused_and_leave_the_state_untouched(rng):
    z, labels = _data(rng, classes=3, per_class=5, dim=4)
    acc = ClassScatterAccumulator(3).update(z, labels)
    before = acc.lidar()
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        acc.update(z[:2], np.array([1, 3]))
    with pytest.raises(TypeError, match="integers"):
        acc.update(z[:2], np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        acc.update(z[:2], np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.full((2, 4), np.nan), np.array([0, 1]))
    with pytest.raises(ValueError, match="D=5"):
        acc.update(rng.standard_normal((2, 5)), np.array([0, 1]))
    assert acc.lidar() == before and acc.count == 15
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassScatterAccumulator(3).update(z[labels == 0], labels[labels == 0]).lidar()
    with pytest.raises(ValueError, match="cannot merge"):
        acc.merge(ClassScatterAccumulator(4))
