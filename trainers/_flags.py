"""Flag parsers shared by the scripts in trainers/, free of TensorFlow imports.

Importing anything under tfp_vae loads TensorFlow (seconds); these let a script reject bad flags
before that. The scripts run as `python trainers/NAME.py`, so this folder is on sys.path.
"""
import argparse

# The same names as tfp_vae.data.SPLITS, spelled out so no tfp_vae import is needed.
SPLITS = ("test", "validation", "train")
# The network body's compute dtype that the benchmarks compare: float32, or mixed precision with a
# float16 / bfloat16 body (tfp_vae.config.MIXED_PRECISION_DTYPES).
PRECISIONS = ("float32", "float16", "bfloat16")


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


def comma_list(parse):
    """argparse type: a comma-separated list, each item through `parse` (ValueError or KeyError
    for a bad item); the benchmarks compare the variants listed."""
    def parse_list(text):
        try:
            values = [parse(part.strip()) for part in text.split(",") if part.strip()]
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(f"cannot parse {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        return values
    return parse_list


def yes_no(text: str) -> bool:
    """yes/no (also on/off, true/false), for flags that list variants to compare."""
    return {"no": False, "off": False, "false": False, "yes": True, "on": True, "true": True}[text.lower()]


def one_yes_no(flag: str):
    """argparse type: a single yes/no (as `yes_no`); errors name `flag` and the accepted words."""
    def parse(text):
        try:
            return yes_no(text)
        except KeyError:
            raise argparse.ArgumentTypeError(f"{flag} must be yes or no, got {text!r}") from None
    return parse


def precision_choice(text: str) -> str:
    """One of PRECISIONS (ValueError otherwise: `comma_list` turns it into a flag error)."""
    if text not in PRECISIONS:
        raise ValueError(text)
    return text


def precision_fields(name: str) -> dict:
    """The TrainingConfig fields that give the network body the compute dtype `name` (PRECISIONS)."""
    if name == "float32":
        return {"mixed_precision": False, "mixed_precision_dtype": "float16"}  # the dtype field's default
    return {"mixed_precision": True, "mixed_precision_dtype": name}
