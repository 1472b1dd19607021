"""Feature scalers: rank-Gauss fitted on the rows given, its JSON round trip, standard files of older runs, and a
quantile run that trains on train-fitted quantiles and predicts through the saved ones."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.preprocessing import QuantileTransformer

from genre_tf.evaluation.calibration import calibrated
from genre_tf.features.scaling import FeatureScaler, QuantileScaler, fit_scaler, load_scaler
from genre_tf.run import RunDir
from genre_tf.serving.predict import ensemble
from genre_tf.training.fit import train

COLUMNS = ["rms_mean", "tempo"]


@pytest.fixture
def rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Skewed training rows (lognormal energy, a few tempi) and other rows whose values lie in and beyond them."""
    rng = np.random.default_rng(0)
    fitted = pd.DataFrame({"rms_mean": rng.lognormal(0.0, 1.0, 40), "tempo": rng.choice([90.0, 120.0, 140.0], 40)})
    other = pd.DataFrame({"tempo": [60.0, 120.0, 200.0], "rms_mean": [-1.0, float(fitted.rms_mean.median()), 1e3]})
    return fitted, other


def test_quantile_scaler_maps_the_rows_it_is_fitted_on_onto_a_standard_normal(rows):
    fitted, other = rows
    scaler = fit_scaler("quantile", fitted, COLUMNS)
    assert isinstance(scaler, QuantileScaler) and scaler.quantiles.shape == (40, 2)  # as many quantiles as rows
    # Rank-Gauss: the i-th smallest of n distinct values goes to the normal quantile of i / (n - 1), clipped.
    order = np.argsort(fitted.rms_mean.to_numpy())
    expected = np.clip(norm.ppf(np.linspace(0, 1, 40)), -5.2, 5.2)
    np.testing.assert_allclose(scaler.transform(fitted)[order, 0], expected, atol=2e-3)
    out = scaler.transform(other)  # columns by name, not position
    assert out.dtype == np.float32 and out[1, 0] == pytest.approx(0.0, abs=0.05)  # the median maps to 0
    assert out[0, 0] == out[0, 1] == pytest.approx(-5.1993, abs=1e-3) and out[2, 0] == pytest.approx(5.1993, abs=1e-3)
    sklearn = QuantileTransformer(n_quantiles=40, output_distribution="normal").fit(fitted[COLUMNS].to_numpy())
    np.testing.assert_allclose(out, sklearn.transform(other[COLUMNS].to_numpy()), rtol=1e-6, atol=1e-6)
    # Fitted on other rows, the same row scales otherwise: only the rows given decide.
    refitted = fit_scaler("quantile", pd.concat([fitted, other]), COLUMNS)
    assert not np.allclose(refitted.transform(other), out)


def test_a_saved_quantile_scaler_is_plain_json_and_scales_exactly_as_fitted(rows, tmp_path):
    fitted, other = rows
    scaler = fit_scaler("quantile", fitted, COLUMNS)
    scaler.save(tmp_path / "scaler.json")
    payload = json.loads((tmp_path / "scaler.json").read_text())
    assert payload["kind"] == "quantile" and payload["columns"] == COLUMNS
    assert len(payload["references"]) == 40 and [len(q) for q in payload["quantiles"]] == [40, 40]  # per column
    loaded = load_scaler(tmp_path / "scaler.json")
    assert isinstance(loaded, QuantileScaler) and loaded.columns == COLUMNS
    np.testing.assert_array_equal(loaded.transform(other), scaler.transform(other))
    np.testing.assert_array_equal(loaded.transform(fitted), scaler.transform(fitted))
    with pytest.raises(ValueError, match="lacks column"):
        loaded.transform(other.drop(columns="tempo"))


def test_standard_scaler_files_without_a_kind_load_as_standard(rows, tmp_path):
    fitted, other = rows
    scaler = fit_scaler("standard", fitted, COLUMNS)
    assert isinstance(scaler, FeatureScaler)
    scaler.save(tmp_path / "scaler.json")
    assert "kind" not in json.loads((tmp_path / "scaler.json").read_text())  # as every run before quantile scaling
    loaded = load_scaler(tmp_path / "scaler.json")
    assert isinstance(loaded, FeatureScaler)
    np.testing.assert_array_equal(loaded.transform(other), scaler.transform(other))


def test_a_quantile_run_scales_with_train_quantiles_and_predicts_through_its_saved_file(
    tmp_path, make_config, write_feature_table
):
    csv = write_feature_table(tmp_path / "table.csv", ["blues", "jazz", "rock"], rows_per_class=5)
    cfg = make_config(
        tmp_path,
        "name=quantile",
        f"output_dir={tmp_path / 'runs'}",
        "data.source=table",
        f"data.csv={csv}",
        "model.mlp.hidden_layers=0",
        "model.mlp.scaler=quantile",
        "train.epochs=1",
    )
    metrics = train(cfg, tmp_path / "runs" / "quantile", verbose=0, eval_splits=("valid",))
    run = RunDir(tmp_path / "runs" / "quantile")
    assert isinstance(run.scaler, QuantileScaler)
    table = pd.read_csv(csv)
    train_rows = table[table.split == "train"][run.scaler.columns].to_numpy()
    sklearn = QuantileTransformer(n_quantiles=len(train_rows), output_distribution="normal").fit(train_rows)
    np.testing.assert_array_equal(run.scaler.quantiles, sklearn.quantiles_)  # the 9 train rows, not valid or test

    probs = run.load_model().predict(sklearn.transform(table[run.scaler.columns].to_numpy()), verbose=0)
    tracks, predicted, _ = ensemble([run], [csv])
    np.testing.assert_allclose(predicted, calibrated(probs, run.temperature), rtol=1e-5, atol=1e-6)
    valid = (table.split == "valid").to_numpy()
    labels = table.label[valid].map({c: i for i, c in enumerate(run.classes)}).to_numpy()
    accuracy = float(np.mean(probs[valid].argmax(axis=1) == labels))
    assert metrics["splits"]["valid"]["segment"]["accuracy"] == pytest.approx(accuracy)
