"""Text columns as numbers: documents, TF-IDF, a dense representation, vocabulary shift.

A text column (``FeatureSpec.kind == "text"``) is free text: a post, a comment. The
classifier reads it as a TF-IDF bag of words and n-grams (``text_vectorizer``); routing
needs distances and isolation, which mean little in a sparse space of tens of thousands
of dimensions, so it reads a dense ``TextRepresentation`` instead: TF-IDF reduced with a
truncated SVD (latent semantic analysis), fitted on the reference rows, and apart from
it two measures of how unfamiliar a document's words are: the share the reference never
used, and their mean surprisal. Unseen words are the most direct sign of a new topic or
a new slang: a post made only of them has an all-zero TF-IDF vector, which an SVD alone
would place at the origin, among the empty posts.

The surprisal of a word is ``log((n + a) / (df + a))``, with ``df`` the reference
documents that use it among ``n`` and ``a`` a pseudo-count (``smoothing``): a word every
post uses costs nothing, a rare one a lot, an unseen one most (``log((n + a) / a)``), and
a document's score is the mean over its distinct words. Unlike the unseen share, it is
graded among the reference rows too (their words are more or less common), so a new row
can be ranked among them: one slang word in an otherwise ordinary post raises it a
little, a post of unseen words a lot.

Everything here is plain scikit-learn plus module-level functions, so fitted objects
pickle by reference to this module.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

# A value is "free text" for schema inference when typical values are long or made of
# several words, and many values are different: a categorical column repeats a few
# short levels. (Posts repeat too: in the moderation demo stream 28% are distinct.)
_TEXT_MIN_MEDIAN_CHARS = 25
_TEXT_MIN_MEDIAN_WORDS = 4
_TEXT_MIN_UNIQUE_SHARE = 0.3
_TEXT_MIN_DISTINCT = 50


def to_documents(x: Any) -> np.ndarray:
    """One document per row: a 1-D array of ``str``, missing values as "".

    Accepts what a ``ColumnTransformer`` hands a text step: a one-column frame, a
    series or an array (1-D, or 2-D with one column).

    Args:
        x: The column.

    Returns:
        A 1-D object array of strings.
    """
    if isinstance(x, pd.DataFrame):
        x = x.iloc[:, 0]
    values = np.asarray(x, dtype=object)
    if values.ndim == 2:
        values = values[:, 0]
    return np.asarray(
        ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values],
        dtype=object,
    )


def text_vectorizer(
    *, max_features: int | None = 20_000, ngram_max: int = 2, min_df: int = 1
) -> Pipeline:
    """An unfitted documents -> TF-IDF pipeline for one text column.

    Args:
        max_features: Keep the most frequent terms only (None: all).
        ngram_max: Longest word n-gram (1: single words; 2 adds word pairs, which catch
            phrases such as "click here").
        min_df: Ignore terms in fewer documents than this.

    Returns:
        ``Pipeline(documents, tfidf)`` producing a sparse matrix.
    """
    return Pipeline(
        [
            ("documents", FunctionTransformer(to_documents, validate=False)),
            (
                "tfidf",
                TfidfVectorizer(
                    max_features=max_features,
                    ngram_range=(1, max(1, ngram_max)),
                    min_df=min_df,
                    sublinear_tf=True,
                    strip_accents="unicode",
                ),
            ),
        ]
    )


def oov_share(documents: Sequence[str], vocabulary: Collection[str]) -> np.ndarray:
    """Per document, the share of its words that are not in ``vocabulary``.

    Args:
        documents: The texts.
        vocabulary: Words of the reference.

    Returns:
        One float in [0, 1] per document; 0 for a document without words.
    """
    analyze = TfidfVectorizer(strip_accents="unicode").build_analyzer()
    out = np.zeros(len(documents), dtype="float64")
    for i, document in enumerate(documents):
        words = analyze(document)
        if words:
            out[i] = sum(w not in vocabulary for w in words) / len(words)
    return out


def mean_surprisal(
    words: Sequence[Collection[str]],
    frequency: Mapping[str, int],
    rows: int,
    *,
    smoothing: float = 1.0,
    leave_one_out: bool = False,
) -> np.ndarray:
    """Per document, the mean surprisal ``log((n + a) / (df + a))`` of its distinct words.

    Args:
        words: Each document's words (as the TF-IDF step splits them).
        frequency: Reference documents using each word (``df``).
        rows: Reference documents (``n``).
        smoothing: Pseudo-count ``a`` (> 0): an unseen word costs ``log((n + a) / a)``.
        leave_one_out: The documents are the reference rows themselves: each is counted
            out of ``n`` and of its words' ``df`` (a word only it uses counts as unseen).

    Returns:
        One float >= 0 per document; 0 for a document without words.
    """
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0, got {smoothing}")
    own = 1 if leave_one_out else 0
    total = math.log(rows - own + smoothing)
    out = np.zeros(len(words), dtype="float64")
    for i, found in enumerate(words):
        distinct = set(found)
        if distinct:
            # plain floats: a post has a few words, where numpy's per-call cost dominates
            logs = sum(math.log(frequency.get(w, 0) - own + smoothing) for w in distinct)
            out[i] = total - logs / len(distinct)
    return out


def vocabulary_of(documents: Sequence[str]) -> frozenset[str]:
    """Every word used in the documents (as the TF-IDF step splits them)."""
    analyze = TfidfVectorizer(strip_accents="unicode").build_analyzer()
    return frozenset(w for document in documents for w in analyze(document))


class TextRepresentation(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Dense representation of text columns (TF-IDF -> truncated SVD per column) and
    how unfamiliar each document's words are to the reference.

    Fitted on reference rows (the training data); each component is scaled to unit
    variance on them, so a text column weighs like a few standardised numeric ones in a
    distance. ``oov`` gives the unseen-word shares and ``surprisal`` the mean word
    surprisal (``mean_surprisal``); ``reference_oov_`` and ``reference_surprisal_`` hold
    the same for the reference rows themselves, counted leave-one-out (a word only that
    row uses counts as unseen), so a new row can be ranked among them as if it had been
    one of them.

    Args:
        columns: The text columns.
        n_components: SVD components per column (fewer when the vocabulary is smaller).
        max_features: Vocabulary size of the TF-IDF.
        seed: Random state of the SVD.
        smoothing: Pseudo-count of the word surprisal (``mean_surprisal``).
    """

    def __init__(
        self,
        columns: Sequence[str] = (),
        *,
        n_components: int = 20,
        max_features: int = 20_000,
        seed: int = 0,
        smoothing: float = 1.0,
    ) -> None:
        self.columns = columns
        self.n_components = n_components
        self.max_features = max_features
        self.seed = seed
        self.smoothing = smoothing

    def fit(self, x: pd.DataFrame, y: Any = None) -> TextRepresentation:
        """Fit each column's TF-IDF, SVD and vocabulary on the reference rows."""
        analyze = TfidfVectorizer(strip_accents="unicode").build_analyzer()
        self.parts_: list[tuple[str, Any, Any, np.ndarray]] = []
        self.vocabularies_: list[dict[str, int]] = []
        loo: list[np.ndarray] = []
        surprisal: list[np.ndarray] = []
        self.reference_rows_ = len(x)
        for column in self.columns:
            documents = to_documents(x[column])
            words = [analyze(d) for d in documents]
            frequency: dict[str, int] = {}
            for found in words:
                for word in set(found):
                    frequency[word] = frequency.get(word, 0) + 1
            self.vocabularies_.append(frequency)
            loo.append(
                np.asarray(
                    [sum(frequency[w] == 1 for w in f) / len(f) if f else 0.0 for f in words]
                )
            )
            surprisal.append(
                mean_surprisal(
                    words, frequency, len(x), smoothing=self.smoothing, leave_one_out=True
                )
            )
            tfidf = TfidfVectorizer(
                max_features=self.max_features, sublinear_tf=True, strip_accents="unicode"
            )
            try:
                matrix = tfidf.fit_transform(documents)
            except ValueError:  # no words at all: nothing to reduce
                self.parts_.append((column, None, None, np.ones(0)))
                continue
            k = min(self.n_components, matrix.shape[1] - 1, matrix.shape[0] - 1)
            if k < 1:
                self.parts_.append((column, None, None, np.ones(0)))
                continue
            svd = TruncatedSVD(n_components=k, random_state=self.seed)
            scale = svd.fit_transform(matrix).std(axis=0)
            scale[scale == 0] = 1.0
            self.parts_.append((column, tfidf, svd, scale))
        empty = np.zeros((len(x), 0), dtype="float64")
        self.reference_oov_ = np.column_stack(loo) if loo else empty
        self.reference_surprisal_ = np.column_stack(surprisal) if surprisal else empty
        return self

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        """The dense representation of the rows: (rows, components of every column)."""
        blocks = [
            svd.transform(tfidf.transform(to_documents(x[column]))) / scale
            for column, tfidf, svd, scale in self.parts_
            if svd is not None
        ]
        if not blocks:
            return np.zeros((len(x), 0), dtype="float64")
        return np.hstack(blocks).astype("float64")

    def oov(self, x: pd.DataFrame) -> np.ndarray:
        """Per row and text column, the share of its words the reference never used."""
        shares = [
            oov_share(list(to_documents(x[column])), frequency.keys())
            for column, frequency in zip(self.columns, self.vocabularies_, strict=True)
        ]
        if not shares:
            return np.zeros((len(x), 0), dtype="float64")
        return np.column_stack(shares)

    def surprisal(self, x: pd.DataFrame) -> np.ndarray:
        """Per row and text column, the mean surprisal of its words (``mean_surprisal``)."""
        analyze = TfidfVectorizer(strip_accents="unicode").build_analyzer()
        values = [
            mean_surprisal(
                [analyze(d) for d in to_documents(x[column])],
                frequency,
                self.reference_rows_,
                smoothing=self.smoothing,
            )
            for column, frequency in zip(self.columns, self.vocabularies_, strict=True)
        ]
        if not values:
            return np.zeros((len(x), 0), dtype="float64")
        return np.column_stack(values)


def looks_like_text(values: pd.Series) -> bool:
    """Whether a column holds free text rather than categories (for schema inference).

    Free text: string values whose median is at least 25 characters or 4 words, with
    more than 50 distinct values or at least 30% of them distinct.

    Args:
        values: The column.

    Returns:
        True for free text.
    """
    present = values.dropna()
    present = present[present.map(lambda v: isinstance(v, str))]
    if present.empty or len(present) < len(values.dropna()) * 0.9:
        return False
    lengths = present.str.len()
    words = present.str.split().map(len)
    long_enough = (
        lengths.median() >= _TEXT_MIN_MEDIAN_CHARS or words.median() >= _TEXT_MIN_MEDIAN_WORDS
    )
    distinct = present.nunique()
    varied = distinct > _TEXT_MIN_DISTINCT or distinct / len(present) >= _TEXT_MIN_UNIQUE_SHARE
    return bool(long_enough and varied)
