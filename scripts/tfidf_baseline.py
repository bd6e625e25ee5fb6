"""TF-IDF + logistic regression on the sentiment splits: the row for scale beside the encoders.

    python scripts/tfidf_baseline.py data/sentiment/zh --chars          # character 1-3-grams
    python scripts/tfidf_baseline.py data/sentiment/en                  # word 1-2-grams + character 2-5-grams

Reads ``train.tsv``, ``val.tsv`` and ``test.tsv`` (label<TAB>text) from the folder, chooses
the inverse regularisation C on val accuracy alone (the chosen model is the one fitted on
train; nothing is refitted on train + val), and scores test once with it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def read_tsv(path: Path) -> tuple[list[str], list[str]]:
    labels, texts = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, text = line.split("\t", 1)
            labels.append(label)
            texts.append(text)
    return labels, texts


def features(chars_only: bool):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion
    char = TfidfVectorizer(analyzer="char", ngram_range=(1, 3) if chars_only else (2, 5), sublinear_tf=True,
                           min_df=2)
    if chars_only:  # Chinese: no spaces between words, so characters and their short runs are the features
        return char
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True)
    return FeatureUnion([("word", word), ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                                                  sublinear_tf=True, min_df=2))])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="holds train.tsv, val.tsv, test.tsv")
    p.add_argument("--chars", action="store_true", help="character 1-3-grams only (Chinese)")
    args = p.parse_args(argv)
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    (y_train, x_train), (y_val, x_val), (y_test, x_test) = (read_tsv(args.folder / f"{s}.tsv")
                                                            for s in ("train", "val", "test"))
    vectoriser = features(args.chars)
    train, val = vectoriser.fit_transform(x_train), vectoriser.transform(x_val)
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000).fit(train, y_train)
        accuracy = (model.predict(val) == np.array(y_val)).mean()
        print(f"C={c:g}: val accuracy {100 * accuracy:.2f} %")
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    accuracy, c, model = best
    test = (model.predict(vectoriser.transform(x_test)) == np.array(y_test)).mean()
    print(f"chosen C={c:g} ({train.shape[1]:,} features): val {100 * accuracy:.2f} %, test {100 * test:.2f} %   "
          f"({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
