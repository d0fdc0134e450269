"""The keras-tuner search space over a tfp_vae Config: `VAEHyperModel` and `default_ranges`.

    from tfp_vae import hypermodel
    space = hypermodel.VAEHyperModel(tfp_vae.Config(), fixed={"architecture": "mlp"},
                                     ranges={"latent_dim": [8, 16, 32]})
    config = space.trial_config(hp)     # a tfp_vae.Config for one trial's hyperparameters

The tuners that run it are in `tfp_vae.tuning` (which re-exports these names).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow and keras_tuner)

import math
from typing import Iterable, Mapping, Optional

import keras_tuner
import numpy as np

from tfp_vae import data as data_lib
from tfp_vae import training
from tfp_vae.config import ARCHITECTURES, Config

__all__ = ["HP_NAMES", "SEARCHABLE", "VAEHyperModel", "default_ranges"]

# Config fields the search space covers (model.* and training.*).
SEARCHABLE = ("architecture", "latent_dim", "hidden_units", "conv_filters", "learning_rate",
              "beta", "warmup_epochs")
# Names of the keras-tuner hyperparameters. hidden_units and conv_filters are searched as a depth
# and a first width (MLP widths halve per layer, conv filters double), or, when `ranges` lists
# them, as a choice among whole tuples.
HP_NAMES = ("architecture", "latent_dim", "mlp_layers", "mlp_units", "conv_layers",
            "conv_base_filters", "learning_rate", "beta", "warmup_epochs")
_PARTS = {"hidden_units": ("mlp_layers", "mlp_units"),
          "conv_filters": ("conv_layers", "conv_base_filters")}
_LOG_SCALE = {"latent_dim", "mlp_units", "conv_base_filters", "learning_rate", "beta"}
_INTEGER = {"latent_dim", "mlp_layers", "mlp_units", "conv_layers", "conv_base_filters"}


def _max_conv_layers(image_shape) -> int:
    height, width, _ = image_shape
    layers = 0
    while layers < 3 and height % 2 ** (layers + 1) == 0 and width % 2 ** (layers + 1) == 0:
        layers += 1
    return layers


def default_ranges(config: Config) -> dict:
    """The default search space for `config` (whose model.image_shape must be the data's)."""
    conv_layers = _max_conv_layers(config.model.image_shape)
    # Only what the base config allows: gated units are MLP-only, and a two-level model needs
    # latent_dim > top_latent_dim.
    latent_dims = [d for d in (2, 4, 8, 16, 32, 64) if d > config.model.top_latent_dim]
    return {
        "architecture": ["mlp", "conv"] if conv_layers and not config.model.gated else ["mlp"],
        "latent_dim": latent_dims or [2 * config.model.top_latent_dim],
        "mlp_layers": (1, 3),
        "mlp_units": [64, 128, 256, 512, 1024],
        "conv_layers": (1, max(1, conv_layers)),
        "conv_base_filters": [16, 32, 64],
        "learning_rate": (1e-4, 3e-3),
        "beta": (0.5, 2.0),
        # Warm-up is only worth searching up to about half of a trial's training.
        "warmup_epochs": (0.0, max(0.5, min(5.0, config.training.epochs / 2))),
    }


def _encode_tuple(values) -> str:
    return ",".join(str(int(v)) for v in values)


def _decode_tuple(text) -> tuple:
    if isinstance(text, (int, np.integer)):
        return (int(text),)
    return tuple(int(part) for part in str(text).split(",") if part.strip())


def _funnel(units: int, layers: int) -> tuple:
    return tuple(max(1, int(units) // 2 ** i) for i in range(int(layers)))


def _doubling(filters: int, layers: int) -> tuple:
    return tuple(int(filters) * 2 ** i for i in range(int(layers)))


class VAEHyperModel(keras_tuner.HyperModel):
    """The VAE search space over a base Config; each trial is that Config with searched values.

    Args:
      config: the base Config: data, and every value that is not searched.
      search: Config fields to search (default: all of SEARCHABLE); the others keep the base
        config's values (recorded as Fixed hyperparameters, so summaries show whole configs).
      fixed: values to pin, by Config field (SEARCHABLE: e.g. {"latent_dim": 4,
        "hidden_units": (32,)}) or by hyperparameter name (HP_NAMES: e.g. {"mlp_layers": 2}).
      ranges: search ranges by hyperparameter name, replacing `default_ranges`: a list is a choice
        ({"latent_dim": [8, 16]}); a pair (low, high) is a range, log-scaled for latent_dim, widths,
        learning_rate and beta ({"learning_rate": (1e-4, 1e-2)}). "hidden_units" and
        "conv_filters" take a list of tuples to choose among ({"hidden_units": [(64,), (128, 64)]}).
    """

    def __init__(self, config: Optional[Config] = None, *, search: Optional[Iterable[str]] = None,
                 fixed: Optional[Mapping] = None, ranges: Optional[Mapping] = None,
                 name: str = "tfp_vae"):
        super().__init__(name=name, tunable=True)
        config = config or Config()
        if getattr(config.training, "strategy", "default") != "default":
            raise ValueError("each trial trains on one device: set training.strategy to 'default' and "
                             "pass a tf.distribute strategy to the tuner (distribution_strategy=) instead.")
        self.base_config = config.replace(model={"image_shape": data_lib.image_shape(config.data)})
        self.search = tuple(SEARCHABLE if search is None else search)
        self.fixed = dict(fixed or {})
        self.ranges = dict(ranges or {})
        self._steps_per_epoch = None
        self._check_arguments()
        spaces = default_ranges(self.base_config)
        spaces.update(self.ranges)
        self._spaces = spaces
        # Pinned values, and every value the search can reach, must make valid Configs: fail
        # now, not as failed trials once training has started.
        self.trial_config(keras_tuner.HyperParameters())
        self._check_reachable_values()

    # Construction-time validation: every mistake named before any training starts.

    def _check_arguments(self):
        training = self.base_config.training
        if training.initial_weights:
            raise ValueError("training.initial_weights (--initial-weights) is not supported in a search (trials start "
                             "from scratch); fine-tune the best trial's config with trainers/train.py instead.")
        searched = [name for name in ("beta", "warmup_epochs") if name in self.search and name not in self.fixed]
        if training.importance_samples > 1 and searched:
            raise ValueError(f"importance_samples {training.importance_samples} trains on the importance-weighted "
                             f"bound, which has no KL term for {' or '.join(searched)} to act on: leave "
                             f"{' and '.join(searched)} out of --search, or use --importance-samples 1.")
        unknown = [name for name in self.search if name not in SEARCHABLE]
        if unknown:
            raise ValueError(f"cannot search {unknown}: searchable config fields are {', '.join(SEARCHABLE)}.")
        unknown = [name for name in self.fixed if name not in SEARCHABLE and name not in HP_NAMES]
        if unknown:
            raise ValueError(f"cannot fix {unknown}: use config fields ({', '.join(SEARCHABLE)}) or "
                             f"hyperparameters ({', '.join(HP_NAMES)}).")
        rangeable = set(HP_NAMES) | set(_PARTS)
        unknown = [name for name in self.ranges if name not in rangeable]
        if unknown:
            raise ValueError(f"no range for {unknown}: ranges are by hyperparameter "
                             f"({', '.join(sorted(rangeable))}).")
        for name in self.ranges:
            field = next((field for field, parts in _PARTS.items() if name in parts), name)
            if field not in self.search or field in self.fixed:
                raise ValueError(f"a range is given for {name}, but {field} is "
                                 f"{'fixed' if field in self.fixed else 'not searched'}.")
        both = sorted(set(self.fixed) & set(self.ranges))
        if both:
            raise ValueError(f"{both} both fixed and given a range: drop one of the two.")
        for name, spec in self.ranges.items():
            self._check_range(name, spec)
        for name, value in self.fixed.items():
            if name in _PARTS:
                self._normalised_fixed(name)
            elif name == "architecture" and value not in ARCHITECTURES:
                raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {value!r}.")
        conv_possible = _max_conv_layers(self.base_config.model.image_shape)
        low_high = self.ranges.get("conv_layers")
        if isinstance(low_high, tuple) and low_high[1] > conv_possible:
            raise ValueError(f"conv_layers up to {low_high[1]} does not fit images of shape "
                             f"{self.base_config.model.image_shape}: at most {conv_possible} "
                             "stride-2 layers divide height and width.")

    def _check_range(self, name, spec):
        if isinstance(spec, list):
            if not spec:
                raise ValueError(f"range of {name} is an empty list: give at least one value.")
            if name == "architecture" and any(value not in ARCHITECTURES for value in spec):
                raise ValueError(f"architecture choices must be among {', '.join(ARCHITECTURES)}; got {spec!r}.")
            if name in _PARTS:
                for value in spec:
                    if not _decode_tuple(_encode_tuple(value) if not isinstance(value, str) else value):
                        raise ValueError(f"{name} choices must be non-empty tuples of widths; got {value!r}.")
            return
        if isinstance(spec, tuple) and len(spec) == 2 and name not in _PARTS and name != "architecture":
            low, high = spec
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= high):
                raise ValueError(f"range of {name} must be (low, high) with low <= high; got {spec!r}.")
            if name in _LOG_SCALE and low <= 0:
                raise ValueError(f"range of {name} is log-scaled: low must be > 0; got {spec!r}.")
            if name in _INTEGER and (int(low) != low or int(high) != high or low < 1):
                raise ValueError(f"range of {name} must be positive integers; got {spec!r}.")
            return
        raise ValueError(f"range of {name} must be a list of choices or a (low, high) pair; got {spec!r}.")

    def _check_reachable_values(self):
        """Builds the Config at every choice and at both ends of every range in use, the other
        hyperparameters at their defaults, and names the first value the Config rejects."""
        owner = {name: architecture for architecture, field in (("mlp", "hidden_units"), ("conv", "conv_filters"))
                 for name in (field,) + _PARTS[field]}
        pinned_architecture = self._pinned("architecture")
        architectures = [pinned_architecture] if pinned_architecture is not None else self._spaces["architecture"]
        for name, spec in self._spaces.items():
            field = next((field for field, parts in _PARTS.items() if name in parts), name)
            if (self._pinned(name) is not None or field in self.fixed or field not in self.search
                    or name in owner and owner[name] not in architectures):
                continue  # pinned (checked above), or unreachable
            if field != name and field in self.ranges:
                continue  # a part of a tuple field that is searched as a choice of whole tuples
            values = list(spec) if isinstance(spec, list) else [int(v) if name in _INTEGER else v for v in spec]
            for value in values:
                hp = keras_tuner.HyperParameters()
                # keras-tuner keeps a value already present when the hyperparameter is declared.
                hp.values[name] = _encode_tuple(value) if name in _PARTS and not isinstance(value, str) else value
                if name in owner:
                    hp.values["architecture"] = owner[name]
                try:
                    self.trial_config(hp)
                except ValueError as error:
                    raise ValueError(f"{name} = {value!r} in the search space does not make a valid "
                                     f"config: {error} Change the range of {name}.") from None

    def _normalised_fixed(self, name):
        value = self.fixed[name]
        return _encode_tuple(_decode_tuple(value) if isinstance(value, str) else value)

    # The search space.

    def _pinned(self, name):
        """The pinned value of hyperparameter `name`, or None when it is searched."""
        if name in self.fixed:
            return self.fixed[name]
        if name in SEARCHABLE and name not in self.search:  # not searched: the base config's value
            section = self.base_config.model if name in ("architecture", "latent_dim") else self.base_config.training
            return getattr(section, name)
        return None

    def _declare(self, hp, name, default):
        """Declares hyperparameter `name` (or Fixed when pinned) and returns its value."""
        pinned = self._pinned(name)
        if pinned is not None:
            return hp.Fixed(name, pinned)
        spec = self._spaces[name]
        if isinstance(spec, list):
            return hp.Choice(name, spec, default=default if default in spec else None)
        low, high = spec
        sampling = "log" if name in _LOG_SCALE else "linear"
        if name in _INTEGER:
            low, high = int(low), int(high)
            inside = isinstance(default, int) and low <= default <= high
            if low == high:
                return hp.Fixed(name, low)
            return hp.Int(name, low, high, sampling=sampling, default=default if inside else None)
        inside = isinstance(default, (int, float)) and low <= default <= high
        return hp.Float(name, float(low), float(high), sampling=sampling,
                        default=float(default) if inside else None)

    def _tuple(self, hp, field, default):
        """hidden_units or conv_filters: pinned tuple, choice of tuples, or depth x first width."""
        if field in self.fixed or field not in self.search:
            value = self._normalised_fixed(field) if field in self.fixed else _encode_tuple(default)
            return _decode_tuple(hp.Fixed(field, value))
        if field in self.ranges:
            choices = [value if isinstance(value, str) else _encode_tuple(value) for value in self.ranges[field]]
            encoded = _encode_tuple(default)
            return _decode_tuple(hp.Choice(field, choices, default=encoded if encoded in choices else None))
        layers_name, width_name = _PARTS[field]
        layers = self._declare(hp, layers_name, len(default))
        width = self._declare(hp, width_name, default[0])
        return (_funnel if field == "hidden_units" else _doubling)(width, layers)

    def trial_config(self, hp: keras_tuner.HyperParameters) -> Config:
        """The Config of one point of the space (declaring its hyperparameters on `hp`)."""
        model, train = self.base_config.model, self.base_config.training
        architecture = self._declare(hp, "architecture", model.architecture)
        latent_dim = self._declare(hp, "latent_dim", model.latent_dim)
        model_updates = {"architecture": architecture, "latent_dim": int(latent_dim)}
        pinned = self._pinned("architecture")
        possible = [pinned] if pinned is not None else self._spaces["architecture"]
        # Scopes only for reachable architectures: keras-tuner builds a model for each scope
        # while it discovers the space, and lists every declared hyperparameter.
        if "mlp" in possible:
            with hp.conditional_scope("architecture", ["mlp"]):
                if architecture == "mlp":
                    model_updates["hidden_units"] = self._tuple(hp, "hidden_units", model.hidden_units)
        if "conv" in possible:
            with hp.conditional_scope("architecture", ["conv"]):
                if architecture == "conv":
                    model_updates["conv_filters"] = self._tuple(hp, "conv_filters", model.conv_filters)
        training_updates = {
            "learning_rate": float(self._declare(hp, "learning_rate", train.learning_rate)),
            "beta": float(self._declare(hp, "beta", train.beta)),
            "warmup_epochs": float(self._declare(hp, "warmup_epochs", train.warmup_epochs)),
        }
        return self.base_config.replace(model=model_updates, training=training_updates)

    def steps_per_epoch(self) -> int:
        if self._steps_per_epoch is None:
            examples = data_lib.num_examples(self.base_config.data, "train")
            self._steps_per_epoch = math.ceil(examples / self.base_config.training.batch_size)
        return self._steps_per_epoch

    def build(self, hp):
        """A compiled tfp_vae.VAE for `hp` (keras-tuner's HyperModel API; the tuners use trial_config)."""
        return training.build_model(self.trial_config(hp), self.steps_per_epoch())

    def spec(self) -> dict:
        """Everything that defines the space, as JSON: a restart must see the same."""
        def plain(value):
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value
        return {"base_config": self.base_config.to_dict(), "search": list(self.search),
                "fixed": {k: plain(v) for k, v in sorted(self.fixed.items())},
                "ranges": {k: plain(v) for k, v in sorted(self.ranges.items())}}
