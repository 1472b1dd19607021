"""Feature-table scalers (`model.mlp.scaler`): fitted on a run's training rows only, saved with the run as JSON.

"standard" is `FeatureScaler` (mean 0, std 1). "quantile" is rank-Gauss: each column goes through its
empirical quantiles onto a standard normal (sklearn's QuantileTransformer, output_distribution="normal"), which
tames the heavy tails and skew of spectral features. Its JSON holds the fitted quantiles and their references, not a
pickle, so a saved run loads in any Python and sklearn version and predicts exactly as it was evaluated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import QuantileTransformer

MAX_QUANTILES = 1000  # sklearn's default; fewer when the training rows are fewer


def _check_columns(table: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"feature table lacks column(s) {', '.join(missing[:5])}")


@dataclass
class FeatureScaler:
    """Standardisation fitted on the train split only, saved with the run so prediction matches."""

    mean: np.ndarray
    std: np.ndarray
    columns: list[str]

    @classmethod
    def fit(cls, table: pd.DataFrame, columns: list[str]) -> FeatureScaler:
        values = table[columns].to_numpy(np.float64)
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0), list(columns))

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        _check_columns(table, self.columns)
        return ((table[self.columns].to_numpy(np.float64) - self.mean) / self.std).astype(np.float32)

    def save(self, path: Path) -> None:
        payload = {"columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist()}
        Path(path).write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: Path) -> FeatureScaler:
        payload = json.loads(Path(path).read_text())
        return cls(np.array(payload["mean"]), np.array(payload["std"]), payload["columns"])


@dataclass
class QuantileScaler:
    """Rank-Gauss scaling: per column, its quantiles on the training rows map onto the normal distribution."""

    quantiles: np.ndarray  # (n_quantiles, n_columns), each column ascending
    references: np.ndarray  # (n_quantiles,): the probability each quantile stands for, 0..1
    columns: list[str]

    @classmethod
    def fit(cls, table: pd.DataFrame, columns: list[str], seed: int = 0) -> QuantileScaler:
        values = table[columns].to_numpy(np.float64)
        transformer = QuantileTransformer(
            n_quantiles=min(MAX_QUANTILES, len(values)),
            output_distribution="normal",
            subsample=len(values),  # every row: no random subsample
            random_state=seed,
        ).fit(values)
        return cls(transformer.quantiles_, transformer.references_, list(columns))

    @cached_property
    def _transformer(self) -> QuantileTransformer:
        """A QuantileTransformer holding the saved quantiles (its documented fitted attributes), as fit left it."""
        transformer = QuantileTransformer(n_quantiles=len(self.references), output_distribution="normal")
        transformer.quantiles_ = np.asarray(self.quantiles, np.float64)
        transformer.references_ = np.asarray(self.references, np.float64)
        transformer.n_quantiles_ = len(self.references)
        transformer.n_features_in_ = len(self.columns)
        return transformer

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        _check_columns(table, self.columns)
        return self._transformer.transform(table[self.columns].to_numpy(np.float64)).astype(np.float32)

    def save(self, path: Path) -> None:
        payload = {
            "kind": "quantile",
            "columns": self.columns,
            "references": self.references.tolist(),
            "quantiles": self.quantiles.T.tolist(),  # one list per column
        }
        Path(path).write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: Path) -> QuantileScaler:
        payload = json.loads(Path(path).read_text())
        return cls(np.array(payload["quantiles"]).T, np.array(payload["references"]), payload["columns"])


Scaler = FeatureScaler | QuantileScaler


def fit_scaler(kind: str, table: pd.DataFrame, columns: list[str], seed: int = 0) -> Scaler:
    """The `model.mlp.scaler` scaler fitted on `table` (a run's training rows)."""
    if kind == "quantile":
        return QuantileScaler.fit(table, columns, seed)
    return FeatureScaler.fit(table, columns)


def load_scaler(path: Path) -> Scaler:
    """A saved scaler of either kind; files without a kind are standard (every run before quantile scaling)."""
    kind = json.loads(Path(path).read_text()).get("kind", "standard")
    return QuantileScaler.load(path) if kind == "quantile" else FeatureScaler.load(path)
