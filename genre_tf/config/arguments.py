"""The config's command-line arguments (--config, --set) shared by every command, and its one-line errors."""

from __future__ import annotations

import argparse
import sys
import typing

from genre_tf.config.loading import load_config
from genre_tf.config.schema import Config, ConfigError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="e.g. train.epochs=3"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named on the command line; on error print one line and exit 2."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as err:
        exit_config_error(err)


def exit_config_error(err: ConfigError) -> typing.NoReturn:
    print(f"config error: {err}", file=sys.stderr)
    raise SystemExit(2)
