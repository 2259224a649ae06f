"""The per-process model cache of a `gpu` queue worker.

A prefork worker forks its child processes from a parent that imported the tasks. The models
must be loaded in each child, lazily, by the first task that needs them, never in the parent:
CUDA cannot be used across a fork, and a model loaded before the fork would be copied into every
child. So the cache starts empty in every child (`worker_process_init` clears anything the
parent might hold) and `model_get` fills it on first use; later tasks in the same process reuse
the loaded model, keyed by version id. Nothing in this module touches CUDA at import.
"""

from __future__ import annotations

import logging
import os
import threading

from celery.signals import worker_process_init

from predictor.models import ModelVersion
from predictor.services import LoadedModel, model_version_load

log = logging.getLogger(__name__)

MAX_MODELS = 4  # an A/B test scores with two kinds; a new active version pushes out the oldest
_models: dict[int, LoadedModel] = {}
_lock = threading.Lock()
loads = 0  # how many times this process read an artifact (tests and logs read it)


@worker_process_init.connect
def _forget_models(**_: object) -> None:
    cache_clear()


def cache_clear() -> None:
    global loads
    with _lock:
        _models.clear()
        loads = 0


def model_get(*, version: ModelVersion, device: str = "auto") -> LoadedModel:
    """The loaded model of `version`, read from its artifact once per process."""
    global loads
    with _lock:
        cached = _models.get(version.pk)
        if cached is None:
            cached = model_version_load(version=version, device=device)
            while len(_models) >= MAX_MODELS:
                _models.pop(next(iter(_models)))
            _models[version.pk] = cached
            loads += 1
            log.info(
                "process %d loaded model version %d on %s", os.getpid(), version.pk, cached.device
            )
        return cached
