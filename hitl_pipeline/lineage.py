"""From a model version back to the exact rows it was trained on.

Every candidate's MLflow model version carries its lineage as tags (written by
``MlflowRegistryResource.log_candidate`` and the ``candidate_model`` asset): the dataset
version, its git commit and the md5 of every frame in it (training, fixed held-out,
human held-out, edge cases), the code version, the training parameters, the routing
configuration behind the labels, the gate's verdict and the champion history. This
module reads that chain back and restores the rows, verified against the md5s the model
version recorded (not only against the dataset repository's own ``.dvc`` files).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitl_pipeline.resources.dvc_store import DatasetIntegrityError, DvcDatasetStore
from hitl_pipeline.resources.mlflow_registry import (
    TAG_CODE_VERSION,
    TAG_DATASET_GIT_REV,
    TAG_DATASET_MD5,
    TAG_DATASET_VERSION,
    TAG_FILE_MD5_PREFIX,
    TAG_GATE_FAILED,
    TAG_GATE_PROMOTE,
    TAG_GATE_REASONS,
    TAG_ROUTING_POLICY,
    TAG_TRAINING_PARAMS,
    MlflowRegistryResource,
)


@dataclass(frozen=True)
class ModelLineage:
    """What produced one model version."""

    model_name: str
    model_version: str
    run_id: str
    aliases: tuple[str, ...]
    dataset_version: str
    dataset_git_rev: str
    training_md5: str
    frame_md5s: Mapping[str, str]  # frame name -> md5 as recorded on the model version
    code_version: str
    params: Mapping[str, Any]
    routing: Mapping[str, Any]
    gate: Mapping[str, str] = field(default_factory=dict)  # promote, failed checks, reasons
    champion: Mapping[str, str] = field(default_factory=dict)  # champion.* tags


def trace(registry: MlflowRegistryResource, *, version: str | None = None) -> ModelLineage:
    """The lineage of a model version (default: the champion).

    Args:
        registry: Where the model versions live.
        version: A model version; None for the current champion.

    Returns:
        The recorded chain.

    Raises:
        LookupError: No version given and no champion yet.
        KeyError: The version does not exist or carries no dataset lineage.
    """
    ref = registry.champion() if version is None else registry.get_version(version=version)
    if ref is None:
        raise LookupError(f"{registry.model_name} has no champion yet")
    tags = dict(ref.tags)
    if TAG_DATASET_VERSION not in tags:
        raise KeyError(f"version {ref.version} of {ref.name} records no dataset version")
    frames = {
        key.removeprefix(TAG_FILE_MD5_PREFIX).removesuffix(".md5"): value
        for key, value in tags.items()
        if key.startswith(TAG_FILE_MD5_PREFIX) and key.endswith(".md5")
    }
    return ModelLineage(
        model_name=ref.name,
        model_version=ref.version,
        run_id=ref.run_id,
        aliases=ref.aliases,
        dataset_version=tags[TAG_DATASET_VERSION],
        dataset_git_rev=tags.get(TAG_DATASET_GIT_REV, ""),
        training_md5=tags.get(TAG_DATASET_MD5, ""),
        frame_md5s=frames,
        code_version=tags.get(TAG_CODE_VERSION, "unknown"),
        params=_json(tags.get(TAG_TRAINING_PARAMS)),
        routing=_json(tags.get(TAG_ROUTING_POLICY)),
        gate={
            k: tags[k] for k in (TAG_GATE_PROMOTE, TAG_GATE_FAILED, TAG_GATE_REASONS) if k in tags
        },
        champion={k: v for k, v in sorted(tags.items()) if k.startswith("champion.")},
    )


def restore_rows(
    store: DvcDatasetStore,
    lineage: ModelLineage,
    dest: Path,
    *,
    frames: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Restore the frames a model version was trained and gated on, byte-identically.

    Args:
        store: The dataset repository (a fresh clone works: bytes come from the remote).
        lineage: From ``trace``.
        dest: Folder to write ``<frame>.parquet`` files into.
        frames: Frame names; default every frame the model version recorded.

    Returns:
        Frame name -> path written.

    Raises:
        DatasetIntegrityError: A restored file does not hash to the md5 the model
            version recorded (the file is removed again).
    """
    dest.mkdir(parents=True, exist_ok=True)
    names = list(frames) if frames is not None else sorted(lineage.frame_md5s) or ["training"]
    written: dict[str, Path] = {}
    for name in names:
        path = store.restore(version_id=lineage.dataset_version, dest=dest, name=name)
        expected = lineage.frame_md5s.get(name) or (
            lineage.training_md5 if name == "training" else ""
        )
        actual = hashlib.md5(path.read_bytes()).hexdigest()
        if expected and actual != expected:
            path.unlink()
            raise DatasetIntegrityError(
                f"{lineage.dataset_version}:{name} hashes to {actual}, but model version "
                f"{lineage.model_version} was trained on {expected}"
            )
        written[name] = path
    return written


def format_lineage(lineage: ModelLineage) -> str:
    """A few lines a person can read: model -> dataset -> frames, code, params, routing."""
    lines = [
        f"model     {lineage.model_name} v{lineage.model_version} "
        f"(run {lineage.run_id}; aliases: {', '.join(lineage.aliases) or 'none'})",
        f"dataset   {lineage.dataset_version} (git {lineage.dataset_git_rev[:12]})",
        *(f"  {name:<14} md5 {md5}" for name, md5 in sorted(lineage.frame_md5s.items())),
        f"code      {lineage.code_version}",
        f"params    {json.dumps(dict(lineage.params), sort_keys=True)}",
        f"routing   {json.dumps(dict(lineage.routing), sort_keys=True)}",
    ]
    lines += [f"{k:<9} {v}" for k, v in lineage.gate.items()]
    lines += [f"{k:<9} {v}" for k, v in lineage.champion.items()]
    return "\n".join(lines)


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"value": value}
