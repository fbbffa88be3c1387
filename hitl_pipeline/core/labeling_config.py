"""What a reviewer sees: the Label Studio labelling interface, generated from the schema.

The interface is a pure function of the schema's classes and of which features are free
text (``label_config``):

- on top, the model's label, its confidence, the model version and why the item was
  sent to a person (the ``summary`` text, written per task by the Label Studio adapter);
- each text feature as its own block, with the words that drove the model's label
  marked (``highlight_html``; hovering a mark shows its weight);
- the features as a table (the ``features`` object; a text feature shows there cut
  short);
- the classes as a single choice, and the optional ``edge case`` flag.

The controls and object names never change: earlier tasks and answers stay readable,
and Label Studio accepts the new interface on a project that already holds answers as
long as every class those answers used is still offered (adding a class is always
accepted).

The marked words are a linear model's own evidence (``linear_text_evidence``): for the
predicted class, each token's coefficient times its value in the item's TF-IDF vector,
the largest positive ones. Why marks in HTML rather than Label Studio span regions: a
pre-annotated region would travel into every answer that accepts the prediction, and
an answer would then carry a control that is not a class (``read_result`` treats it as
a problem); marks are part of the task's data and never of an answer.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

# Names inside the labelling interface. Stable: exports, predictions and simulated
# reviewers refer to them, and renaming one orphans earlier annotations.
FEATURES_OBJECT = "features"
LABEL_CONTROL = "label"
FLAGS_CONTROL = "flags"
EDGE_CASE_FLAG = "edge case"
SUMMARY_OBJECT = "summary"  # the text above the table: the model's guess and why review

TEXT_OBJECT_PREFIX = "text_"  # one HyperText object per text feature: text_<name>
HIGHLIGHT_PREFIX = "h_"  # task data key of a text feature's marked HTML: h_<name>
REASON_PREFIX = "reason_"  # task data key of one routing reason (true/false): reason_<code>
TABLE_TEXT_CHARS = 80  # a text feature in the feature table is cut to this many characters
MARK_STYLE = "background:#ffd666;border-radius:3px;padding:0 2px"


def text_object(feature: str) -> str:
    """The interface object showing text feature ``feature``."""
    return f"{TEXT_OBJECT_PREFIX}{feature}"


def highlight_column(feature: str) -> str:
    """The task data key holding text feature ``feature`` as marked HTML."""
    return f"{HIGHLIGHT_PREFIX}{feature}"


def reason_column(code: str) -> str:
    """The task data key (a Data Manager column) of one routing reason code."""
    return f"{REASON_PREFIX}{code}"


def label_config(classes: Sequence[str], *, text_features: Sequence[str] = ()) -> str:
    """The labelling interface for a schema's classes and text features.

    Args:
        classes: the class names, in display order (a new class is simply appended).
        text_features: the schema's text features, shown in full, with the model's
            evidence marked, above the feature table. Without any, the interface is
            exactly the tabular one earlier versions created.

    Returns:
        Label Studio XML with a single-choice ``label`` control and an optional
        ``flags`` control (``edge case``), both over the ``features`` table.

    Raises:
        ValueError: no class, a repeated class or text feature.
    """
    if not classes:
        raise ValueError("at least one class is needed: the schema's classes are empty")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate class names: {list(classes)}")
    if len(set(text_features)) != len(text_features):
        raise ValueError(f"duplicate text features: {list(text_features)}")
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    texts = "".join(
        f'  <Header value={quoteattr(f"{name} (marked: what drove the model)")} size="6"/>\n'
        f"  <HyperText name={quoteattr(text_object(name))} "
        f'value="${highlight_column(name)}" inline="true"/>\n'
        for name in text_features
    )
    return f"""<View>
  <Text name="{SUMMARY_OBJECT}" value="$context"/>
{texts}  <Header value="Features" size="6"/>
  <Table name="{FEATURES_OBJECT}" value="$features"/>
  <Header value="Correct class" size="6"/>
  <Choices name="{LABEL_CONTROL}" toName="{FEATURES_OBJECT}" choice="single-radio"
           required="true" showInline="true">
{choices}
  </Choices>
  <Header value="Flags (optional)" size="6"/>
  <Choices name="{FLAGS_CONTROL}" toName="{FEATURES_OBJECT}" choice="multiple" showInline="true">
    <Choice value={quoteattr(EDGE_CASE_FLAG)}/>
  </Choices>
</View>"""


def short_text(text: str, limit: int = TABLE_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters at a word boundary, with an ellipsis."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if flat[limit - 1] != " " and " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]  # not in the middle of a word
    return cut.rstrip() + "…"


def highlight_html(text: str, evidence: Sequence[tuple[str, float]], *, label: str = "") -> str:
    """``text`` as HTML, every occurrence of an evidence token marked.

    Args:
        text: the raw text (escaped here: a post can hold ``<``).
        evidence: ``(token, weight)`` pairs (``linear_text_evidence``); a token is
            matched case-insensitively as a whole word (so ``mid`` does not mark
            ``midnight``), and inside words only when it occurs nowhere as a whole word
            (character n-grams).
        label: the class the weights speak for, named in each mark's hover text.

    Returns:
        Escaped text with ``<mark>`` elements (weights in their ``title``); overlapping
        matches are merged into one mark naming every token.
    """
    text = str(text)
    spans: list[tuple[int, int, str]] = []
    for token, weight in evidence:
        token = str(token)
        if not token.strip():
            continue
        anywhere = re.escape(token)
        whole = (r"(?<!\w)" if re.match(r"\w", token) else "") + anywhere
        whole += r"(?!\w)" if re.search(r"\w$", token) else ""
        found = list(re.finditer(whole, text, re.IGNORECASE))
        found = found or list(re.finditer(anywhere, text, re.IGNORECASE))
        note = f"{token} {weight:+.2f}"
        spans += [(m.start(), m.end(), note) for m in found]
    merged: list[tuple[int, int, list[str]]] = []
    for start, end, note in sorted(spans):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            notes = last[2] if note in last[2] else [*last[2], note]
            merged[-1] = (last[0], max(last[1], end), notes)
        else:
            merged.append((start, end, [note]))
    toward = f" toward {label}" if label else ""
    out, at = [], 0
    for start, end, notes in merged:
        out.append(html.escape(text[at:start]))
        title = html.escape("; ".join(notes) + toward, quote=True)
        body = html.escape(text[start:end])
        out.append(f'<mark style="{MARK_STYLE}" title="{title}">{body}</mark>')
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


def linear_text_evidence(
    model: Any,
    frame: pd.DataFrame,
    text_features: Sequence[str],
    *,
    top: int = 5,
) -> list[dict[str, list[tuple[str, float]]]]:
    """The tokens that pushed a linear text model toward its predicted class, per row.

    Recognises a scikit-learn ``Pipeline`` whose last step is a linear classifier
    (``coef_``) after a ``ColumnTransformer`` in which a text feature has a vectoriser of
    its own (a fitted ``vocabulary_``, e.g. TF-IDF, alone or last in a pipeline).
    Each token's contribution to the predicted class is its coefficient times its value
    in the row's vector (for two classes, the coefficient's sign is the second class's).

    Args:
        model: the fitted model that made the predictions.
        frame: the rows, with the model's input columns.
        text_features: the schema's text features.
        top: at most this many tokens per row and feature, the largest first.

    Returns:
        One dict per row of ``frame`` (in order): text feature -> ``(token, weight)``
        with positive weights only. Every dict is empty when the model is not of that
        shape (a tree ensemble has no per-token weights to show).
    """
    empty: list[dict[str, list[tuple[str, float]]]] = [{} for _ in range(len(frame))]
    found = _linear_parts(model, text_features)
    if found is None or frame.empty:
        return empty
    preprocess, classifier, blocks = found
    matrix = preprocess.transform(frame)
    coef = np.asarray(classifier.coef_, dtype="float64")
    proba = np.asarray(model.predict_proba(frame), dtype="float64")
    predicted = proba.argmax(axis=1)
    if coef.shape[0] == 1:  # binary: one row of weights, for the second class
        coef = np.vstack([-coef[0], coef[0]])
    out = empty
    for feature, (columns, tokens) in blocks.items():
        block = matrix[:, columns]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        weights = block * coef[predicted][:, columns]
        for row in range(len(frame)):
            order = np.argsort(-weights[row])[:top]
            picked = [
                (str(tokens[j]), float(weights[row, j])) for j in order if weights[row, j] > 0
            ]
            if picked:
                out[row][feature] = picked
    return out


def _linear_parts(
    model: Any, text_features: Sequence[str]
) -> tuple[Any, Any, dict[str, tuple[slice, np.ndarray]]] | None:
    """The preprocessing, the linear classifier and each text feature's output columns."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or not text_features:
        return None
    classifier = model.steps[-1][1]
    if not hasattr(classifier, "coef_"):
        return None
    preprocess = model[:-1]
    transformers = [s for _, s in preprocess.steps if isinstance(s, ColumnTransformer)]
    if len(transformers) != 1 or len(preprocess.steps) != 1:
        return None  # steps after the column transformer would move its columns
    columns = transformers[0]
    blocks: dict[str, tuple[slice, np.ndarray]] = {}
    for name, transformer, selected in columns.transformers_:
        feature = selected if isinstance(selected, str) else None
        if isinstance(selected, list | tuple) and len(selected) == 1:
            feature = str(selected[0])
        # a vectoriser may sit at the end of a pipeline (documents -> TF-IDF): its own
        # names are the tokens, whatever the steps before it do
        vectorizer = transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer
        if feature is None or feature not in text_features:
            continue
        if not hasattr(vectorizer, "vocabulary_"):
            continue
        where = columns.output_indices_.get(name)
        if where is None or where.stop - where.start == 0:
            continue
        tokens = np.asarray(vectorizer.get_feature_names_out(), dtype=object)
        if len(tokens) != where.stop - where.start:
            continue
        blocks[feature] = (where, tokens)
    return (preprocess, classifier, blocks) if blocks else None


def reason_flags(reasons: Sequence[str], known: Sequence[str]) -> dict[str, bool]:
    """One true/false Data Manager column per reason: every ``known`` code, and any other
    code the item carries.

    Args:
        reasons: the item's routing reason codes.
        known: the codes every task gets a column for (so each column exists on every
            task and filters cleanly).

    Returns:
        ``reason_<code>`` -> whether the item was routed for it, known codes first.
    """
    present = {str(r) for r in reasons if r}
    codes = [*known, *sorted(present - set(known))]
    return {reason_column(code): code in present for code in codes}


def schema_text_features(feature_kinds: Mapping[str, str] | None) -> list[str]:
    """The text features among ``feature_kinds`` (name -> kind), in their order."""
    return [name for name, kind in (feature_kinds or {}).items() if kind == "text"]
