"""The musicnn tagger's own tags of a run's tracks (`predict --tags`, `tag --write`): from the tags its graph gave
each segment, or from the tagger on cached patches; per track the top k, segments averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.evaluation.pooling import aggregate_tracks
from genre_tf.evaluation.predictions import stacked
from genre_tf.inputs.examples import Examples, split_data
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.models import musicnn
from genre_tf.run import RunDir
from genre_tf.serving.audio_graph import AudioGraph
from genre_tf.serving.predict import TAGS, audio_index, check_tagged, graph_examples, run_workers, tagger


def track_tags(run: RunDir, examples, k: int = 5, model=None) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per track, the top-k (tag, probability) of the run's musicnn tagger, segments averaged: the tags its graph
    gave the examples (`tag_examples`), or those of the tagger (`model`, else built) on cached patches."""
    check_tagged(run)
    cfg = run.config
    names = musicnn.TAGS[cfg.model.transfer.backbone]
    if TAGS in examples.frame:
        track_ids, scores = examples.frame["track_id"].to_numpy(), stacked(examples.frame[TAGS], len(names))
    else:
        data = split_data(examples.frame, InputRecipe.of(cfg), run.classes, None)
        track_ids, scores = (
            data.track_ids,
            (model or tagger(run)).predict(data.batches(cfg.train.batch_size), verbose=0),
        )
    tracks, mean, _ = aggregate_tracks(track_ids, scores)
    return [
        (track, [(names[i], float(p[i])) for i in np.argsort(p)[::-1][:k]])
        for track, p in zip(tracks, mean, strict=True)
    ]


def tag_examples(run: RunDir, inputs: list[Path]) -> Examples:
    """The musicnn run's examples of the audio inputs with its tagger's tags (TAGS), from its graph; SystemExit for a
    run without a tagger."""
    graph = AudioGraph(run, run.load_model(), tagger(run))
    return graph_examples([run], [graph], audio_index(inputs), run_workers([run]))[0]


def write_tags(output: Path, run: RunDir, examples, k: int = 5) -> Path:
    """`results.tags.csv` beside `results.csv`: each track's id and its top-k musicnn tags (`tag p; tag p; ...`)."""
    path = output.with_suffix(".tags.csv")
    rows = [(track, "; ".join(f"{tag} {p:.3f}" for tag, p in tags)) for track, tags in track_tags(run, examples, k)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["id", "tags"]).to_csv(path, index=False)
    return path


def tag_lines(run: RunDir, examples, k: int = 5) -> list[str]:
    """Per track, the top-k tags of the run's musicnn backbone (its own pretrained tagger), segments averaged."""
    name = run.config.model.transfer.backbone
    return [
        f"{track}: {name} tags " + ", ".join(f"{tag} {p:.2f}" for tag, p in tags)
        for track, tags in track_tags(run, examples, k)
    ]
