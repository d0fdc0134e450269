"""Hyperparameter search for tfp_vae VAEs with keras-tuner: random, Bayesian and Hyperband.

    import tfp_vae
    from tfp_vae import tuning

    base = tfp_vae.Config().replace(training={"epochs": 5}, data={"train_examples": 5000})
    hypermodel = tuning.VAEHyperModel(base, fixed={"architecture": "mlp"},
                                      ranges={"latent_dim": [8, 16, 32]})
    tuner = tuning.RandomSearch(hypermodel, max_trials=10, directory="tuning", project_name="fmnist")
    tuner.search()                                  # data from the config; objective val_elbo (max)
    tuner.results_summary()
    model = tuner.get_best_models()[0]              # a trained tfp_vae.VAE
    config = tuner.get_best_configs()[0]            # a tfp_vae.Config: tfp_vae.train(config, ...)

Why not keras-tuner's own trial loop: keras-tuner 1.4.8 binds to Keras 3 when imported, and
`Tuner._try_build` rejects any model that is not a Keras 3 model, so a tf_keras VAE (which
tfp.layers needs) fails with FatalTypeError (upstream keras-tuner issue 1039). The tuners here
override the public extension points instead -- `run_trial` (build, fit, score one trial),
`load_model`/`save_model` (per-trial weights) -- and never hand a tf_keras object to keras-tuner
code that expects Keras 3 (no Keras 3 callbacks, no `_try_build`). Oracles, resumption, the
distributed chief/worker protocol, `get_best_hyperparameters`, `get_best_models` and
`results_summary` are keras-tuner's own.

Each trial folder DIR/PROJECT/trial_ID/ is also a normal run folder: config.json (the trial's
Config), weights/ (the best epoch, written atomically, with optimizer state), metrics.json, next to
keras-tuner's trial.json; so `tfp_vae.load`, trainers/evaluate.py and trainers/export.py accept it.

Scores are reproducible: after every epoch the validation split is scored by `score` with a fixed
seed (one z ~ q(z|x) per example, the same z for the same weights), the best epoch by that score
is kept, and the trial reports that epoch's numbers. `score(tuner.get_best_models()[0], ...)`
gives back the best trial's score exactly.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow and keras_tuner)

import copy
import dataclasses
import glob
import json
import math
import os
import shutil
import time
from typing import Dict, Iterable, Mapping, Optional

import keras_tuner
import numpy as np
import tf_keras

from tfp_vae import data as data_lib
from tfp_vae import training
from tfp_vae.callbacks import StopOnNaN, TrainingDivergedError
from tfp_vae.config import ARCHITECTURES, Config, load_config, save_config
from tfp_vae.model import VAE

__all__ = [
    "BayesianOptimization", "DEFAULT_OBJECTIVE", "Hyperband", "HP_NAMES", "RandomSearch",
    "SCORE_SEED", "SEARCHABLE", "TUNERS", "VAEHyperModel", "VAETunerMixin", "default_ranges",
    "make_objective", "make_tuner", "score",
]

DEFAULT_OBJECTIVE = keras_tuner.Objective("val_elbo", direction="max")
# Seed of the per-epoch validation scoring: fixed, so a score can be recomputed from the weights.
SCORE_SEED = 20240
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
# Metrics that are better when larger; everything else VAE logs (loss, kl) is better smaller.
_MAXIMIZED = ("elbo", "reconstruction")
# Written into the project folder: a restart must search the same space with the same tuner.
SPEC_FILE = "tfp_vae_search.json"


def make_objective(name: str = "val_elbo") -> keras_tuner.Objective:
    """An Objective for one of VAE's logged metrics, with the right direction."""
    metric = name[4:] if name.startswith("val_") else name
    if metric not in VAE.metric_names:
        raise ValueError(f"objective {name!r} is not a metric the VAE logs; use one of "
                         f"{', '.join(n for m in VAE.metric_names for n in (m, 'val_' + m))}.")
    return keras_tuner.Objective(name, direction="max" if metric in _MAXIMIZED else "min")


def _is_distributed_worker() -> bool:
    """A worker of keras-tuner's distributed search (KERASTUNER_* variables, id not 'chief')."""
    return ("KERASTUNER_ORACLE_IP" in os.environ
            and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", ""))


def _max_conv_layers(image_shape) -> int:
    height, width, _ = image_shape
    layers = 0
    while layers < 3 and height % 2 ** (layers + 1) == 0 and width % 2 ** (layers + 1) == 0:
        layers += 1
    return layers


def default_ranges(config: Config) -> dict:
    """The default search space for `config` (whose model.image_shape must be the data's)."""
    conv_layers = _max_conv_layers(config.model.image_shape)
    return {
        "architecture": ["mlp", "conv"] if conv_layers else ["mlp"],
        "latent_dim": [2, 4, 8, 16, 32, 64],
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
        # Pinned values must make valid Configs: fail now, not in the first trial.
        self.trial_config(keras_tuner.HyperParameters())

    # Construction-time validation: every mistake named before any training starts.

    def _check_arguments(self):
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


def score(model: VAE, dataset, seed: int = SCORE_SEED) -> Dict[str, float]:
    """The VAE's metrics on `dataset` with a fixed draw of z ~ q(z|x): the same weights, data and
    seed give the same numbers, in any process. Resets the global random seeds to `seed`."""
    tf_keras.utils.set_random_seed(seed)
    # A fresh trace draws its op seeds from the global seed: the stream restarts at the same place.
    model.test_function = None
    results = model.evaluate(dataset, return_dict=True, verbose=0)
    return {name: float(value) for name, value in results.items()}


class _ScoreAndKeepBest(tf_keras.callbacks.Callback):
    """Each epoch: scores the validation data (seeded), adds val_* to the logs, and writes the
    weights of the best epoch so far to the trial folder, atomically."""

    def __init__(self, objective, validation, trial_dir, verbose):
        super().__init__()
        self.objective = objective
        self.validation = validation
        self.trial_dir = trial_dir
        self.verbose = verbose
        self.best = None
        self.best_epoch = None
        self.best_logs = None
        self.best_optimizer_steps = None
        self.history = []

    def _better(self, value):
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.objective.direction == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.validation is not None:
            logs.update({f"val_{name}": value for name, value in score(self.model, self.validation).items()})
        logs_now = {name: float(value) for name, value in logs.items()}
        if self.objective.name not in logs_now:
            raise ValueError(f"objective {self.objective.name!r} is not among this epoch's metrics "
                             f"{sorted(logs_now)}.")
        value = logs_now[self.objective.name]
        self.history.append({"epoch": epoch + 1, **logs_now})
        if self.verbose:
            shown = ", ".join(f"{name} {logs_now[name]:.3f}" for name in sorted(logs_now) if name.startswith("val_"))
            print(f"  epoch {epoch + 1}: {shown or 'no validation data'}", flush=True)
        if self._better(value):
            self.best, self.best_epoch, self.best_logs = value, epoch, logs_now
            self.best_optimizer_steps = int(self.model.optimizer.iterations.numpy())
            training.save_weights(self.model, self.trial_dir)


class VAETunerMixin:
    """Makes a keras-tuner tuner run tfp_vae VAEs (tf_keras): put it first among the bases.

    Overrides keras-tuner's public extension points -- run_trial, load_model, save_model,
    on_search_begin/on_trial_end -- so keras-tuner never sees a tf_keras model.
    `search(train=None, validation_data=None, *, verbose=1, callbacks=None)`: with no datasets,
    each trial reads the data its Config describes. `callbacks` are tf_keras callbacks, copied per
    trial (a TensorBoard's log_dir gets the trial id appended).
    """

    def _setup_vae_tuner(self, hypermodel, kwargs):
        if not isinstance(hypermodel, VAEHyperModel):
            raise TypeError(f"hypermodel must be a tfp_vae.tuning.VAEHyperModel, got {type(hypermodel).__name__}.")
        for name in ("optimizer", "loss", "metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name}= is not supported: the VAE compiles itself from each trial's Config.")
        if kwargs.get("executions_per_trial", 1) != 1:
            raise ValueError("executions_per_trial must be 1: each trial trains one model, seeded by "
                             "config.training.seed.")
        kwargs.setdefault("seed", 1 + hypermodel.base_config.training.seed % (2 ** 31 - 1))
        if _is_distributed_worker() and kwargs.get("overwrite"):
            # keras-tuner would delete the shared project folder under the chief's feet.
            print("overwrite ignored on a distributed worker: only the chief may start the project over")
            kwargs["overwrite"] = False
        return kwargs

    def _after_init(self):
        self._datasets = {}
        self._trial_started = {}
        self._last_results = {}
        # The chief (or a lone tuner) records the settings before it serves any trial; a worker
        # checks them when it gets its first trial, when the record is sure to be current.
        self._spec_checked = False
        if not _is_distributed_worker():
            self._check_spec()

    def _spec(self) -> dict:
        objective = self.oracle.objective
        return {"tuner": type(self).__name__,
                "objective": {"name": objective.name, "direction": objective.direction},
                **self.hypermodel.spec()}

    def _check_spec(self):
        path = os.path.join(self.project_dir, SPEC_FILE)
        spec = json.loads(json.dumps(self._spec()))
        if os.path.exists(path):
            with open(path) as handle:
                previous = json.load(handle)
            if previous != spec:
                changed = sorted(key for key in set(spec) | set(previous) if spec.get(key) != previous.get(key))
                if _is_distributed_worker():
                    raise keras_tuner.errors.FatalValueError(
                        f"this worker's settings differ from the chief's (changed: {', '.join(changed)}; "
                        f"see {path}): start every worker with the chief's flags.")
                raise ValueError(
                    f"{self.project_dir} holds a search with different settings (changed: "
                    f"{', '.join(changed)}); use another project name or directory, overwrite=True "
                    "(--overwrite), or the same settings to resume it.")
        elif not _is_distributed_worker():
            training.write_json(spec, path)
        self._spec_checked = True

    # Data.

    def _data(self, config, train, validation):
        if train is not None:
            steps = int(train.cardinality())
            if steps < 0:
                if config.training.warmup_epochs > 0:
                    raise ValueError("the training dataset's length is unknown, so a warm-up in epochs "
                                     "cannot be converted to steps: use a dataset of known cardinality.")
                steps = 1
            return train, validation, steps
        key = json.dumps([dataclasses.asdict(config.data), config.training.batch_size, config.training.seed],
                         sort_keys=True)
        if key not in self._datasets:
            self._datasets = {key: data_lib.make_datasets(config)}  # one at a time: they hold data
        datasets = self._datasets[key]
        return datasets.train, datasets.validation, math.ceil(datasets.train_examples / config.training.batch_size)

    # keras-tuner's extension points.

    def run_trial(self, trial, train=None, validation_data=None, *, verbose=1, callbacks=None, **unused):
        if unused:
            raise TypeError(f"unsupported search() arguments {sorted(unused)}: epochs come from the "
                            "Config (or Hyperband), data from the Config or train=/validation_data=.")
        started = time.time()
        if not self._spec_checked:
            self._check_spec()
        hp = trial.hyperparameters
        config = self.hypermodel.trial_config(hp)
        epochs = int(hp.values.get("tuner/epochs", config.training.epochs))
        initial_epoch = int(hp.values.get("tuner/initial_epoch", 0))
        resumed_from = hp.values.get("tuner/trial_id")
        config = config.replace(training={"epochs": epochs})
        trial_dir = self.get_trial_dir(trial.trial_id)
        finished = self._finished_results(trial, trial_dir)
        if finished is not None:
            # The process died after this trial trained but before keras-tuner recorded its end
            # (keras-tuner then queues it again on reload): report the results, do not retrain.
            print(f"[{self.tuner_id}] trial {trial.trial_id} had finished training before a restart: "
                  "reporting its recorded results", flush=True)
            return finished
        # A trial re-run after a crash or kill starts over: drop what the killed run left.
        for leftover in glob.glob(os.path.join(trial_dir, training.WEIGHTS + "*")):
            shutil.rmtree(leftover, ignore_errors=True)  # weights/ and a killed save's staging
        if os.path.exists(os.path.join(trial_dir, "metrics.json")):
            os.remove(os.path.join(trial_dir, "metrics.json"))
        save_config(config, os.path.join(trial_dir, "config.json"))

        tf_keras.backend.clear_session()
        tf_keras.utils.set_random_seed(config.training.seed)
        train, validation, steps_per_epoch = self._data(config, train, validation_data)
        if validation is None and self.oracle.objective.name.startswith("val_"):
            raise keras_tuner.errors.FatalValueError(
                f"objective {self.oracle.objective.name} needs validation data: set "
                "data.validation_examples > 0 (--validation-examples) or pass validation_data=.")
        if self.distribution_strategy is not None:
            with self.distribution_strategy.scope():
                model = training.build_model(config, steps_per_epoch)
        else:
            model = training.build_model(config, steps_per_epoch)
        parameters = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        if self.max_model_size and parameters > self.max_model_size:
            raise keras_tuner.errors.FailedTrialError(
                f"oversized model: {parameters} parameters > max_model_size {self.max_model_size}.")
        if resumed_from is not None:
            # Hyperband's later rounds continue an earlier trial: its best weights and optimizer
            # state (so Adam's moments and the warm-up step count carry on).
            prefix = os.path.join(self.get_trial_dir(resumed_from), training.WEIGHTS, training.CHECKPOINT_PREFIX)
            model.load_weights(prefix)

        keeper = _ScoreAndKeepBest(self.oracle.objective, validation, trial_dir, verbose)
        all_callbacks = [keeper, StopOnNaN()] + self._copy_callbacks(callbacks, trial)
        try:
            model.fit(train, epochs=epochs, initial_epoch=initial_epoch, callbacks=all_callbacks,
                      verbose=verbose if verbose in (0, 1, 2) else 1)
        except TrainingDivergedError as error:
            if keeper.best is None:
                raise keras_tuner.errors.FailedTrialError(str(error)) from None
            print(f"  trial {trial.trial_id} diverged after its best epoch; keeping epoch "
                  f"{keeper.best_epoch + 1}: {error}", flush=True)
        if keeper.best is None:
            raise keras_tuner.errors.FailedTrialError(
                f"no epoch of trial {trial.trial_id} gave a finite {self.oracle.objective.name}.")

        results = dict(keeper.best_logs)
        metrics = {
            "train": {name: results[name] for name in VAE.metric_names if name in results},
            "validation": {name: results[f"val_{name}"] for name in VAE.metric_names
                           if f"val_{name}" in results},
            "objective": {"name": self.oracle.objective.name, "value": keeper.best},
            "epochs": keeper.best_epoch + 1,  # epochs of training in weights/
            "epochs_run": [initial_epoch + 1, epochs],
            "resumed_from_trial": resumed_from,
            "optimizer_steps": keeper.best_optimizer_steps,
            "parameters": parameters,
            "history": keeper.history,
            "score_seed": SCORE_SEED,
            "tuner_id": self.tuner_id,
            "seconds": time.time() - started,
            "units": "nats per example",
            # What run_trial returned to keras-tuner, for the hyperparameters it ran with.
            "reported": results,
            "hyperparameters": dict(hp.values),
        }
        training.write_json(metrics, os.path.join(trial_dir, "metrics.json"))
        self._last_results[trial.trial_id] = (keeper.best, keeper.best_epoch + 1, epochs, time.time() - started)
        return results

    def _finished_results(self, trial, trial_dir):
        """The results a completed earlier run of this very trial recorded, or None."""
        path = os.path.join(trial_dir, "metrics.json")
        weights = os.path.join(trial_dir, training.WEIGHTS, training.CHECKPOINT_PREFIX + ".index")
        if not (os.path.exists(path) and os.path.exists(weights)):
            return None
        try:
            with open(path) as handle:
                recorded = json.load(handle)
        except (OSError, ValueError):
            return None
        same = json.loads(json.dumps(dict(trial.hyperparameters.values))) == recorded.get("hyperparameters")
        return recorded.get("reported") if same else None

    def _copy_callbacks(self, callbacks, trial):
        copied = []
        for callback in callbacks or []:
            callback = copy.deepcopy(callback)
            if isinstance(callback, tf_keras.callbacks.TensorBoard):
                callback.log_dir = os.path.join(str(callback.log_dir), str(trial.trial_id))
            copied.append(callback)
        return copied

    def save_model(self, trial_id, model, step=0):
        training.save_weights(model, self.get_trial_dir(trial_id))

    def load_model(self, trial):
        """The trained VAE of `trial` (its best epoch), rebuilt from the trial folder."""
        return training.load(self.get_trial_dir(trial.trial_id))

    def on_search_begin(self):
        super().on_search_begin()
        # Write the tuner state now, not only after the first trial: a kill during the first
        # trial then resumes this project instead of starting a new one over it.
        self.save()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_started[trial.trial_id] = time.time()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        result = self._last_results.pop(trial.trial_id, None)
        if result is not None:
            value, epoch, epochs, seconds = result
            print(f"[{self.tuner_id}] trial {trial.trial_id} done: {self.oracle.objective.name} "
                  f"{value:.4f} (epoch {epoch} of {epochs}) in {seconds:.1f} s; "
                  f"model in {self.get_trial_dir(trial.trial_id)}", flush=True)
        else:
            print(f"[{self.tuner_id}] trial {trial.trial_id} ended with status {trial.status}", flush=True)

    # Conveniences.

    def get_best_configs(self, num_trials: int = 1, epochs: Optional[int] = None):
        """Configs of the best trials, ready for tfp_vae.train; epochs default to the base
        config's (Hyperband's early rounds train fewer)."""
        configs = []
        for hp in self.get_best_hyperparameters(num_trials):
            config = self.hypermodel.trial_config(hp)
            configs.append(config.replace(training={"epochs": epochs or self.hypermodel.base_config.training.epochs}))
        return configs

    def trial_results(self):
        """Every trial: id, status, score, hyperparameter values; best first."""
        trials = list(self.oracle.trials.values())
        reverse = self.oracle.objective.direction == "max"
        done = sorted((t for t in trials if t.status == "COMPLETED"), key=lambda t: t.score, reverse=reverse)
        rest = sorted((t for t in trials if t.status != "COMPLETED"), key=lambda t: t.trial_id)
        return [{"trial_id": t.trial_id, "status": t.status, "score": t.score,
                 "trial_dir": self.get_trial_dir(t.trial_id), "hyperparameters": dict(t.hyperparameters.values)}
                for t in done + rest]


class RandomSearch(VAETunerMixin, keras_tuner.RandomSearch):
    """keras_tuner.RandomSearch for tfp_vae VAEs. Same arguments; objective defaults to val_elbo (max)."""

    def __init__(self, hypermodel: VAEHyperModel, objective=None, max_trials: int = 10, **kwargs):
        kwargs = self._setup_vae_tuner(hypermodel, kwargs)
        super().__init__(hypermodel=hypermodel, objective=objective or DEFAULT_OBJECTIVE,
                         max_trials=max_trials, **kwargs)
        self._after_init()


class BayesianOptimization(VAETunerMixin, keras_tuner.BayesianOptimization):
    """keras_tuner.BayesianOptimization for tfp_vae VAEs (needs scipy and scikit-learn:
    keras-tuner[bayesian]). Objective defaults to val_elbo (max)."""

    def __init__(self, hypermodel: VAEHyperModel, objective=None, max_trials: int = 10, **kwargs):
        kwargs = self._setup_vae_tuner(hypermodel, kwargs)
        super().__init__(hypermodel=hypermodel, objective=objective or DEFAULT_OBJECTIVE,
                         max_trials=max_trials, **kwargs)
        self._after_init()


class Hyperband(VAETunerMixin, keras_tuner.Hyperband):
    """keras_tuner.Hyperband for tfp_vae VAEs. Objective defaults to val_elbo (max).

    Later rounds continue the best models of earlier ones ("tuner/trial_id"): their weights and
    optimizer state are loaded from that trial's folder. `max_epochs` defaults to the base
    config's epochs; `max_trials` (not in keras-tuner's Hyperband) caps the number of trials.
    """

    def __init__(self, hypermodel: VAEHyperModel, objective=None, max_epochs: Optional[int] = None,
                 factor: int = 3, max_trials: Optional[int] = None, **kwargs):
        kwargs = self._setup_vae_tuner(hypermodel, kwargs)
        super().__init__(hypermodel=hypermodel, objective=objective or DEFAULT_OBJECTIVE,
                         max_epochs=max_epochs or hypermodel.base_config.training.epochs,
                         factor=factor, **kwargs)
        if isinstance(self.oracle, keras_tuner.Oracle):  # the chief's (or only) oracle
            self.oracle.max_trials = max_trials
        self._after_init()


TUNERS = {"random": RandomSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband}


def make_tuner(kind: str, hypermodel: VAEHyperModel, **kwargs):
    """`make_tuner("random" | "bayesian" | "hyperband", hypermodel, directory=..., ...)`."""
    if kind not in TUNERS:
        raise ValueError(f"tuner must be one of {', '.join(TUNERS)}; got {kind!r}.")
    return TUNERS[kind](hypermodel, **kwargs)


def load_trial_config(trial_dir: str) -> Config:
    """The Config a trial trained with (its folder's config.json)."""
    return load_config(os.path.join(trial_dir, "config.json"))
