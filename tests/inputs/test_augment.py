"""Training augmentation: each item changes training inputs as it says and nothing else, statelessly per epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from genre_tf import models
from genre_tf.config import AugmentConfig, Config, ConfigError, MelConfig
from genre_tf.features import musicnn_input
from genre_tf.features.analysis import encode_mel_png, feature_columns, mel_first_frame, mel_frames_per_segment
from genre_tf.features.scaling import FeatureScaler
from genre_tf.inputs.augment import check_augment, mask_stripes, mixup, time_neighbours
from genre_tf.inputs.examples import split_data
from genre_tf.inputs.pipeline import element_seed, png_to_unit, train_dataset
from genre_tf.inputs.recipe import InputRecipe

CLASSES = ["blues", "jazz"]
SEGMENTS = [4, 3]  # segments per track: track 0 is blues, track 1 jazz
SR, SEGMENT_SAMPLES = 22050, 11025  # make_config's 0.5 s segments
MEL_FRAMES = mel_frames_per_segment(SEGMENT_SAMPLES, MelConfig())  # 22 frames of 512 samples
PATCH_FRAMES = musicnn_input.patch_frames(0.5)  # 31 frames of 16 ms
IMAGE = ["model.kind=cnn", f"model.image_size=[16, {MEL_FRAMES}]"]  # the cached size: resizing changes nothing
PATCH = ["model.kind=transfer", "model.transfer.backbone=MSD_musicnn"]
KINDS = {"image": IMAGE, "patch": PATCH}


def first_frames(kind: str, segment: int) -> int:
    start = segment * SEGMENT_SAMPLES
    return mel_first_frame(start, MelConfig()) if kind == "image" else musicnn_input.first_frame(start, SR)


@pytest.fixture(scope="module")
def tracks(tmp_path_factory) -> tuple[pd.DataFrame, dict]:
    """Two tracks cut into segments as the cache cuts them: mel PNGs (16 bands) and musicnn patches per segment.

    The log-mel stays 12 dB inside the PNG range and the power is positive, so a mask (0) or a gain is never
    mistaken for a value of the track. Returns the segment rows and each track's whole unit image and power.
    """
    tmp = tmp_path_factory.mktemp("tracks")
    rng = np.random.default_rng(0)
    mel = MelConfig(n_mels=16)
    rows, whole = [], {}
    for t, n_segments in enumerate(SEGMENTS):
        db = rng.uniform(mel.db_floor + 12, mel.db_ceiling - 12, (16, first_frames("image", n_segments) + MEL_FRAMES))
        power = rng.uniform(0.01, 1.0, (first_frames("patch", n_segments) + PATCH_FRAMES, 96)).astype(np.float16)
        whole[t] = (png_to_unit(tf.constant(encode_mel_png(db, mel))).numpy(), power.astype(np.float32))
        for k in range(n_segments):
            mel_path, patch_path = tmp / f"mel_{t}_{k}.png", tmp / f"musicnn_{t}_{k}.f16"
            image = first_frames("image", k)
            mel_path.write_bytes(encode_mel_png(db[:, image : image + MEL_FRAMES], mel))
            patch = first_frames("patch", k)
            patch_path.write_bytes(power[patch : patch + PATCH_FRAMES].astype("<f2").tobytes())
            row = {"track_id": f"t{t}", "segment": k, "label": CLASSES[t], "split": "train"}
            rows.append({**row, "mel_path": str(mel_path), "musicnn_path": str(patch_path)})
    return pd.DataFrame(rows), whole


def feature_frame(n: int = 64) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(0.0, 2.0, (n, len(feature_columns()))), columns=feature_columns())
    return frame.assign(track_id=[f"t{i}" for i in range(n)], label=[CLASSES[i % 2] for i in range(n)])


def loaded(data, seed: int, epoch: int) -> list[np.ndarray]:
    """Every element of a training split as augmentation loads it in `epoch`."""
    load = data.augmentation.load
    return [
        load(tf.constant(i), element_seed(seed, tf.constant(epoch), tf.constant(i)))[0].numpy()
        for i in range(len(data))
    ]


def plain(data) -> list[np.ndarray]:
    return [data.loader(tf.constant(i))[0].numpy() for i in range(len(data))]


def batches_of(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_every_item_is_off_by_default_and_each_key_turns_one_on():
    assert not Config().augment.active
    for key in ("gain_db", "time_shift", "mixup_alpha", "feature_noise"):
        assert AugmentConfig(**{key: 0.5}).active, key
    assert not AugmentConfig(time_masks=2).active, "a mask of width 0 changes nothing"
    assert AugmentConfig(time_masks=2, time_mask_frames=3).active
    assert AugmentConfig(freq_masks=1, freq_mask_bands=3).active


@pytest.mark.parametrize(
    ("kind", "augment"),
    [
        ("features", ["augment.feature_noise=0.5", "augment.mixup_alpha=0.4"]),
        ("image", ["augment.time_masks=2", "augment.time_mask_frames=4", "augment.freq_masks=2"]),
        ("patch", ["augment.freq_mask_bands=8", "augment.gain_db=6", "augment.time_shift=1", "augment.mixup_alpha=1"]),
    ],
)
def test_evaluation_inputs_are_byte_identical_with_augmentation_on(tmp_path, make_config, tracks, kind, augment):
    frame = feature_frame() if kind == "features" else tracks[0]
    base = ["model.kind=mlp"] if kind == "features" else KINDS[kind]
    off, on = make_config(tmp_path, *base), make_config(tmp_path, *base, *augment)
    scaler = FeatureScaler.fit(frame, feature_columns()) if kind == "features" else None
    expected = batches_of(split_data(frame, InputRecipe.of(off), CLASSES, scaler).batches(4))
    for train in (False, True):  # the training split's batches (valid, test, predict) never augment either
        data = split_data(frame, InputRecipe.of(on), CLASSES, scaler, train=train)
        assert (data.augmentation is not None) == train
        for (x, y), (x0, y0) in zip(batches_of(data.batches(4)), expected, strict=True):
            assert x.tobytes() == x0.tobytes() and y.tobytes() == y0.tobytes()
    assert split_data(frame, InputRecipe.of(off), CLASSES, scaler, train=True).augmentation is None


@pytest.mark.parametrize("kind", ["image", "patch"])
def test_masks_set_whole_bands_and_frames_to_zero(tmp_path, make_config, tracks, kind):
    masks = ["augment.time_masks=2", "augment.time_mask_frames=5", "augment.freq_masks=1", "augment.freq_mask_bands=4"]
    data = split_data(tracks[0], InputRecipe.of(make_config(tmp_path, *KINDS[kind], *masks)), CLASSES, None, train=True)
    time_axis = 1 if kind == "image" else 0
    epochs = [loaded(data, seed=3, epoch=e) for e in range(3)]
    for element, before in zip(epochs[0], plain(data), strict=True):
        masked = element == 0
        assert not (before == 0).any()
        np.testing.assert_array_equal(element[~masked], before[~masked])  # the rest is untouched
        frames = masked.all(axis=tuple(a for a in range(masked.ndim) if a != time_axis))
        bands = masked.all(axis=tuple(a for a in range(masked.ndim) if a != 1 - time_axis))
        assert frames.sum() <= 2 * 5 and bands.sum() <= 4
        frame_shape = [1] * masked.ndim
        frame_shape[time_axis] = -1
        band_shape = [1] * masked.ndim
        band_shape[1 - time_axis] = -1
        np.testing.assert_array_equal(masked, frames.reshape(frame_shape) | bands.reshape(band_shape))
    assert sum(int((e == 0).sum()) for e in epochs[0]) > 0
    assert not all(np.array_equal(a, b) for a, b in zip(epochs[0], epochs[1], strict=True)), "new masks every epoch"
    again = loaded(data, seed=3, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(again, epochs[2], strict=True)), "an epoch's draws repeat"


def test_mask_widths_stay_within_the_maximum():
    x = tf.ones((64, 8))
    for seed in range(20):
        masked = mask_stripes(x, 0, 1, 6, tf.constant([seed, 0])).numpy() == 0
        rows = masked.all(axis=1)
        assert rows.sum() <= 6 and (rows.sum() == 0 or np.ptp(np.flatnonzero(rows)) == rows.sum() - 1)


@pytest.mark.parametrize("kind", ["image", "patch"])
def test_gain_shifts_every_value_by_one_draw_within_the_given_db(tmp_path, make_config, tracks, kind):
    data = split_data(
        tracks[0], InputRecipe.of(make_config(tmp_path, *KINDS[kind], "augment.gain_db=6")), CLASSES, None, train=True
    )
    gains = []
    for epoch in range(2):
        for element, before in zip(loaded(data, seed=0, epoch=epoch), plain(data), strict=True):
            if kind == "image":  # dB offset on the [0, 1] scale of -80..40 dB
                db = (element - before) * (MelConfig().db_ceiling - MelConfig().db_floor)
            else:  # a factor on mel power
                db = 10 * np.log10(element / before)
            np.testing.assert_allclose(db, db.flat[0], atol=1e-3)
            gains.append(db.flat[0])
    assert max(np.abs(gains)) <= 6 + 1e-3
    assert len(np.unique(np.round(gains, 3))) == len(gains), "one draw per element and epoch"


def test_time_shift_crops_the_track_later_by_up_to_one_hop(tmp_path, make_config, tracks):
    frame, whole = tracks
    cfg = make_config(tmp_path, *IMAGE, "augment.time_shift=1")
    data = split_data(frame, InputRecipe.of(cfg), CLASSES, None, train=True)
    neighbour, offset, max_shift = time_neighbours(frame, InputRecipe.of(cfg))
    assert neighbour.tolist() == [1, 2, 3, 3, 5, 6, 6]  # the last segment of a track stays in place
    assert offset.tolist() == [0, 0, 1, 0, 0, 0, 0]  # 22-frame images 22, 22, 21 frames apart
    assert max_shift.tolist() == [22, 22, 21, 0, 22, 22, 0]
    shifts = {i: set() for i in range(len(frame))}
    for epoch in range(6):
        for i, element in enumerate(loaded(data, seed=0, epoch=epoch)):
            t, k = int(frame.track_id[i][1]), int(frame.segment[i])
            start = first_frames("image", k)
            windows = [whole[t][0][:, start + s : start + s + MEL_FRAMES] for s in range(max_shift[i] + 1)]
            matches = [s for s, window in enumerate(windows) if np.array_equal(element, window)]
            assert matches, f"element {i} is not a window of its track"
            shifts[i].add(matches[0])
    assert shifts[3] == shifts[6] == {0}
    assert all(len(shifts[i]) > 1 for i in (0, 1, 2, 4, 5)), "a new crop each epoch"


def test_time_shift_of_musicnn_patches_reads_on_into_the_next_patch(tmp_path, make_config, tracks):
    frame, whole = tracks
    cfg = make_config(tmp_path, *PATCH, "augment.time_shift=0.5")
    data = split_data(frame, InputRecipe.of(cfg), CLASSES, None, train=True)
    assert InputRecipe.of(cfg).representation == models.MUSICNN_PATCH
    neighbour, offset, max_shift = time_neighbours(frame, InputRecipe.of(cfg))
    # 31-frame patches 32, 31, 31 frames apart: the frame between the first two is in neither, so it is skipped
    assert offset.tolist() == [0] * 7 and max_shift.tolist() == [16, 15, 15, 0, 16, 15, 0]
    before = plain(data)
    for epoch in range(3):
        for i, element in enumerate(loaded(data, seed=0, epoch=epoch)):
            joined = np.concatenate([before[i], before[neighbour[i]]])
            assert any(np.array_equal(element, joined[s : s + PATCH_FRAMES]) for s in range(max_shift[i] + 1)), i
            if frame.segment[i] > 0:  # exact where the patches tile the track
                t, start = int(frame.track_id[i][1]), first_frames("patch", int(frame.segment[i]))
                window = [whole[t][1][start + s : start + s + PATCH_FRAMES] for s in range(max_shift[i] + 1)]
                assert any(np.array_equal(element, w) for w in window), i


def test_time_shift_needs_segments_without_gaps(make_config, tmp_path):
    with pytest.raises(ConfigError, match="augment.time_shift: needs audio.segment_hop <= audio.segment_seconds"):
        make_config(tmp_path, "audio.segment_hop=0.75", "augment.time_shift=0.5")
    make_config(tmp_path, "audio.segment_hop=0.25", "augment.time_shift=0.5")


def test_feature_noise_has_the_given_std_in_standardised_units(tmp_path, make_config):
    frame = feature_frame()
    cfg = make_config(tmp_path, "model.kind=mlp", "augment.feature_noise=0.5")
    data = split_data(frame, InputRecipe.of(cfg), CLASSES, FeatureScaler.fit(frame, feature_columns()), train=True)
    noise = [np.stack(loaded(data, seed=0, epoch=e)) - np.stack(plain(data)) for e in range(2)]
    for drawn in noise:
        assert drawn.std() == pytest.approx(0.5, rel=0.05) and abs(drawn.mean()) < 0.02
    assert not np.allclose(noise[0], noise[1])


def test_mixup_mixes_two_examples_and_their_one_hot_labels():
    x = tf.constant(np.arange(8.0, dtype=np.float32)[:, None] * [1.0, -1.0])
    y = tf.constant([0, 1, 2, 0, 1, 2, 0, 2])
    seeds = tf.constant(np.arange(16).reshape(8, 2), tf.int32)
    mixed, targets = (t.numpy() for t in mixup(x, y, seeds, alpha=0.4, n_classes=3))
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    lam = (mixed[:, 0] - x.numpy()[::-1, 0]) / (x.numpy()[:, 0] - x.numpy()[::-1, 0])  # partner: the mirror
    one_hot = np.eye(3)[y.numpy()]
    np.testing.assert_allclose(mixed, lam[:, None] * x.numpy() + (1 - lam[:, None]) * x.numpy()[::-1], atol=1e-5)
    np.testing.assert_allclose(targets, lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[::-1], atol=1e-5)
    assert ((targets > 0.01).sum(axis=1) == 2).any(), "some targets mix two labels"
    assert ((lam >= 0) & (lam <= 1)).all()
    again = mixup(x, y, seeds, alpha=0.4, n_classes=3)[1].numpy()
    np.testing.assert_array_equal(again, targets)


def test_a_resumed_run_sees_the_augmented_batches_of_an_uninterrupted_one(tmp_path, make_config, tracks):
    every = ["augment.time_masks=1", "augment.time_mask_frames=4", "augment.freq_masks=1", "augment.freq_mask_bands=3"]
    every += ["augment.gain_db=3", "augment.time_shift=1", "augment.mixup_alpha=0.4"]
    cfg = make_config(tmp_path, *IMAGE, *every)
    data = split_data(tracks[0], InputRecipe.of(cfg), CLASSES, None, train=True)

    def run(first_epoch: int) -> list:
        ds, steps = train_dataset(data.loader, len(data), 2, cfg.seed, first_epoch, 3, data.augmentation)
        return batches_of(ds)

    full, resumed = run(0), run(2)
    assert len(full) == 9 and len(resumed) == 3
    for (x, y), (x0, y0) in zip(resumed, full[6:], strict=True):
        assert x.tobytes() == x0.tobytes() and y.tobytes() == y0.tobytes()
    assert full[0][0].shape == (2, 16, MEL_FRAMES, 1) and full[0][1].shape == (2, 2)
    np.testing.assert_allclose(np.concatenate([y for _, y in full]).sum(axis=1), 1.0, rtol=1e-6)
    unaugmented, _ = train_dataset(data.loader, len(data), 2, cfg.seed, 0, 3)
    for (x, _), (x0, _) in zip(full, batches_of(unaugmented), strict=True):
        assert not np.array_equal(x, x0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.kind=mlp", "augment.gain_db=3"], "augment.gain_db: applies to mel images and musicnn patches"),
        (["model.kind=cnn", "augment.feature_noise=0.1"], "augment.feature_noise: applies to feature-table rows"),
        (
            ["model.kind=transfer", "model.level=track", "model.transfer.head_units=0", "augment.mixup_alpha=0.2"],
            "augment: the linear probe",
        ),
        (["train.distribute=multi_worker", "augment.mixup_alpha=0.2"], "augment.mixup_alpha: does not work with"),
    ],
)
def test_augmentation_the_model_cannot_take_is_refused(tmp_path, make_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_augment(make_config(tmp_path, *overrides))
    check_augment(make_config(tmp_path, "model.kind=cnn", "augment.gain_db=3", "augment.mixup_alpha=0.2"))
