"""Bias-only models trained by the toolkit: a multinomial logistic regression on overlap features (NLI,
paraphrase) or on a bag of words of one field (hypothesis-only, claim-only), with cross-fitted predictions.

Cross-fitting: the training split is cut into `folds` parts; each part is predicted by a classifier fitted
on the other parts. In-sample predictions of a bag-of-words model are over-confident (it memorises rare
words), which would make PoE discard far more of the training signal than the bias actually explains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize, sparse

from ..errors import SubnetsError
from ..tasks import TaskSpec
from .predictions import PredictionCache, dataset_fingerprint
from .features import OVERLAP_FEATURES, BagOfWords, overlap_matrix

BIAS_TYPES = ("overlap", "hypothesis_only")


class SoftmaxRegression:
    """Multinomial logistic regression with an L2 penalty, fitted by L-BFGS on CPU (dense or sparse X)."""

    def __init__(self, num_classes: int, l2: float = 50.0, max_iter: int = 500) -> None:
        self.num_classes = num_classes
        self.l2 = l2
        self.max_iter = max_iter
        self.weights: np.ndarray | None = None  # [features + 1, classes], last row is the bias

    @staticmethod
    def _with_bias(x) -> sparse.csr_matrix | np.ndarray:
        ones = np.ones((x.shape[0], 1), dtype=np.float64)
        return sparse.hstack([x, ones], format="csr") if sparse.issparse(x) else np.hstack([x, ones])

    @staticmethod
    def _softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def fit(self, x, y: np.ndarray) -> "SoftmaxRegression":
        xb = self._with_bias(x)
        n, d = xb.shape
        onehot = np.eye(self.num_classes)[y]

        def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
            w = flat.reshape(d, self.num_classes)
            z = np.asarray(xb @ w)
            log_p = z - z.max(axis=1, keepdims=True)
            log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
            penalty = w[:-1]  # the intercept is not penalised
            loss = -(onehot * log_p).sum() / n + 0.5 * self.l2 * (penalty ** 2).sum() / n
            grad = np.asarray(xb.T @ (np.exp(log_p) - onehot)) / n
            grad[:-1] += self.l2 * penalty / n
            return loss, grad.ravel()

        start = np.zeros(d * self.num_classes)
        result = optimize.minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                                   options={"maxiter": self.max_iter})
        self.weights = result.x.reshape(d, self.num_classes)
        return self

    def predict_proba(self, x) -> np.ndarray:
        if self.weights is None:
            raise SubnetsError("The bias model must be fitted before it predicts.")
        return self._softmax(np.asarray(self._with_bias(x) @ self.weights)).astype(np.float32)


@dataclass
class Featurizer:
    """Turns rows (dicts of text fields) into a feature matrix."""

    bias_type: str
    premise_field: str
    hypothesis_field: str
    bow: BagOfWords | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit_transform(self, rows: dict[str, Sequence[str]]):
        """Fit the label-free state (vocabulary or standardisation) on `rows` and return their features."""
        if self.bias_type == "hypothesis_only":
            self.bow = BagOfWords().fit(rows[self.hypothesis_field])
            return self.bow.transform(rows[self.hypothesis_field])
        feats = overlap_matrix(rows[self.premise_field], rows[self.hypothesis_field])
        self.mean, self.std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
        return (feats - self.mean) / self.std

    def transform(self, rows: dict[str, Sequence[str]]):
        if self.bow is not None:
            return self.bow.transform(rows[self.hypothesis_field])
        return (overlap_matrix(rows[self.premise_field], rows[self.hypothesis_field]) - self.mean) / self.std

    def describe(self) -> list[str]:
        if self.bias_type == "hypothesis_only":
            return [f"binary unigram+bigram bag of words of '{self.hypothesis_field}'"]
        return [f"{name}({self.premise_field}, {self.hypothesis_field})" for name in OVERLAP_FEATURES]


def bias_fields(task: TaskSpec) -> tuple[str, str]:
    """(premise, hypothesis): the hypothesis is the task's `bias_field` (claim for fact checking), else the
    second text field; the premise is the other field."""
    if not task.is_pair:
        raise SubnetsError(f"Bias models need a sentence-pair task; '{task.name}' has a single text field.")
    hypothesis = task.bias_field or task.text_fields[1]
    premise = next(f for f in task.text_fields if f != hypothesis)
    return premise, hypothesis


@dataclass
class BiasModelResult:
    cache: PredictionCache
    metrics: dict[str, float | int | str | list[str]] = field(default_factory=dict)


def train_bias_model(task: TaskSpec, train, eval_dataset=None, *, bias_type: str = "overlap", folds: int = 5,
                     seed: int = 0, l2: float = 50.0) -> BiasModelResult:
    """Cross-fitted bias-only probabilities for every training example (`train` and `eval_dataset` are
    untokenised `datasets.Dataset`s with `idx`, the text fields and `label`), plus accuracies."""
    if bias_type not in BIAS_TYPES:
        raise SubnetsError(f"Unknown bias_type '{bias_type}'; expected one of {', '.join(BIAS_TYPES)}.")
    if folds < 2:
        raise SubnetsError(f"Cross-fitting needs at least 2 folds, got {folds}.")
    premise, hypothesis = bias_fields(task)
    num_classes = len(task.label_names)
    labels = np.asarray(train["label"], dtype=np.int64)
    ids = np.asarray(train["idx"], dtype=np.int64)
    if len(labels) < folds:
        raise SubnetsError(f"The training split has {len(labels)} examples, fewer than the {folds} folds.")
    # Feature extraction is label-free (vocabulary, standardisation), so it is fitted once on the whole
    # training split; only the classifier is cross-fitted.
    fields = (premise, hypothesis)
    featurizer = Featurizer(bias_type, premise, hypothesis)
    features = featurizer.fit_transform({f: list(train[f]) for f in fields})

    fold_of = np.random.default_rng(seed).permutation(len(labels)) % folds
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    for k in range(folds):
        held, kept = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        model = SoftmaxRegression(num_classes, l2=l2).fit(features[kept], labels[kept])
        probs[held] = model.predict_proba(features[held])

    metrics: dict = {"task": task.name, "bias_type": bias_type, "folds": folds, "train_examples": len(labels),
                     "train_crossfit_accuracy": float((probs.argmax(1) == labels).mean()),
                     "train_mean_gold_prob": float(probs[np.arange(len(labels)), labels].mean()),
                     "features": featurizer.describe()}
    if eval_dataset is not None:
        model = SoftmaxRegression(num_classes, l2=l2).fit(features, labels)
        eval_probs = model.predict_proba(featurizer.transform({f: list(eval_dataset[f]) for f in fields}))
        eval_labels = np.asarray(eval_dataset["label"], dtype=np.int64)
        metrics["eval_examples"] = len(eval_labels)
        metrics["eval_accuracy"] = float((eval_probs.argmax(1) == eval_labels).mean())
    cache = PredictionCache(ids, probs, labels, task.name, dataset_fingerprint(ids, labels), kind="bias")
    return BiasModelResult(cache, metrics)
