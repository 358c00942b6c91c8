"""Fit the understanding's confidence (a logistic model of the match's signals) on the
calibration questions, never on the held-out set: ``python -m bench.calibrate``.

Each calibration question of a covered type gives two examples: matched as it is (right if
the best candidate is its type), and matched with its own type left out of the knowledge
base (never right: a question the knowledge base does not cover, as close to it as such a
question gets); each question of ``out_of_domain.yaml`` one, never right. It prints
the coefficients to put in ``callbot/understand.py`` (``_CALIBRATION``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from bench.understanding import OUT_OF_DOMAIN, calibration_questions, understanding

# How much a covered question with its own type left out counts (a smaller weight gives a
# better-calibrated confidence, but more than 3 % wrong answers read aloud).
MASKED_WEIGHT = float(os.environ.get("MASKED_WEIGHT", "1.0"))


def examples() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signals, labels and weights: a question with its own type left out counts as
    ``MASKED_WEIGHT`` of one (it is harder than most questions a caller asks outside the
    knowledge base, and there are as many of them as of the others)."""
    model, _ = understanding()
    rows, labels, weights = [], [], []
    for question in calibration_questions():
        # A covered question twice: as it is, and with its type left out (then uncovered).
        covered = question.expected != OUT_OF_DOMAIN
        for exclude in ((), (question.expected,)) if covered else ((),):
            ranked, signals, _ = model.signals(question.text, exclude)
            if not ranked:
                continue
            rows.append(signals)
            labels.append(float(ranked[0].question_type == question.expected))
            weights.append(MASKED_WEIGHT if exclude else 1.0)
    return np.array(rows), np.array(labels), np.array(weights)


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 0.01,
        steps: int = 50) -> np.ndarray:
    """Weighted logistic regression by Newton's method, a little L2 so that it converges."""
    design = np.hstack([np.ones((len(x), 1)), x])
    weights = np.zeros(design.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ weights))
        gradient = design.T @ (w * (p - y)) + l2 * weights
        hessian = (design.T * (w * p * (1 - p))) @ design + l2 * np.eye(len(weights))
        weights -= np.linalg.solve(hessian, gradient)
    return weights


def main() -> None:
    x, y, w = examples()
    weights = fit(x, y, w)
    p = 1 / (1 + np.exp(-np.hstack([np.ones((len(x), 1)), x]) @ weights))
    print(f"{len(y)} examples, {int(y.sum())} right; log-loss "
          f"{-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9)):.3f}")
    for threshold in (0.5, 0.6, 0.7, 0.8, 0.9):
        said = p >= threshold
        wrong = float(np.sum(said & (y == 0))) / len(y)
        print(f"answer at >= {threshold}: {said.mean():.1%} answered, {wrong:.1%} wrong")
    print("_CALIBRATION = (" + ", ".join(f"{w:.3f}" for w in weights) + ")")
    assert all(math.isfinite(w) for w in weights)


if __name__ == "__main__":
    main()
