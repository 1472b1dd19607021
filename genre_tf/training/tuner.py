"""KerasTuner search over a config's hyperparameters; the objective is the valid split only.

Every trial is a run of `train` (the same model builders, phases and boundary cache) evaluated on
the valid split alone; the test split is never seen. Writes `tuning/<name>/`: trials.csv and
trials.md (one row per trial: hyperparameters, objective, epochs, seconds, peak memory), best.yaml
(the best trial as a config: `python -m genre_tf.train --config tuning/<name>/best.yaml`), and one
run directory per trial under trials/ (TensorBoard: `tensorboard --logdir tuning/<name>`, HParams
tab). Started again, a search continues: finished trials are kept and an interrupted one resumes.
Trials never refit (valid judges them, and a refitted model trained on valid); best.yaml keeps the config's
`train.refit`, so training the best config refits it when asked to.

Distributed search (KerasTuner chief / worker mode): run the same command on every machine with
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT pointing at the chief, and KERASTUNER_TUNER_ID set
to `chief` on the chief and to a unique `tuner0`, `tuner1`, ... on each worker. The chief hands out
trials and writes the summary; the workers train.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
import pandas as pd
import yaml

from genre_tf.config import Config, ConfigError, config_from_dict, save_config, set_key, to_dict
from genre_tf.evaluation.compare import to_markdown
from genre_tf.run import RunDir

KINDS = ("int", "float", "choice", "bool")
# Keys that change what the examples are; a search holds them fixed so all trials share one dataset.
FIXED_PREFIXES = ("data.", "audio.", "features.", "mel.", "cache.", "model.kind", "model.level", "seed")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a config key and how KerasTuner samples it."""

    key: str
    kind: str
    values: Any
    step: float | None = None
    sampling: str = "linear"

    def sample(self, hp) -> Any:
        if self.kind == "int":
            return hp.Int(self.key, *self.values, step=int(self.step or 1), sampling=self.sampling)
        if self.kind == "float":
            return hp.Float(self.key, *self.values, step=self.step, sampling=self.sampling)
        if self.kind == "choice":
            return hp.Choice(self.key, self.values)
        return hp.Boolean(self.key)


def read_space(path: Path, cfg: Config) -> list[Param]:
    """Parse and check a search space file against the config it will modify."""
    if not Path(path).is_file():
        raise ConfigError("--space", f"file does not exist: {path}")
    entries = yaml.safe_load(Path(path).read_text()) or {}
    params = []
    for key, spec in entries.items():
        if key.startswith(FIXED_PREFIXES):
            raise ConfigError(key, "cannot be searched: it changes the examples every trial shares")
        if key == "train.refit":
            raise ConfigError(key, "cannot be searched: trials are judged on valid, which a refit trains on")
        kinds = [k for k in KINDS if isinstance(spec, dict) and k in spec]
        if len(kinds) != 1:
            raise ConfigError(key, f"give exactly one of {', '.join(KINDS)}, e.g. {{int: [1, 4]}}")
        kind = kinds[0]
        values = spec[kind]
        if kind in ("int", "float") and not (isinstance(values, list) and len(values) == 2):
            raise ConfigError(key, f"{kind} needs [min, max], got {values!r}")
        param = Param(key, kind, values, spec.get("step"), spec.get("sampling", "linear"))
        for value in _extremes(param):  # every value the tuner can pick must make a valid config
            with_values(cfg, {key: value})
        params.append(param)
    return params


def _extremes(param: Param) -> list:
    if param.kind == "choice":
        return list(param.values)
    return [False, True] if param.kind == "bool" else list(param.values)


def with_values(cfg: Config, values: dict) -> Config:
    """The config with some keys (`model.mlp.units`, ...) set, validated again."""
    plain = to_dict(cfg)
    for key, value in values.items():
        set_key(plain, key, value)
    return config_from_dict(plain)


def trial_config(cfg: Config, params: list[Param], hp, name: str) -> Config:
    values = {p.key: p.sample(hp) for p in params}
    if "tuner/epochs" in hp.values:  # Hyperband decides each trial's budget
        values["train.epochs"] = hp.values["tuner/epochs"]
    values["name"] = name
    return with_values(cfg, values)


def objective_of(cfg: Config) -> tuple[str, str]:
    return cfg.train.monitor, "max" if cfg.train.monitor == "val_accuracy" else "min"


def trial_dir(out_dir: Path, trial_id: str) -> Path:
    return out_dir / "trials" / f"trial_{trial_id}"


# Runs `python -m genre_tf.train` in a child that the kernel kills when the tuner dies (Linux
# PR_SET_PDEATHSIG), so a restarted search never races an orphaned trial. It is set after exec,
# in the child itself: a preexec_fn in the threaded tuner (gRPC, TensorFlow) can abort the child.
TRAIN_DYING_WITH_PARENT = """
import ctypes, os, runpy, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    if os.getppid() != int(os.environ["GENRE_TF_TUNER_PID"]):
        sys.exit("the tuner that started this trial is gone")
runpy.run_module("genre_tf.train", run_name="__main__", alter_sys=True)
"""


def run_trial_process(trial_cfg: Config, run_dir: Path) -> dict:
    """Train one trial in a child process; returns its peak memory and time.

    Keras' clear_session does not give back everything a fit holds (traced functions stay cached,
    a few MB per trial), so each trial runs in a process of its own: the tuner's memory stays flat
    however many trials run, and a trial's peak memory is measured on its own.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "trial_config.yaml"
    save_config(trial_cfg, config)
    command = [sys.executable, "-c", TRAIN_DYING_WITH_PARENT, "--config", str(config), "--evaluate", "valid", "--quiet"]
    started = time.perf_counter()
    env = {**os.environ, "GENRE_TF_TUNER_PID": str(os.getpid())}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(output[-4000:] if proc.returncode else "\n".join(line for line in output.splitlines() if "phase" in line))
    if proc.returncode:
        raise RuntimeError(f"trial {run_dir.name} failed (exit {proc.returncode}); its output is above")
    record = {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "tuner_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    (run_dir / "trial.yaml").write_text(yaml.safe_dump(record))
    return record


def make_tuner(kind: str, cfg: Config, params: list[Param], out_dir: Path, max_trials: int):
    """A KerasTuner tuner whose trials are `train` runs of the trial's config, one process each."""

    metric, direction = objective_of(cfg)
    base = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}[kind]

    class ConfigTuner(base):
        def run_trial(self, trial, *args, **kwargs):
            run_dir = trial_dir(out_dir, trial.trial_id)
            trial_cfg = trial_config(cfg, params, trial.hyperparameters, run_dir.name)
            trial_cfg.output_dir = run_dir.parent
            trial_cfg.train.refit = False  # valid judges the trial's first fit; a refit would be time lost
            run_trial_process(trial_cfg, run_dir)
            history = [h[metric] for h in RunDir(run_dir).history()]
            return {metric: max(history) if direction == "max" else min(history)}

    space = kt.HyperParameters()
    for param in params:  # declared up front: the oracle samples the whole space from the first trial on
        param.sample(space)
    options = {"objective": kt.Objective(metric, direction), "directory": str(out_dir), "project_name": "kt"}
    options.update(seed=cfg.seed, hyperparameters=space)
    if kind == "hyperband":
        return ConfigTuner(hypermodel=None, max_epochs=cfg.train.epochs, overwrite=False, **options)
    return ConfigTuner(hypermodel=None, max_trials=max_trials, overwrite=False, **options)


def summarise(tuner, cfg: Config, params: list[Param], out_dir: Path):
    """trials.csv / trials.md, one row per finished trial, best first; best.yaml from the best trial."""

    metric, direction = objective_of(cfg)
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.score is None:
            continue
        row = {"trial": trial.trial_id, "status": str(trial.status), metric: trial.score}
        row.update({p.key: trial.hyperparameters.values.get(p.key) for p in params})
        run = trial_dir(out_dir, trial.trial_id)
        if (run / "trial.yaml").is_file():
            row["epochs"] = len(RunDir(run).history())
            row.update(yaml.safe_load((run / "trial.yaml").read_text()))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(metric, ascending=direction == "min").reset_index(drop=True)
    table.to_csv(out_dir / "trials.csv", index=False)

    (out_dir / "trials.md").write_text(to_markdown(table) + "\n")
    best = tuner.oracle.get_best_trials(1)[0]
    best_cfg = trial_config(cfg, params, best.hyperparameters, f"{out_dir.name}_best")
    save_config(best_cfg, out_dir / "best.yaml")
    return table
