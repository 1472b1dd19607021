"""Frozen-boundary cache: keys, compute-once files, and a top trained on the cache that is the plain model's equal."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import MEL_CLASSES, MEL_IMAGES

from genre_tf.config import AugmentConfig, CacheConfig, Config, ModelConfig, TrainConfig, TransferConfig
from genre_tf.inputs.examples import Examples, split_data
from genre_tf.inputs.pipeline import image_input_shape, train_dataset
from genre_tf.inputs.recipe import InputRecipe, cache_off_note, caches_boundary
from genre_tf.models import build_model
from genre_tf.run import RunDir
from genre_tf.training import boundary
from genre_tf.training import fit as training
from genre_tf.training.boundary import boundary_features, boundary_split, cut_at_boundary

CLASSES, N_IMAGES = MEL_CLASSES, MEL_IMAGES
BATCH = 4


@pytest.fixture(autouse=True)
def fresh_session():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


def make_cfg(tmp_path: Path, **transfer) -> Config:
    model = ModelConfig(
        kind="transfer",
        image_size=[32, 32],
        channels=3,
        transfer=TransferConfig(**{"weights": None, "head_units": 8, "dropout": 0.0, **transfer}),
    )
    return Config(model=model, cache=CacheConfig(dir=tmp_path / "cache"), train=TrainConfig(batch_size=BATCH))


@pytest.fixture
def frame(mel_frame) -> pd.DataFrame:
    return mel_frame


def build(cfg: Config) -> keras.Model:
    return build_model(cfg.model, image_input_shape(cfg.model), len(CLASSES))


def images_of(frame: pd.DataFrame, cfg: Config) -> np.ndarray:
    return np.concatenate([x for x, _ in split_data(frame, InputRecipe.of(cfg), CLASSES, None).batches(BATCH)])


def activations_of(data) -> np.ndarray:
    return np.concatenate([x for x, _ in data.batches(BATCH)])


def test_top_on_cached_activations_predicts_like_the_model(tmp_path, frame):
    cfg = make_cfg(tmp_path)
    model = build(cfg)
    expected = model(images_of(frame, cfg))
    # 0 blocks: the pooled backbone output, one vector per image; else the (H, W, C) map below the lowest block.
    for blocks, shape in [(0, (2048,)), (1, (1, 1, 2048)), (3, (2, 2, 1024))]:
        cut = cut_at_boundary(model, blocks, cfg.model)
        data = boundary_split(
            cut, frame, InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False
        )
        cached = activations_of(data)
        assert cached.shape == (N_IMAGES, *shape)
        np.testing.assert_array_equal(data.labels, [i % 3 for i in range(N_IMAGES)])
        np.testing.assert_array_equal(data.track_ids, frame.track_id)
        np.testing.assert_allclose(cut.top(cached), expected, rtol=1e-4, atol=1e-6)


def test_activations_are_computed_once_then_loaded(tmp_path, frame, monkeypatch):
    cfg = make_cfg(tmp_path, trainable_blocks=1)
    cut = cut_at_boundary(build(cfg), 1, cfg.model)
    data = split_data(frame, InputRecipe.of(cfg), CLASSES, None)
    key = cut.key(frame.mel_path)
    first = boundary_features(cut.frozen, data, BATCH, cfg.cache.dir, key, progress=False)
    np.testing.assert_allclose(first, cut.frozen(images_of(frame, cfg)), rtol=1e-4, atol=1e-5)  # batched vs whole
    assert [p.name for p in (cfg.cache.dir / "boundary").iterdir()] == [f"{key}.npy"]  # no temporary file left

    def no_compute(*args, **kwargs):
        raise AssertionError("a cached split was computed again")

    monkeypatch.setattr(keras.Model, "predict_on_batch", no_compute)
    np.testing.assert_array_equal(boundary_features(cut.frozen, data, BATCH, cfg.cache.dir, key), first)
    # A split without elements (a run without a test split) caches an empty array of the right shape.
    assert boundary_split(
        cut, frame.iloc[:0], InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False
    ).labels.shape == (0,)
    assert np.load(cfg.cache.dir / "boundary" / f"{cut.key([])}.npy").shape == (0, 1, 1, 2048)


def test_caching_applies_to_transfer_models_cut_by_blocks(tmp_path):
    assert caches_boundary(make_cfg(tmp_path))
    assert caches_boundary(make_cfg(tmp_path, trainable_blocks=3))
    assert not caches_boundary(make_cfg(tmp_path, cache_boundary=False))
    assert not caches_boundary(make_cfg(tmp_path, trainable_layers=10))  # a cut inside a block has no closed top
    assert not caches_boundary(Config(model=ModelConfig(kind="cnn")))


def test_augmentation_turns_the_cache_off_and_training_says_so(tmp_path, frame, capsys, monkeypatch):
    """Every augmentation changes what the frozen backbone sees, so its activations cannot be cached once."""
    cached = make_cfg(tmp_path)
    augmented = replace(cached, augment=AugmentConfig(gain_db=3.0))
    for item in ({"mixup_alpha": 0.2}, {"time_shift": 0.5}, {"freq_masks": 1, "freq_mask_bands": 4}):
        assert not caches_boundary(replace(cached, augment=AugmentConfig(**item))), item
    assert caches_boundary(replace(cached, augment=AugmentConfig(time_masks=2))), "a mask of width 0 is no mask"
    assert cache_off_note(cached) is None
    assert cache_off_note(augmented) == "boundary cache off: augmentation changes what the frozen backbone sees"
    assert cache_off_note(replace(augmented, model=ModelConfig(kind="cnn"))) is None  # it never caches

    fitted = {}
    monkeypatch.setattr(
        training, "_fit_phase", lambda run, cfg, phase, model, inputs, *rest: fitted.update(inputs=inputs)
    )
    examples = Examples(frame.assign(split=["train"] * 8 + ["valid"] * 4), [], pd.DataFrame())
    for name, cfg in (("augmented", augmented), ("cached", cached)):
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        run.classes_file.write_text(json.dumps(CLASSES))
        training.fit_phases(run, cfg, examples, None, tf.distribute.get_strategy(), verbose=0)
        lines = capsys.readouterr().out.splitlines()
        if name == "augmented":  # the whole model fits on augmented images; nothing was cached
            assert lines == ["boundary cache off: augmentation changes what the frozen backbone sees"]
            assert fitted["inputs"].model.name == "transfer_resnet50"
            assert fitted["inputs"].train.augmentation is not None
            assert not (cfg.cache.dir / "boundary").exists()
        else:
            assert "boundary cache off" not in "\n".join(lines)
            assert fitted["inputs"].model.name == "top" and len(list((cfg.cache.dir / "boundary").iterdir())) == 2


def test_key_follows_weights_data_boundary_and_input_but_not_the_head(tmp_path, frame):
    cfg = make_cfg(tmp_path)
    paths = frame.mel_path.tolist()
    model = build(cfg)
    cut = cut_at_boundary(model, 1, cfg.model)
    key = cut.key(paths)
    assert cut.layer == "conv5_block2_out"
    assert cut.key(paths[::-1]) != key  # the activations are stored in element order
    assert cut.key(paths[:-1]) != key
    assert cut_at_boundary(model, 0, cfg.model).key(paths) != key
    deltas = make_cfg(tmp_path).model
    deltas.channel_mode = "deltas"
    assert cut_at_boundary(model, 1, deltas).key(paths) != key
    stem = cut.frozen.get_layer("resnet50_frozen").get_layer("conv1_conv")
    kernel = stem.kernel.numpy()
    stem.kernel.assign(kernel + 1e-3)
    assert cut_at_boundary(model, 1, cfg.model).key(paths) != key
    stem.kernel.assign(kernel)
    assert cut_at_boundary(model, 1, cfg.model).key(paths) == key
    # A tuner trial with another head and the same seeded backbone reads the same file.
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    other = build(make_cfg(tmp_path, head_units=32, dropout=0.5))
    assert cut_at_boundary(other, 1, cfg.model).key(paths) == key


def test_training_top_on_the_cache_trains_the_full_model_as_plain_fit_does(tmp_path, frame):
    cfg = make_cfg(tmp_path, trainable_blocks=1, dropout=0.3)
    model = build(cfg)
    images = images_of(frame, cfg)
    before = model(images)
    initial = model.get_weights()
    dropout_rngs = [layer.seed_generator.state for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    initial_rngs = [rng.numpy() for rng in dropout_rngs]
    kernel = model.get_layer("resnet50").get_layer("conv5_block3_2_conv").kernel
    initial_kernel = kernel.numpy()

    def fit(net: keras.Model, loader) -> None:
        # A low rate keeps the randomly initialised head's ReLUs alive, so the predictions stay image-dependent.
        net.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.SparseCategoricalCrossentropy())
        ds, steps = train_dataset(loader, N_IMAGES, BATCH, cfg.seed, 0, 2)
        net.fit(ds, epochs=2, steps_per_epoch=steps, shuffle=False, verbose=0)

    fit(model, split_data(frame, InputRecipe.of(cfg), CLASSES, None).loader)
    plain, plain_kernel = model(images), kernel.numpy()
    model.set_weights(initial)
    for rng, state in zip(dropout_rngs, initial_rngs, strict=True):  # the head's dropout layers draw the same masks
        rng.assign(state)
    cut = cut_at_boundary(model, 1, cfg.model)
    data = boundary_split(cut, frame, InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False)
    fit(cut.top, data.loader)
    on_cache = cut.top(activations_of(data))
    assert np.abs(plain - before).max() > 0.1 and np.std(plain, axis=0).max() > 0.01  # trained, not collapsed
    assert np.abs(plain_kernel - initial_kernel).max() > 0  # the top block trained too
    np.testing.assert_allclose(model(images), on_cache, rtol=1e-4, atol=1e-6)  # weights shared with the full model
    np.testing.assert_allclose(on_cache, plain, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(kernel.numpy(), plain_kernel, rtol=1e-4, atol=1e-6)
    # Only the top block and the head trained: the cached activations are still the frozen part's.
    assert boundary.weights_digest(cut.frozen) == cut.spec["weights"]
