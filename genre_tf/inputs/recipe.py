"""How a run's model reads its inputs: whether the training split must be held in memory (augmentation, a cached
frozen boundary) or can stream, decided once from the config."""

from __future__ import annotations

from genre_tf import models
from genre_tf.config import Config

AUGMENTED = "boundary cache off: augmentation changes what the frozen backbone sees"


def caches_boundary(cfg: Config) -> bool:
    """Whether training can run on cached boundary activations: a transfer model cut by blocks, caching on, and
    no augmentation (every item of cfg.augment changes the frozen part's inputs, so its activations too).

    Distributed training keeps the plain path: the cached path is not tested under tf.distribute. So does a
    backbone whose BatchNorm trains.
    """
    return _cacheable(cfg) and not cfg.augment.active


def cache_off_note(cfg: Config) -> str | None:
    """The log line of a run that would train on the cache were it not for its augmentation, else None."""
    return AUGMENTED if _cacheable(cfg) and cfg.augment.active else None


def _cacheable(cfg: Config) -> bool:
    transfer = cfg.model.transfer
    cut_by_blocks = transfer.cache_boundary and transfer.trainable_layers is None
    # With BatchNorm learning the backbone trains in training mode, which the cut (inference mode) does not give.
    frozen_statistics = transfer.batch_norm == "frozen"
    return (
        models.family(cfg.model).has_backbone and cut_by_blocks and frozen_statistics and cfg.train.distribute == "none"
    )
