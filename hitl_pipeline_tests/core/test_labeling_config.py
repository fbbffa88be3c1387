"""The labelling interface generated from the schema, and the model evidence it marks."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from hitl_pipeline.core.labeling_config import (
    FEATURES_OBJECT,
    FLAGS_CONTROL,
    LABEL_CONTROL,
    highlight_html,
    label_config,
    linear_text_evidence,
    reason_flags,
    short_text,
)

MARK = '<mark style="background:#ffd666;border-radius:3px;padding:0 2px"'


@pytest.mark.parametrize(
    ("classes", "texts", "objects", "hypertexts"),
    [
        # tabular: exactly the interface earlier versions made
        (("a", "b"), (), ["summary", "features", "label", "flags"], {}),
        # one text feature: its own block between the summary and the table
        (
            ("ok", "toxic", "spam", "threat"),
            ("text",),
            ["summary", "text_text", "features", "label", "flags"],
            {"text_text": "$h_text"},
        ),
        # two text features, a new class appended, a class needing escaping
        (
            ("ok", "spam & co", "scam"),
            ("title", "body"),
            ["summary", "text_title", "text_body", "features", "label", "flags"],
            {"text_title": "$h_title", "text_body": "$h_body"},
        ),
    ],
)
def test_generated_interface(classes, texts, objects, hypertexts):
    root = ET.fromstring(label_config(classes, text_features=texts))

    assert [el.get("name") for el in root if el.get("name")] == objects
    assert {h.get("name"): h.get("value") for h in root.iter("HyperText")} == hypertexts
    assert all(h.get("inline") == "true" for h in root.iter("HyperText"))
    controls = {c.get("name"): c for c in root.iter("Choices")}
    assert all(c.get("toName") == FEATURES_OBJECT for c in controls.values())
    assert [c.get("value") for c in controls[LABEL_CONTROL].iter("Choice")] == list(classes)
    assert [c.get("value") for c in controls[FLAGS_CONTROL].iter("Choice")] == ["edge case"]
    (summary,) = root.iter("Text")
    assert summary.get("value") == "$context"


@pytest.mark.parametrize(
    ("classes", "texts", "message"),
    [
        ((), (), "at least one class is needed: the schema's classes are empty"),
        (("a", "a"), (), "duplicate class names"),
        (("a",), ("text", "text"), "duplicate text features"),
    ],
)
def test_bad_interfaces_are_refused_with_what_is_wrong(classes, texts, message):
    with pytest.raises(ValueError, match=message):
        label_config(classes, text_features=texts)


@pytest.mark.parametrize(
    ("text", "evidence", "html"),
    [
        ("no evidence here", [], "no evidence here"),
        # whole words only: "mid" does not mark "midnight"
        (
            "mid take at midnight",
            [("mid", 0.5)],
            f'{MARK} title="mid +0.50 toward toxic">mid</mark> take at midnight',
        ),
        # case-insensitive, every occurrence, the text itself escaped
        (
            "Free <b>free</b>",
            [("free", 1.25)],
            f'{MARK} title="free +1.25 toward toxic">Free</mark> &lt;b&gt;'
            f'{MARK} title="free +1.25 toward toxic">free</mark>&lt;/b&gt;',
        ),
        # an n-gram and its word overlap: one mark naming both
        (
            "watch your back now",
            [("watch your", 0.8), ("your", 0.3)],
            f'{MARK} title="watch your +0.80; your +0.30 toward toxic">watch your</mark> back now',
        ),
        # a token that is not a word (char n-gram, spelling) is matched inside words
        ("cl0wn", [("0w", 0.4)], f'cl{MARK} title="0w +0.40 toward toxic">0w</mark>n'),
        # a quote in a token cannot break out of the title attribute
        (
            'say "hi"',
            [('"hi"', 0.2)],
            f'say {MARK} title="&quot;hi&quot; +0.20 toward toxic">&quot;hi&quot;</mark>',
        ),
    ],
)
def test_highlight_html(text, evidence, html):
    assert highlight_html(text, evidence, label="toxic") == html


@pytest.mark.parametrize(
    ("text", "limit", "short"),
    [
        ("short post", 80, "short post"),
        ("a  b\n c", 80, "a b c"),
        ("one two three four five six", 14, "one two three…"),
        ("x" * 30, 10, "x" * 9 + "…"),
    ],
)
def test_short_text(text, limit, short):
    assert short_text(text, limit) == short


@pytest.mark.parametrize(
    ("reasons", "flags"),
    [
        (("low_confidence",), {"reason_low_confidence": True, "reason_audit": False}),
        (("audit", "audit"), {"reason_low_confidence": False, "reason_audit": True}),
        # a code not known in advance still gets its column
        (
            ("brand_new",),
            {"reason_low_confidence": False, "reason_audit": False, "reason_brand_new": True},
        ),
        ((), {"reason_low_confidence": False, "reason_audit": False}),
    ],
)
def test_reason_flags(reasons, flags):
    assert reason_flags(reasons, ("low_confidence", "audit")) == flags


POSTS = pd.DataFrame(
    {
        "text": [
            "free offer click",
            "great match",
            "free cheap offer",
            "you clown go away",
            "nice match today",
            "clown take go away",
        ]
        * 5,
        "channel": ["comments", "forum", "comments", "chat", "forum", "chat"] * 5,
    }
)
LABELS = ["spam", "ok", "spam", "toxic", "ok", "toxic"] * 5


def _linear(columns: ColumnTransformer) -> Pipeline:
    model = Pipeline([("preprocess", columns), ("classifier", LogisticRegression(max_iter=500))])
    with threadpool_limits(1):
        return model.fit(POSTS, LABELS)


def test_evidence_of_a_linear_text_model_is_its_own_tokens_for_the_predicted_class():
    model = _linear(
        ColumnTransformer(
            [
                ("words", TfidfVectorizer(), "text"),
                ("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
            ]
        )
    )
    rows = pd.DataFrame({"text": ["clown offer", "great match"], "channel": ["chat", "forum"]})

    with threadpool_limits(1):
        evidence = linear_text_evidence(model, rows, ["text"], top=2)
        predicted = model.predict(rows)

    assert list(predicted) == ["toxic", "ok"]
    assert [t for t, _ in evidence[0]["text"]] == ["clown"]  # "offer" speaks for spam
    assert {t for t, _ in evidence[1]["text"]} == {"great", "match"}
    assert all(w > 0 for e in evidence for _, w in e["text"])
    # the weight is coefficient x tf-idf of the predicted class
    vector = model[:-1].transform(rows.iloc[[0]])
    classifier = model[-1]
    k = list(classifier.classes_).index("toxic")
    vocab = model[0].named_transformers_["words"].vocabulary_
    assert evidence[0]["text"][0][1] == pytest.approx(
        vector[0, vocab["clown"]] * classifier.coef_[k, vocab["clown"]]
    )


def test_binary_models_speak_for_either_class():
    model = Pipeline(
        [
            ("preprocess", ColumnTransformer([("words", TfidfVectorizer(), "text")])),
            ("classifier", LogisticRegression(max_iter=500)),
        ]
    )
    binary = ["spam" if label == "spam" else "ok" for label in LABELS]
    with threadpool_limits(1):
        model.fit(POSTS, binary)
        evidence = linear_text_evidence(
            model, pd.DataFrame({"text": ["free offer", "great match"]}), ["text"], top=1
        )
    assert evidence[0]["text"][0][0] in {"free", "offer"}
    assert evidence[1]["text"][0][0] in {"great", "match"}


def test_models_without_per_token_weights_show_no_evidence():
    forest = Pipeline(
        [
            ("preprocess", ColumnTransformer([("words", TfidfVectorizer(), "text")])),
            ("classifier", RandomForestClassifier(n_estimators=5, random_state=0, n_jobs=1)),
        ]
    )
    with threadpool_limits(1):
        forest.fit(POSTS, LABELS)
    rows = POSTS.head(2)
    assert linear_text_evidence(forest, rows, ["text"]) == [{}, {}]
    assert linear_text_evidence(
        _linear(ColumnTransformer([("words", TfidfVectorizer(), "text")])), rows, []
    ) == [{}, {}]


def test_evidence_of_the_pipelines_own_text_model_on_the_moderation_stream():
    from hitl_pipeline.core.training import TrainingParams, train_model
    from hitl_pipeline.demo.stream import MODERATION_SCHEMA, ModerationStream

    stream = ModerationStream(seed_train_rows=400)
    train, _ = stream.seed_sets()
    with threadpool_limits(1):
        model = train_model(train, MODERATION_SCHEMA, TrainingParams()).model
        rows = pd.DataFrame(
            {"text": ["you are such a clown, get lost"], "channel": ["chat"], "links": [0.0]}
        )
        (evidence,) = linear_text_evidence(model, rows, MODERATION_SCHEMA.text_features, top=3)
        (predicted,) = model.predict(rows)
    assert predicted == "toxic"
    tokens = [t for t, _ in evidence["text"]]
    assert len(tokens) == 3 and any("clown" in t or "get lost" in t for t in tokens)
