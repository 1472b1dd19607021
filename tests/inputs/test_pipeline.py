"""tf.data pipelines: scaler on train only, epoch-seeded shuffling, image decoding and channels."""

import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf.config import MelConfig
from genre_tf.features.analysis import encode_mel_png
from genre_tf.features.mel import unit_to_db
from genre_tf.features.scaling import FeatureScaler
from genre_tf.inputs.pipeline import eval_dataset, label_ids, png_to_unit, table_loader, train_dataset


def labels_of(ds) -> list[list[int]]:
    return [batch[1].numpy().tolist() for batch in ds]


def test_scaler_uses_only_the_rows_it_is_fitted_on(tmp_path):
    train = pd.DataFrame({"a": [1.0, 3.0], "b": [5.0, 5.0]})
    scaler = FeatureScaler.fit(train, ["a", "b"])
    np.testing.assert_allclose(scaler.transform(pd.DataFrame({"a": [2.0, 4.0], "b": [5.0, 6.0]})), [[0, 0], [2, 1]])
    scaler.save(tmp_path / "s.json")
    assert FeatureScaler.load(tmp_path / "s.json").columns == ["a", "b"]


def test_labels_unknown_become_minus_one():
    assert label_ids(pd.Series(["b", "a", "", "z"]), ["a", "b"]).tolist() == [1, 0, -1, -1]


def test_epochs_are_seeded_and_a_resumed_run_sees_the_same_batches():
    x, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10)
    full, steps = train_dataset(table_loader(x, y), 10, 4, seed=1, first_epoch=0, epochs=3)
    resumed, _ = train_dataset(table_loader(x, y), 10, 4, seed=1, first_epoch=2, epochs=3)
    batches = labels_of(full)
    assert steps == 2 and len(batches) == 6
    assert labels_of(resumed) == batches[4:]
    assert batches[:2] != batches[2:4], "each epoch has its own order"
    other, _ = train_dataset(table_loader(x, y), 10, 4, seed=2, first_epoch=0, epochs=1)
    assert labels_of(other) != batches[:2]
    assert labels_of(eval_dataset(table_loader(x, y), 10, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_png_decodes_to_unit_scale():
    mel = MelConfig(n_mels=16)
    db = np.linspace(mel.db_floor, mel.db_ceiling, 16 * 20, dtype=np.float32).reshape(16, 20)
    unit = png_to_unit(tf.constant(encode_mel_png(db, mel)))
    assert unit.shape == (16, 20, 1)
    recovered = unit_to_db(unit.numpy()[::-1, :, 0], mel)  # PNG row 0 is the highest band
    np.testing.assert_allclose(recovered, db, atol=(mel.db_ceiling - mel.db_floor) / 65535)
