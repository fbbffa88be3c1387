"""Data, prediction and confidence drift with Evidently's current (0.7) API.

One Evidently ``Report`` per call: a ``DataDriftPreset`` over the schema's features plus
a ``ValueDrift`` for ``predicted_label`` and one for ``confidence`` when scores are
given, so the people reading the HTML see all of it on one page. The verdict per column
is the outcome of Evidently's own per-column method at the ``DriftPolicy``'s threshold;
the dataset verdict is "drifted share of features >= drift_share", as Evidently's preset
defines it.

The alarm must fire on a material shift, not on sample size. Evidently's automatic
choice is a p-value test (KS, chi-square) up to 1,000 reference rows: on a batch of a
few thousand rows every column is "significant", however little it moved. The policy
instead fixes effect sizes whose meaning does not depend on how many rows were drawn:
the Wasserstein distance in reference standard deviations for numeric columns and the
Jensen-Shannon distance for categorical ones (see ``DriftPolicy`` for the figures).

Where the policy leaves a method to Evidently's automatic choice (``None``), two of its
choices are not robust enough, and what we do:

- With a reference of at most 1,000 rows Evidently picks a chi-square *goodness-of-fit*
  test for a categorical column, with the reference proportions as expected counts. A
  category unseen in the reference then has an expected count of 0, the statistic is
  infinite and a single new value flags the column whatever the rest looks like. We
  register (once, on first use) a chi-square test of *homogeneity* of the two samples,
  which treats both as samples and handles a new category as evidence in proportion to
  how often it appears.
- A column with no value at all on one side makes Evidently raise. Such a column is
  left out of the report and judged here: values present on one side only is drift
  (the column became or stopped being empty), empty on both sides is not.

Text columns (``kind="text"``) are in the same report and the same verdict, judged
three ways, any of which drifts the column: Evidently's text-content drift (a domain
classifier told to separate reference from current posts; its ROC AUC is the score),
and two text descriptors compared like numeric columns, ``<column>: length``
(Evidently's ``TextLength``) and ``<column>: unseen words``, the share of a post's
words the reference never used. Evidently's own out-of-vocabulary descriptor measures
against NLTK's English word list, which must be downloaded at run time and says nothing
about this stream's vocabulary; ours is a ``CustomColumnDescriptor`` against the
reference's own words, and on the reference side each post is counted leave-one-out (a
word only that post uses counts as unseen), so an undrifted batch scores like the
reference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hitl_pipeline.core.chunks import BottomK, bottom_k
from hitl_pipeline.core.datasets import stable_uniform
from hitl_pipeline.core.schema import canonical_text
from hitl_pipeline.core.text import TextRepresentation, oov_share
from hitl_pipeline.core.types import CONFIDENCE, PREDICTED_LABEL, BatchSchema, DriftSummary
from hitl_pipeline.internals import evidently_stattests

# Evidently switches from p-value tests to distances above this many reference rows
# (legacy/calculations/stattests/registry.py, _get_default_stattest).
SMALL_SAMPLE_ROWS = 1000
HOMOGENEITY_TEST = "chisquare_homogeneity"
HOMOGENEITY_DISPLAY_NAME = "chi-square homogeneity p_value"
_NO_VALUES = "no values on one side"
# names of the text descriptor columns of a text column
LENGTH_SUFFIX = ": length"
UNSEEN_SUFFIX = ": unseen words"
_DRIFT_STATUSES = {"FAIL", "WARNING"}


@dataclass(frozen=True)
class DriftPolicy:
    """How a column is judged drifted, and how many drifted columns make dataset drift.

    Methods are Evidently stattest names (``"wasserstein"``, ``"jensenshannon"``,
    ``"psi"``, ``"ks"``, ...); ``None`` leaves the choice to Evidently (size-dependent: a
    p-value test up to 1,000 reference rows). A threshold of ``None`` is the method's
    own default. The score columns (``confidence``, ``predicted_label``) are judged by
    the same numeric and categorical rules; they never count towards ``drift_share``.
    A distance measured on a handful of rows is mostly noise, so a column with fewer
    than ``distance_min_rows`` current values is judged by a p-value test instead (KS,
    chi-square homogeneity at 0.05), which stays quiet on small samples.

    The defaults, and what they were measured on (``rainfall``: NOAA daily weather, 8
    numeric features, reference = 1,600 seed training days, batches of 1,000 days; the
    demo stream: 2,000 reference rows, batches of 400, abrupt drift at batch 2):

    Attributes:
        num_method: ``"wasserstein"``: the Wasserstein distance divided by the
            reference's standard deviation, i.e. how far the distribution moved in
            reference standard deviations. It is an effect size: more rows make it more
            precise, not larger.
        num_threshold: 0.2, Cohen's "small" effect. Between two samples of one
            distribution it stayed at or below 0.10 (demo batches before the drift;
            seed training rows against their own held-out rows on both streams); the
            demo's drift moves spend, usage and satisfaction by 0.31 to 1.09. Evidently's
            default of 0.1 sits on that noise floor: seasonal wobble of rainfall's four
            temperature columns (0.10 to 0.16) tipped the dataset verdict over on most
            batches.
        cat_method: ``"jensenshannon"``: Jensen-Shannon distance of the category shares
            (a new category counts in proportion to its share, as it should).
        cat_threshold: 0.1, Evidently's default for this method. The demo's region and
            plan shares stay at or below 0.06 from batch to batch; the app channel going
            from 4% to 38% of customers scores 0.30 to 0.34.
        drift_share: 0.5, Evidently's default: the dataset drifts when at least half of
            the features do. With the thresholds above, rainfall's first ten batches
            have 3 of 8 columns drifted (visibility and the two wind-speed readings,
            which moved for good after the seed years; one alert, batch 1, where an
            outlier in sea-level pressure adds a fourth), its last six 5 of 8 (where
            the source's columns change meaning); the demo has 4 or 5 of 8 from batch 2
            on and 0 before.
        distance_min_rows: 100. Demo batches before the drift, 60 seeds per size: with
            distances alone 10 of 60 batches of 50 rows alarmed (59 of 60 of 20 rows),
            none of 100 rows or more (a column flagged in 7% of 100-row batches, under
            1% from 200 rows on).
        sample_rows: 50,000. A batch (or reference) larger than this is compared through
            a seeded sample of this many rows (the rows with the smallest keyed hash of
            their id, so the same rows whatever the chunking; ``drift_sample``): the
            distances are effect sizes, which a sample this large estimates to about
            0.01, and the report stays the same size for ten million rows. The summary's
            ``current_rows`` and ``reference_rows`` are the rows compared.
        text_method: How a text column's content is compared: Evidently's
            ``"abs_text_content_drift"``, the ROC AUC of a domain classifier (TF-IDF and
            a linear model) trained to tell reference from current posts on half of
            them, drift above ``text_threshold``; ``"perc_text_content_drift"`` compares
            the AUC with a random classifier's 95th percentile instead (a significance
            test, which sample size alone tips over); None: Evidently's choice (the
            percentile test up to 1,000 reference rows). Below ``distance_min_rows``
            current posts the percentile test is used, as for the other columns.
        text_threshold: 0.6 AUC (Evidently's default is 0.55). Synthetic posts (the
            tests' ``text_data``), 2,000 reference against 400 current, 20 seeds: the same
            distribution gave AUC 0.47 to 0.53, new words for the same classes 0.99 to
            1.0. The moderation demo stream (``hitl-pipeline demo-data moderation``, 2,000
            seed posts against batches of 400): 0.46 to 0.50 on batches 0, 3 and 5
            (before its new spellings), 0.96 to 0.98 on batches 6, 8 and 11.
        text_alarms: True: a drifted text column raises the dataset alarm on its own,
            whatever ``drift_share`` says. One text column stands for thousands of TF-IDF
            features and is most of what a text model reads: on the moderation stream
            the new spellings drift the text and nothing else (1 of 3 columns), and the
            model's accuracy falls with them.
    """

    num_method: str | None = "wasserstein"
    num_threshold: float | None = 0.2
    cat_method: str | None = "jensenshannon"
    cat_threshold: float | None = 0.1
    drift_share: float = 0.5
    distance_min_rows: int = 100
    sample_rows: int = 50_000
    text_method: str | None = "abs_text_content_drift"
    text_threshold: float | None = 0.6
    text_alarms: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        for name in ("num_threshold", "cat_threshold"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.text_threshold is not None and not 0.5 <= self.text_threshold <= 1.0:
            raise ValueError(f"text_threshold must be in [0.5, 1], got {self.text_threshold}")
        if self.distance_min_rows < 0:
            raise ValueError(f"distance_min_rows must be >= 0, got {self.distance_min_rows}")
        if self.sample_rows < 1:
            raise ValueError(f"sample_rows must be >= 1, got {self.sample_rows}")

    @classmethod
    def evidently_defaults(cls) -> DriftPolicy:
        """Evidently's own automatic choices (the behaviour before this policy existed)."""
        return cls(
            num_method=None,
            num_threshold=None,
            cat_method=None,
            cat_threshold=None,
            text_method=None,
            text_threshold=None,
        )


SAMPLE_KEY = "drift-sample"


def drift_columns(schema: BatchSchema) -> list[str]:
    """The columns of a predictions file that drift reads: id, features, label, confidence."""
    return [schema.id_column, *schema.feature_names, PREDICTED_LABEL, CONFIDENCE]


def drift_sample(
    chunks: Iterable[pd.DataFrame], sample_rows: int, *, id_column: str
) -> tuple[pd.DataFrame, int]:
    """A seeded sample of at most ``sample_rows`` rows of a batch that comes in chunks.

    The rows with the smallest keyed hash of their id (``core.datasets.stable_uniform``),
    in their original order: every row when there are at most ``sample_rows``, and the
    same rows however the batch is chunked.

    Returns:
        ``(sample, rows seen)``.
    """
    keeper = BottomK(sample_rows)
    for chunk in chunks:
        ids = chunk[id_column].astype(str)
        keeper.add(chunk, stable_uniform(ids, SAMPLE_KEY), ids.to_numpy())
    return keeper.frame(), keeper.rows_seen


def _chi2_homogeneity(
    reference: pd.Series, current: pd.Series, feature_type: Any, threshold: float
) -> tuple[float, bool]:
    """p-value of a chi-square test that both samples come from one distribution."""
    from scipy.stats import chi2_contingency

    counts = pd.concat(
        [reference.value_counts(), current.value_counts()], axis=1, sort=True
    ).fillna(0)
    table = counts.to_numpy(dtype="float64").T
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0, False  # one category on both sides: nothing can have moved
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    return p_value, p_value < threshold


def _register_homogeneity_test() -> None:
    """Add our test to Evidently's registry; idempotent, done on first use, not import."""
    stat_test, register_stattest, registered, column_type = evidently_stattests()
    if HOMOGENEITY_TEST in registered:
        return
    register_stattest(
        stat_test(
            name=HOMOGENEITY_TEST,
            display_name=HOMOGENEITY_DISPLAY_NAME,
            allowed_feature_types=[column_type.Categorical],
            default_threshold=0.05,
        ),
        default_impl=_chi2_homogeneity,
    )


def _prepare(frame: pd.DataFrame, schema: BatchSchema, name: str) -> pd.DataFrame:
    missing = [c for c in schema.feature_names if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks feature column(s): {', '.join(missing)}")
    out = pd.DataFrame(index=range(len(frame)))
    for spec in schema.features:
        column = frame[spec.name].reset_index(drop=True)
        if spec.kind == "numeric":
            out[spec.name] = pd.to_numeric(column, errors="coerce").astype("float64")
        else:
            out[spec.name] = column.map(canonical_text).astype(object)
    return out


def _scores_part(scores: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (PREDICTED_LABEL, CONFIDENCE) if c not in scores.columns]
    if missing:
        raise ValueError(f"scores frame lacks column(s): {', '.join(missing)}")
    return pd.DataFrame(
        {
            PREDICTED_LABEL: scores[PREDICTED_LABEL].map(canonical_text).astype(object),
            CONFIDENCE: pd.to_numeric(scores[CONFIDENCE], errors="coerce").astype("float64"),
        }
    ).reset_index(drop=True)


def _side_by_side(features: pd.DataFrame, scores: pd.DataFrame | None) -> pd.DataFrame:
    # Scores and features may differ in length (a sample of the training data was
    # scored, say); drift is a comparison of distributions, so the shorter side is
    # padded with nulls, which Evidently drops column by column before testing.
    if scores is None:
        return features
    return pd.concat([features, scores], axis=1)


def _column_verdicts(snapshot_dict: dict[str, Any]) -> dict[str, tuple[float, str, bool]]:
    """column -> (score, method, drifted) from the Evidently snapshot's dict form."""
    metrics: dict[str, tuple[str, float, str]] = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        metrics[metric["id"]] = (config["column"], float(metric["value"]), config.get("method"))
    verdicts: dict[str, tuple[float, str, bool]] = {}
    for test in snapshot_dict.get("tests", []):
        metric_id = test.get("metric_config", {}).get("metric_id")
        if metric_id not in metrics:
            continue
        column, score, method = metrics[metric_id]
        status = str(getattr(test["status"], "value", test["status"]))
        verdicts[column] = (score, _display_name(method), status in _DRIFT_STATUSES)
    return verdicts


def _display_name(method: str | None) -> str:
    """Evidently's display name ("K-S p_value") for a stattest named in the config
    ("ks"); its automatic choices are recorded by display name already."""
    by_type = evidently_stattests()[2].get(str(method))
    return next(iter(by_type.values())).display_name if by_type else str(method)


def _column_rules(
    policy: DriftPolicy,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    assessed: list[str],
    numeric: list[str],
    text: list[str] | None = None,
) -> tuple[dict[str, str], dict[str, float]]:
    """Method and threshold per column (absent: Evidently's own choice)."""
    methods: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    for column in assessed:
        if column in (text or ()):
            method, threshold = policy.text_method, policy.text_threshold
            if current[column].notna().sum() < policy.distance_min_rows:
                method, threshold = "perc_text_content_drift", None
            if method is not None:
                methods[column] = method
            if threshold is not None and method == policy.text_method:
                thresholds[column] = threshold
            continue
        is_numeric = column in numeric
        method = policy.num_method if is_numeric else policy.cat_method
        threshold = policy.num_threshold if is_numeric else policy.cat_threshold
        if method is not None and current[column].notna().sum() < policy.distance_min_rows:
            method, threshold = ("ks" if is_numeric else HOMOGENEITY_TEST), None
        small_reference = reference[column].notna().sum() <= SMALL_SAMPLE_ROWS
        if method is None and not is_numeric and small_reference:
            method = HOMOGENEITY_TEST
        if method is not None:
            methods[column] = method
        if threshold is not None:
            thresholds[column] = threshold
    return methods, thresholds


def _text_descriptors(
    reference: pd.DataFrame, text: list[str]
) -> tuple[list[Any], list[Any], list[str]]:
    """Evidently descriptors of the text columns for the reference and the current side,
    and the names of the columns they add.

    The length is Evidently's ``TextLength``; the share of unseen words is a custom
    descriptor against the reference's vocabulary, leave-one-out on the reference side.
    """
    from evidently import ColumnType
    from evidently.core.datasets import DatasetColumn
    from evidently.descriptors import CustomColumnDescriptor, TextLength

    fitted = TextRepresentation(text, n_components=1).fit(reference)
    ref_side: list[Any] = []
    cur_side: list[Any] = []
    names: list[str] = []
    for index, column in enumerate(text):
        vocabulary = fitted.vocabularies_[index].keys()
        reference_shares = fitted.reference_oov_[:, index]

        def on_reference(data: Any, shares: np.ndarray = reference_shares) -> Any:
            return DatasetColumn(
                type=ColumnType.Numerical,
                data=pd.Series(shares, index=data.data.index, dtype="float64"),
            )

        def on_current(data: Any, words: Any = vocabulary) -> Any:
            documents = ["" if v is None else str(v) for v in data.data.tolist()]
            return DatasetColumn(
                type=ColumnType.Numerical,
                data=pd.Series(oov_share(documents, words), index=data.data.index),
            )

        length, unseen = f"{column}{LENGTH_SUFFIX}", f"{column}{UNSEEN_SUFFIX}"
        ref_side += [
            TextLength(column, alias=length),
            CustomColumnDescriptor(column, on_reference, alias=unseen),
        ]
        cur_side += [
            TextLength(column, alias=length),
            CustomColumnDescriptor(column, on_current, alias=unseen),
        ]
        names += [length, unseen]
    return ref_side, cur_side, names


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: BatchSchema,
    *,
    reference_scores: pd.DataFrame | None = None,
    current_scores: pd.DataFrame | None = None,
    policy: DriftPolicy = DriftPolicy(),
) -> tuple[DriftSummary, str]:
    """Compare the current batch with the reference (the champion's training data).

    Args:
        reference: Reference rows with the schema's features.
        current: Current rows with the schema's features.
        schema: The declared schema (which features are numeric, categorical or text).
        reference_scores: The champion's scores of reference rows
            (``core.inference.score_batch`` output); with ``current_scores`` it enables
            prediction drift (``predicted_label``) and confidence drift (``confidence``).
            Prefer rows the champion was not fitted on (its holdout): scored in-sample,
            a model is more confident than it will ever be in production, and on the
            demo stream that alone raised a confidence-drift alarm on the first,
            undrifted batch.
        current_scores: The champion's scores of the current rows.
        policy: Methods and thresholds per column type, and the share of drifted
            features that makes dataset drift.

    Returns:
        ``(summary, html)``: the ``DriftSummary`` (``drift_share`` and
        ``drifted_columns`` cover the features only, a text column drifted when its
        content or one of its descriptors did; ``column_scores`` and ``column_methods``
        also hold ``predicted_label`` and ``confidence`` when scores were given, and
        ``<text column>: length`` / ``: unseen words``; a score is NaN for a column
        judged on emptiness alone) and the self-contained HTML report.

    Raises:
        ValueError: When either frame has no rows or lacks a feature.
    """
    if len(reference) == 0 or len(current) == 0:
        raise ValueError(
            f"drift needs rows on both sides (reference {len(reference)}, current {len(current)})"
        )
    reference, reference_scores = _sampled(reference, reference_scores, schema, policy)
    current, current_scores = _sampled(current, current_scores, schema, policy)
    # importing Evidently takes 10+ s; only the callers that compute drift pay for it
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    _register_homogeneity_test()
    ref = _prepare(reference, schema, "reference")
    cur = _prepare(current, schema, "current")
    with_scores = reference_scores is not None and current_scores is not None
    ref_scores = _scores_part(reference_scores) if with_scores else None
    cur_scores = _scores_part(current_scores) if with_scores else None
    clash = {PREDICTED_LABEL, CONFIDENCE} & set(schema.feature_names)
    if with_scores and clash:
        raise ValueError(f"feature name(s) clash with score columns: {', '.join(sorted(clash))}")
    ref_all = _side_by_side(ref, ref_scores)
    cur_all = _side_by_side(cur, cur_scores)

    numeric = list(schema.numeric_features)
    categorical = list(schema.categorical_features)
    text = list(schema.text_features)
    score_columns: list[str] = []
    if with_scores:
        numeric.append(CONFIDENCE)
        categorical.append(PREDICTED_LABEL)
        score_columns = [PREDICTED_LABEL, CONFIDENCE]

    # columns empty on one side never reach Evidently (it raises on them)
    judged_here: dict[str, bool] = {}
    assessed: list[str] = []
    for column in [*schema.feature_names, *score_columns]:
        ref_has = bool(ref_all[column].notna().any())
        cur_has = bool(cur_all[column].notna().any())
        if ref_has and cur_has:
            assessed.append(column)
        else:
            judged_here[column] = ref_has != cur_has
    assessed_text = [c for c in text if c in assessed]
    ref_descriptors: list[Any] = []
    cur_descriptors: list[Any] = []
    descriptor_columns: list[str] = []
    if assessed_text:
        ref_descriptors, cur_descriptors, descriptor_columns = _text_descriptors(
            ref_all, assessed_text
        )
    methods, thresholds = _column_rules(policy, ref_all, cur_all, assessed, numeric, assessed_text)
    # the descriptors are numbers, judged by the numeric rule on as many rows as their
    # text column has values
    for name in descriptor_columns:
        present = int(cur_all[name.rsplit(": ", 1)[0]].notna().sum())
        if policy.num_method is not None and present < policy.distance_min_rows:
            methods[name] = "ks"
        elif policy.num_method is not None:
            methods[name] = policy.num_method
            if policy.num_threshold is not None:
                thresholds[name] = policy.num_threshold

    metrics: list[Any] = []
    assessed_features = [c for c in assessed if c in schema.feature_names] + descriptor_columns
    if assessed_features:
        metrics.append(
            DataDriftPreset(
                columns=assessed_features,
                drift_share=policy.drift_share,
                per_column_method={c: m for c, m in methods.items() if c in assessed_features}
                or None,
                per_column_threshold={c: t for c, t in thresholds.items() if c in assessed_features}
                or None,
            )
        )
    metrics.extend(
        ValueDrift(column=column, method=methods.get(column), threshold=thresholds.get(column))
        for column in score_columns
        if column in assessed
    )

    definition = DataDefinition(
        numerical_columns=[c for c in numeric if c in assessed],
        categorical_columns=[c for c in categorical if c in assessed],
        text_columns=assessed_text or None,
    )
    verdicts: dict[str, tuple[float, str, bool]] = {}
    html = _empty_report_html()
    if metrics:
        columns = [c for c in ref_all.columns if c in assessed]
        with warnings.catch_warnings():
            # scipy and plotly warn on degenerate inputs (constant columns...) that the
            # tests handle; they would only flood the run log
            warnings.simplefilter("ignore")
            snapshot = Report(metrics, include_tests=True).run(
                Dataset.from_pandas(
                    cur_all[columns],
                    data_definition=definition,
                    descriptors=cur_descriptors or None,
                ),
                Dataset.from_pandas(
                    ref_all[columns],
                    data_definition=definition,
                    descriptors=ref_descriptors or None,
                ),
            )
            verdicts = _column_verdicts(snapshot.dict())
            html = snapshot.get_html_str(as_iframe=False)
    for column, drifted in judged_here.items():
        verdicts[column] = (math.nan, _NO_VALUES, drifted)

    for name in descriptor_columns:
        source = name.rsplit(": ", 1)[0]
        if name in verdicts and verdicts[name][2] and source in verdicts:
            score, method, _ = verdicts[source]
            verdicts[source] = (score, method, True)
    ordered = [
        c for c in [*schema.feature_names, *descriptor_columns, *score_columns] if c in verdicts
    ]
    drifted_features = tuple(c for c in schema.feature_names if verdicts[c][2])
    share = len(drifted_features) / len(schema.feature_names)
    text_drifted = policy.text_alarms and any(c in drifted_features for c in text)
    summary = DriftSummary(
        dataset_drift=bool(share >= policy.drift_share or text_drifted),
        drift_share=share,
        drift_share_threshold=policy.drift_share,
        drifted_columns=drifted_features,
        column_scores={c: verdicts[c][0] for c in ordered},
        column_methods={c: verdicts[c][1] for c in ordered},
        prediction_drift=bool(verdicts.get(PREDICTED_LABEL, (0.0, "", False))[2]),
        confidence_drift=bool(verdicts.get(CONFIDENCE, (0.0, "", False))[2]),
        reference_rows=len(reference),
        current_rows=len(current),
    )
    return summary, html


def _sampled(
    rows: pd.DataFrame, scores: pd.DataFrame | None, schema: BatchSchema, policy: DriftPolicy
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``rows`` (and their ``scores``, when aligned with them) cut to ``sample_rows``."""
    if len(rows) <= policy.sample_rows or schema.id_column not in rows:
        return rows, scores
    rows = rows.reset_index(drop=True)
    ids = rows[schema.id_column].astype(str)
    keep = np.sort(bottom_k(stable_uniform(ids, SAMPLE_KEY), ids.to_numpy(), policy.sample_rows))
    if scores is not None and len(scores) == len(rows):
        scores = scores.reset_index(drop=True).iloc[keep]
    return rows.iloc[keep].reset_index(drop=True), scores


def _empty_report_html() -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Drift report</title>"
        "</head><body><p>No column had values on both sides; nothing to compare.</p>"
        "</body></html>"
    )
