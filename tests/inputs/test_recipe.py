"""The input recipe: what each model family reads, built once from the config sections that decide it."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError

import pytest

from genre_tf import models
from genre_tf.features.analysis import feature_columns
from genre_tf.features.representations import PATH_COLUMNS
from genre_tf.inputs.recipe import InputRecipe, caches_boundary


@pytest.mark.parametrize(
    ("overrides", "representation", "whole_tracks"),
    [
        (["model.kind=mlp", "model.level=track"], models.FEATURES, True),
        (["model.kind=mlp", "model.level=segment"], models.FEATURES, False),
        (["model.kind=cnn"], models.MEL_IMAGE, False),
        (["model.kind=transfer", "model.transfer.backbone=MSD_musicnn"], models.MUSICNN_PATCH, False),
    ],
)
def test_recipe_reads_what_the_family_reads(tmp_path, make_config, overrides, representation, whole_tracks):
    cfg = make_config(tmp_path, *overrides)
    recipe = InputRecipe.of(cfg)
    assert recipe.representation == representation
    assert recipe.whole_tracks is whole_tracks
    assert recipe.reads_features is (representation == models.FEATURES)
    assert recipe.reads_patches is (representation == models.MUSICNN_PATCH)
    assert recipe.column == PATH_COLUMNS.get(representation)
    assert (recipe.column is None) is recipe.reads_features
    expected_columns = tuple(feature_columns(cfg.features.n_mfcc)) if recipe.reads_features else ()
    assert recipe.feature_columns == expected_columns
    assert (recipe.model, recipe.audio, recipe.mel, recipe.augment) == (cfg.model, cfg.audio, cfg.mel, cfg.augment)
    assert recipe.caches_boundary is caches_boundary(cfg)


def test_recipe_is_a_value(tmp_path, make_config):
    """Built once and passed down: it cannot change on the way, and it travels to worker processes."""
    recipe = InputRecipe.of(make_config(tmp_path, "model.kind=cnn", "model.image_size=[16,24]"))
    with pytest.raises(FrozenInstanceError):
        recipe.representation = models.FEATURES
    assert pickle.loads(pickle.dumps(recipe)) == recipe
    assert recipe.shape() == (16, 24, recipe.model.channels)
