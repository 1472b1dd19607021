"""An ensemble run exported as one artefact: every member's front end, model and pooling in one graph, and the
weighted mean of their track probabilities (evaluation.pooling.weighted_mean)."""

from __future__ import annotations

import tensorflow as tf

from genre_tf.evaluation.pooling import track_pooling, weighted_mean
from genre_tf.run import RunDir
from genre_tf.serving.frontend import (
    EXPORT_RATES,
    AudioFrontend,
    audio_frontend,
    base_metadata,
    constant_outputs,
    cut_segments,
    graph_calibrated,
    graph_track_probabilities,
    input_key,
    other_rates,
    rate_functions,
    rate_signature,
    segments_key,
)


def ensemble_serving_module(run: RunDir, rates: tuple[int, ...] = EXPORT_RATES) -> tuple:
    """(tf.Module, metadata) of an ensemble run, as `serving_module` gives for one run: `serve` takes one waveform
    at the highest rate a member takes and runs every member's in-graph preprocessing (each distinct input once),
    model and pooling (as the member pools alone), then the weighted mean of the members' track probabilities;
    `serve_at` the same from waveforms at each of `rates` (Hz). SystemExit, one line, for a member that cannot run in
    a waveform graph."""

    members = run.members()
    check_waveform_members(members)
    rate = max(member_rate(member) for member in members)
    models = [member.run.load_model() for member in members]
    probes = [track_pooling(member.run) == "logits" for member in members]
    weights = [member.weight for member in members]
    metadata = ensemble_metadata(run, members, rate, rates)
    module = tf.Module()
    module.model_variables = [variable.value for model in models for variable in model.variables]  # see serving_module

    def at_rate(input_rate: int):
        return ensemble_function(members, models, probes, weights, input_rate, metadata)

    module.serve = at_rate(rate)
    module.serve_at = rate_functions(module.serve, rate, at_rate, rates)
    return module, metadata


def ensemble_function(members: list, models: list, probes: list[bool], weights, rate: int, metadata: dict):
    """The tf.function of an ensemble's signature: waveform at `rate` Hz -> every member's input (each distinct one
    once, resampled in the graph to a member's own rate where it differs), model and pooling, and their weighted mean;
    its constant outputs say that rate."""
    keys, frontends = ensemble_frontends(members, rate)
    cut_by = {key: segments_key(member.run.recipe) for key, member in zip(keys, members, strict=True)}
    cutters = {cut_by[key]: frontend for key, frontend in reversed(frontends.items())}  # the first of each
    said = {**metadata, "sample_rate": rate, "input_note": ensemble_note(members, rate, metadata["sample_rate"])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
    def serve(waveform):
        # Each spectrogram's segments once, then each model input from them once (image sizes and channels differ).
        segments = {cut: cut_segments(waveform, frontend) for cut, frontend in cutters.items()}
        inputs = {key: frontend.to_input(segments[cut_by[key]]) for key, frontend in frontends.items()}
        pooled = [
            graph_track_probabilities(model(inputs[key], training=False), probe)
            for model, key, probe in zip(models, keys, probes, strict=True)
        ]
        return {
            "probabilities": graph_calibrated(weighted_mean(pooled, weights), metadata["temperature"]),
            "member_probabilities": tf.stack(pooled),
            **constant_outputs(said),
        }

    return serve


def ensemble_frontends(members: list, rate: int) -> tuple[list[str], dict[str, AudioFrontend]]:
    """(each member's `input_key`, the frontend of each distinct key, the first member's of it): one input per key in
    the graph, every frontend taking waveforms at `rate` Hz (`preprocessing.layers.Resample` brings them to a member's
    own rate)."""
    keys = [input_key(member.run.recipe) for member in members]
    frontends = {}
    for key, member in zip(keys, members, strict=True):
        if key not in frontends:
            frontends[key] = audio_frontend(member.run.recipe, rate)
    return keys, frontends


def check_waveform_members(members: list) -> None:
    """SystemExit, one line, for a table member: its feature rows cannot be made in a waveform graph."""
    for member in members:
        if member.run.recipe.reads_features:
            raise SystemExit(
                f"error: member {member.run.path.name} is a table model ({member.run.config.model.kind}): its feature "
                "rows cannot be made in a waveform graph, so this ensemble cannot be exported"
            )


def member_rate(member) -> int:
    """Hz of the waveform a member's exported model takes alone: the rate its representation is made at."""
    return audio_frontend(member.run.recipe).layout.sample_rate


def ensemble_note(members: list, rate: int, highest: int) -> str:
    """What an ensemble's signature at `rate` Hz takes, and for which members it resamples in the graph (`highest`:
    the rate of its default signature, the highest a member takes)."""
    note = f"mono float32 waveform at {rate} Hz" + (", the highest rate a member takes" if rate == highest else "")
    resampled = [f"{m.run.path.name} ({member_rate(m)} Hz)" for m in members if member_rate(m) != rate]
    if resampled:
        note += (
            f"; resampled in the graph for {', '.join(resampled)} by a windowed sinc (close to, not equal to, the soxr "
            "resampling of predict)"
        )
    return note


def ensemble_metadata(run: RunDir, members: list, rate: int, rates: tuple[int, ...] = ()) -> dict:
    """What an exported ensemble says of itself: its members (model, weight, pooling), the rate its default signature
    takes and the signatures at other `rates`, and how many distinct spectrograms and model inputs its graph makes."""
    return {
        "exported_by": "genre_tf.serving.export",
        "run": run.path.name,
        "model": "ensemble: " + " + ".join(f"{member.run.path.name} {member.weight:.2f}" for member in members),
        "classes": run.classes,
        "temperature": run.temperature,  # the ensemble calibrates its average
        "input": "waveform",
        "input_note": ensemble_note(members, rate, rate),
        "sample_rate": rate,
        "rate_signatures": {rate_signature(other): other for other in rates},
        "members": [
            {
                "name": member.run.path.name,
                "model": base_metadata(member.run)["model"],
                "weight": member.weight,
                "pooling": member.pooling,
                "segment_seconds": member.run.config.audio.segment_seconds,
                "sample_rate": member_rate(member),
            }
            for member in members
        ],
        "inputs": len({input_key(member.run.recipe) for member in members}),
        "spectrograms": len({segments_key(member.run.recipe) for member in members}),
        "track_probabilities": "the weighted mean of the members' track probabilities, each pooled as the member "
        "pools its segments (their mean, or a linear probe's softmax of their mean log-probability)",
    }


def describe_ensemble(metadata: dict) -> list[str]:
    """What a person needs to call an exported ensemble: its input, outputs, members and classes."""
    members = metadata["members"]
    return [
        f"input: waveform, float32 (samples,): {metadata['input_note']}; any length",
        f"outputs: probabilities ({len(metadata['classes'])},) of the track: {metadata['track_probabilities']}; "
        f"member_probabilities ({len(members)}, classes), classes, sample_rate, metadata (JSON)",
        f"members ({metadata['inputs']} distinct inputs from {metadata['spectrograms']} "
        f"spectrogram{'s' if metadata['spectrograms'] != 1 else ''} in the graph): "
        + ", ".join(f"{m['name']} {m['weight']:.2f} ({m['model']})" for m in members),
        *other_rates(metadata, "each member's own rate"),
        f"classes: {', '.join(metadata['classes'])}",
        *(["note: uses TF Select ops (Flex): the interpreter needs the Flex delegate"]
          if metadata.get("tflite_select_ops") else []),
    ]  # fmt: skip
