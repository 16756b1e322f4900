"""Shared start-up of every stage script: validated params, or one clear line and a non-zero exit."""
import sys

from pipeline.params import Params, ParamsError, load


def start() -> Params:
    """Validate params.yaml before any work; a bad key exits with one clear line."""
    try:
        return load("params.yaml")
    except ParamsError as err:
        sys.exit(f"params.yaml: {err}")
