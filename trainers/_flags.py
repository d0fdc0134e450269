"""Flag parsers shared by the scripts in trainers/, free of TensorFlow imports.

Importing anything under tfp_vae loads TensorFlow (seconds); these let a script reject bad flags
before that. The scripts run as `python trainers/NAME.py`, so this folder is on sys.path.
"""
import argparse

# The same names as tfp_vae.data.SPLITS, spelled out so no tfp_vae import is needed.
SPLITS = ("test", "validation", "train")


def at_least_one(flag: str):
    """argparse type: an integer >= 1; errors name `flag`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {value}")
        return value
    return parse
