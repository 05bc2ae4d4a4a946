"""Every value of a training run checked before any work: one ``error:`` line with the fix.

``preflight(config)`` runs what the run would otherwise find out late, in a traceback: the
classifier kind and norm, the augmentation (a preset or dict of fields, with did-you-mean),
the config's shapes against the train cache's manifest, and ``--resume`` against the
checkpoint's settings. The CLI (:mod:`loffdata.train.command`) calls it before :func:`train`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from loffdata.errors import CliError, LoffError
from loffdata.train.trainconfig import CHECKPOINT_NAME, TrainConfig

__all__ = ["preflight"]


def _closest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_classifier(config: TrainConfig) -> None:
    from loffdata.train.models import KINDS, NORMS

    if config.model not in KINDS:
        raise CliError(
            f"--model {config.model!r}: not a classifier kind"
            f"{_closest(config.model, list(KINDS))}; "
            f"kinds: {', '.join(KINDS)} (the feature model is --feature_model)"
        )
    if config.norm not in NORMS:
        raise CliError(
            f"--norm {config.norm!r}: unknown{_closest(config.norm, list(NORMS))}; norms: "
            f"{', '.join(NORMS)}"
        )


def _check_augment(config: TrainConfig) -> None:
    from loffdata.loader.loaderconfig import resolve_augment

    try:
        resolve_augment(config.augment, config.views, None)
    except (TypeError, ValueError) as err:
        raise CliError(f"--augment {config.augment!r}: {err}") from None


def _check_cache(config: TrainConfig) -> None:
    from loffdata.stream.discover import load_manifest
    from loffdata.train.run import _check_features

    try:
        manifest = load_manifest(
            str(config.train), dict(config.stream.storage_options), config.stream.retry
        )
    except LoffError:  # no manifest (a glob, foreign shards): the run needs the shapes given
        missing = [
            f"--{k}" for k in ("in_chans", "grid", "num_classes") if getattr(config, k) is None
        ]
        if missing:
            raise CliError(
                f"--train {config.train}: no manifest there, so {', '.join(missing)} must be "
                "given; "
                f"or build one first: loffdata index {config.train}"
            ) from None
        return
    try:
        _check_features(config, manifest)
    except ValueError as err:
        fix = (
            "drop those settings (they are read from the manifest) "
            "or point --train at the matching cache"
        )
        raise CliError(f"--train {err}; {fix}") from None


def _check_resume(config: TrainConfig) -> None:
    if not config.resume:
        return
    path = Path(config.out) / CHECKPOINT_NAME
    if not path.exists():
        raise CliError(
            f"--resume: there is no checkpoint at {path}; drop --resume to start a new run"
        )
    from loffdata.train.checkpoint import _check_resumable, load_checkpoint

    saved: dict[str, Any] = load_checkpoint(path)["config"]
    try:
        _check_resumable(config, saved)
    except ValueError as err:
        raise CliError(
            f"--resume: {err}; resume with the checkpoint's values, or start a new run in "
            f"another --out"
        ) from None


def preflight(config: TrainConfig) -> None:
    """Checks ``config`` as the run would, before any work.

    Raises:
        CliError: naming the flag and what to do (a ``LoffError``: the CLIs print one line).
    """
    _check_classifier(config)
    _check_augment(config)
    _check_cache(config)
    _check_resume(config)
