"""The classical baseline beside every model: character 1-3-gram TF-IDF + a linear SVM (scikit-learn).

It trains in seconds on the same dataset folder (single texts, pairs, multi-label), so a user sees at
once whether a transformer earns its cost. Pairs are featurised as [a, b, a * b] (the product keeps the
n-grams both sides share). Single-label probabilities come from Platt scaling on 3 folds (the argmax
is as accurate as the SVM's own decision, and the out-of-fold probabilities feed `analyze dirty`);
multi-label ones are the sigmoid of each label's decision (>= 0.5 exactly when the SVM says yes).
scikit-learn is imported inside the functions: `pip install 'zhcls[analysis]'`.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from zhcls import data
from zhcls.errors import ZhclsError, require
from zhcls.evaluation import metrics
from zhcls.inference.predictor import sigmoid, softmax

CALIBRATION_FOLDS = 3


def require_sklearn():
    return require("sklearn", "analysis", "the TF-IDF baseline (skip it with --no_baseline)")


def skipped_without_sklearn() -> str | None:
    """The one line that train and evaluate print when they skip the baseline (scikit-learn is an extra:
    the model is their job, the baseline a comparison beside it); None when it can run."""
    try:
        require_sklearn()
    except ZhclsError:
        return "skipped the TF-IDF baseline beside the model: it needs scikit-learn: pip install 'zhcls[analysis]'"
    return None


class Baseline:
    """Character n-gram TF-IDF + linear SVM over a fixed label list; `fit`, then `predict_proba` (n, C)."""

    def __init__(self, labels: Sequence[str], problem_type: str = "multi_class", ngram_range=(1, 3)):
        require_sklearn()
        self.labels, self.problem_type, self.ngram_range = list(labels), problem_type, ngram_range

    def features(self, examples: Sequence[data.Example]):
        from scipy import sparse

        a = self.vectorizer.transform([e.text_a for e in examples])
        if examples and examples[0].text_b is not None:
            b = self.vectorizer.transform([e.text_b for e in examples])
            return sparse.hstack([a, b, a.multiply(b)]).tocsr()
        return a

    def make_vectorizer(self, examples: Sequence[data.Example]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [e.text_a for e in examples] + [e.text_b for e in examples if e.text_b is not None]
        return TfidfVectorizer(analyzer="char", ngram_range=self.ngram_range, sublinear_tf=True, lowercase=True,
                               dtype=np.float32).fit(texts)

    def fit(self, examples: Sequence[data.Example]) -> Baseline:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.svm import LinearSVC

        self.vectorizer = self.make_vectorizer(examples)
        x = self.features(examples)
        y = data.encode_labels(examples, self.labels, self.problem_type)
        if self.problem_type != "multi_class":
            seen = y.sum(axis=0) > 0  # a label never seen in training is never predicted
            self.columns = np.flatnonzero(seen)
            self.model = OneVsRestClassifier(LinearSVC()).fit(x, y[:, seen]) if seen.any() else None
            return self
        self.columns = np.unique(y)
        if len(self.columns) < 2:
            raise ZhclsError(f"the TF-IDF baseline needs at least two classes in training, found {len(self.columns)}")
        folds = min(CALIBRATION_FOLDS, int(np.bincount(y)[self.columns].min()))
        # Platt scaling needs every class in every fold; with a class this rare, the SVM's own scores.
        self.model = CalibratedClassifierCV(LinearSVC(), cv=folds) if folds >= 2 else LinearSVC()
        self.model.fit(x, y)
        return self

    def predict_proba(self, examples: Sequence[data.Example]) -> np.ndarray:
        probs = np.zeros((len(examples), len(self.labels)), dtype=np.float32)
        if not examples:
            return probs
        x = self.features(examples)
        if self.problem_type != "multi_class":
            if self.model is not None:
                decision = self.model.decision_function(x)
                probs[:, self.columns] = sigmoid(decision.reshape(len(examples), -1))
            return probs
        if hasattr(self.model, "predict_proba"):
            scores = self.model.predict_proba(x)
        else:
            decision = self.model.decision_function(x)
            scores = softmax(np.stack([-decision, decision], axis=1) if decision.ndim == 1 else decision)
        probs[:, self.columns] = scores
        return probs


@dataclass
class BaselineResult:
    metric: str  # "accuracy" or "micro-F1"
    score: float  # in points
    seconds: float
    n_train: int
    n_dev: int

    def line(self) -> str:
        return f"dev {self.metric} {self.score:.2f} (TF-IDF + linear SVM baseline, {self.seconds:.1f}s)"

    def to_dict(self) -> dict:
        return asdict(self)


def run_baseline(ds: data.DatasetFolder) -> BaselineResult:
    """Train the baseline on ``ds.train`` and score it on ``ds.dev``."""
    t0 = time.time()
    model = Baseline(ds.labels, ds.problem_type).fit(ds.train)
    y = data.encode_labels(ds.dev, ds.labels, ds.problem_type)
    value = metrics.headline(ds.labels, y, model.predict_proba(ds.dev), ds.problem_type)
    return BaselineResult("accuracy" if ds.problem_type == "multi_class" else "micro-F1", value,
                          time.time() - t0, len(ds.train), len(ds.dev))


def baseline(dataset_dir, *, train_file="train.txt", dev_file="dev.txt", label_file="label.txt", task="auto",
             problem_type="multi_class") -> BaselineResult:
    """`zhcls baseline`: the TF-IDF baseline's dev score on a dataset folder, and the time it took."""
    require_sklearn()
    ds = data.load_dataset(dataset_dir, train_file=train_file, dev_file=dev_file, label_file=label_file, task=task,
                           problem_type=problem_type)
    return run_baseline(ds)
