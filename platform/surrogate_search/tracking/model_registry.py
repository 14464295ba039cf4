"""Learned surrogates in MLflow's model registry: the best one of a comparison becomes a version of
a registered model, and the ``champion`` alias follows the best version per task and metric.

A version is tagged with what it is judged by: ``metric``, ``split`` (``val``) and ``value``, the
validation metric of the model its run post-tuned (the comparison's own choice of run; test never
chooses). The alias moves to a new version only when its value beats the champion's on the same
metric and split. A registered surrogate is read back, weights only, by name::

    registration = register_surrogate(model_uri, "synthetic_text-deep_embedding-surrogate", metric="edit_distance",
                                      value=0.41, higher_is_better=False, tracking_uri=uri)
    saved = fetch_surrogate("models:/synthetic_text-deep_embedding-surrogate@champion", tracking_uri=uri)
    posttune(PostTuneConfig.for_task(task, saved.settings), checkpoint, surrogate=saved)
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from surrogate_search.surrogates import SavedSurrogate, load_surrogate
from surrogate_search.tracking.store import client, environment, resolve_tracking_uri, use_tracking_uri
from surrogate_search.utils import is_better

CHAMPION = "champion"
SPLIT = "val"
"""The split a version's ``value`` is measured on."""
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def default_model_name(experiment: str, method: str) -> str:
    """``imbalanced_tabular_breast_cancer-deep_embedding-surrogate``: one registered model per task and method."""
    return f"{experiment}-{method}-surrogate"


@dataclass
class Registration:
    """A surrogate registered as a new version, and whether it became the champion."""

    name: str
    version: str
    metric: str
    value: float
    """The version's validation metric (what the champion is chosen by)."""
    champion: bool
    """Whether the ``champion`` alias now points at this version."""
    previous_version: str | None = None
    """The champion before this registration (None: there was none)."""
    previous_value: float | None = None
    """Its value on the same metric and split (None: it has none to compare with)."""
    kept_base: bool = False
    """Whether the run it comes from handed its base model back (no update beat the base on val):
    such a surrogate is registered but never made the champion."""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def summary(self) -> str:
        """One line: what was registered and where the champion alias stands."""
        line = f"registered surrogate {self.name} version {self.version} (val {self.metric} {self.value:.4f})"
        before = (f"version {self.previous_version}" + (f", val {self.metric} {self.previous_value:.4f}"
                                                         if self.previous_value is not None else ""))
        if self.champion:
            return f"{line}: now @{CHAMPION} (" + (f"was {before})" if self.previous_version else "the first)")
        if self.kept_base:
            stays = f"@{CHAMPION} stays {before}" if self.previous_version else f"no @{CHAMPION} yet"
            return f"{line}: {stays} (its run kept the base model: no update beat the base on val)"
        reason = "" if self.previous_value is not None else f" (it has no val {self.metric} to compare with)"
        return f"{line}: @{CHAMPION} stays {before}{reason}"


def register_surrogate(model_uri: str, name: str, *, metric: str, value: float, higher_is_better: bool,
                       tracking_uri: str | None = None, run_id: str | None = None,
                       tags: Mapping[str, Any] | None = None, kept_base: bool = False) -> Registration:
    """Register the logged surrogate model ``model_uri`` (``models:/m-...``) as a new version of
    ``name`` (created if new), tagged with its validation ``value`` of ``metric``; the ``champion``
    alias moves to it when there is no champion yet or it beats the champion's value, unless
    ``kept_base``: the run it comes from handed its base model back, so ``value`` is the base's and
    says nothing of the surrogate."""
    store = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(store)
    try:
        mlflow_client.create_registered_model(name, description="learned surrogates registered by surrogate-search")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    previous = mlflow_client.get_registered_model(name).aliases.get(CHAMPION)
    model_id = model_uri[len("models:/"):] if model_uri.startswith("models:/m-") else None
    with use_tracking_uri(store):  # MLflow looks a logged model up with the process-wide store
        version = mlflow_client.create_model_version(
            name, source=model_uri, run_id=run_id, model_id=model_id,
            tags={**{k: str(v) for k, v in (tags or {}).items()}, "metric": metric, "split": SPLIT,
                  "value": repr(value), "higher_is_better": str(higher_is_better),
                  "kept_base": str(kept_base).lower()}).version
    previous_value = _value(mlflow_client, name, previous, metric) if previous else None
    champion = not kept_base and (previous is None or (previous_value is not None
                                                       and is_better(value, previous_value, higher_is_better)))
    if champion:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    return Registration(name, str(version), metric, value, champion, str(previous) if previous else None,
                        previous_value, kept_base)


def _value(mlflow_client: MlflowClient, name: str, version: str, metric: str) -> float | None:
    tags = mlflow_client.get_model_version(name, version).tags
    if tags.get("metric") != metric or tags.get("split") != SPLIT or "value" not in tags:
        return None
    return float(tags["value"])


def fetch_surrogate(uri: str, *, tracking_uri: str | None = None) -> SavedSurrogate:
    """A saved surrogate by ``models:/<name>@<alias>``, ``models:/<name>/<version>``, a run's
    ``runs:/<run id>/surrogate`` (what every learned post-tuning run logs, its ``surrogate_uri`` tag)
    or a folder (see :func:`surrogate_search.surrogates.load_surrogate`); only its weights and
    ``surrogate.json`` are read. A name, alias, version or run that does not exist is a
    ``FileNotFoundError`` that lists what does."""
    if uri.startswith("runs:/"):
        return _fetch_run_surrogate(uri, resolve_tracking_uri(tracking_uri))
    if not uri.startswith("models:/"):
        if not Path(uri).exists():
            raise FileNotFoundError(f"no surrogate at {uri}: give a folder, models:/<name>@<alias>, "
                                    f"models:/<name>/<version> or runs:/<run id>/surrogate")
        return load_surrogate(uri)
    store = resolve_tracking_uri(tracking_uri)
    name, version = _resolve(client(store), uri, store)
    # MLflow resolves models:/ URIs with the process-wide registry, whatever download_artifacts is given.
    with (tempfile.TemporaryDirectory() as tmp, use_tracking_uri(store),
          environment(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")):
        folder = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        saved = load_surrogate(folder, source=uri)
    saved.resolved = f"models:/{name}/{version}"
    return saved


def _fetch_run_surrogate(uri: str, store: str) -> SavedSurrogate:
    with (tempfile.TemporaryDirectory() as tmp, environment(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")):
        try:
            folder = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=store)
        except MlflowException as exc:
            raise FileNotFoundError(f"no surrogate at {uri} in {store} ({exc.message.splitlines()[0]}); a learned "
                                    f"post-tuning run names its own in the tag surrogate_uri") from None
        return load_surrogate(folder, source=uri)


def _resolve(mlflow_client: MlflowClient, uri: str, store: str) -> tuple[str, str]:
    """``(name, version)`` that ``uri`` names now (an alias is read once, here)."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise ValueError(f"{uri!r}: expected models:/<name>@<alias> (e.g. @{CHAMPION}) or models:/<name>/<version>")
    name = match["name"]
    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = [m.name for m in mlflow_client.search_registered_models(max_results=20)]
        there = f"registered there: {', '.join(known)}" if known else "none is registered there"
        raise FileNotFoundError(f"no registered model {name!r} in {store} ({there}); `surrogate-search compare` "
                                f"registers the best learned surrogate of a comparison") from None
    versions = sorted((str(v.version) for v in mlflow_client.search_model_versions(f"name = '{name}'")), key=int)
    if match["alias"]:
        if match["alias"] not in model.aliases:
            raise FileNotFoundError(f"registered model {name!r} has no alias {match['alias']!r} (aliases: "
                                    f"{', '.join(model.aliases) or 'none'}; versions: {', '.join(versions) or 'none'})")
        return name, str(model.aliases[match["alias"]])
    if match["version"] not in versions:
        raise FileNotFoundError(f"registered model {name!r} has no version {match['version']} (versions: "
                                f"{', '.join(versions) or 'none'})")
    return name, match["version"]
