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
from typing import Optional, Tuple

import keras_tuner
import numpy as np
import tf_keras

from tfp_vae import data as data_lib
from tfp_vae import checkpoint, scoring, training, tuner_state
from tfp_vae.callbacks import StopOnNaN, TrainingDivergedError
from tfp_vae.config import Config, load_config, save_config
# The search space lives in hypermodel.py; its names stay importable from here.
from tfp_vae.hypermodel import HP_NAMES, SEARCHABLE, VAEHyperModel, default_ranges
from tfp_vae.model import VAE
# score and its seed live in scoring.py; their names stay importable from here.
from tfp_vae.scoring import SCORE_SEED, score

__all__ = [
    "BayesianOptimization", "DEFAULT_OBJECTIVE", "Hyperband", "HP_NAMES", "RandomSearch",
    "SCORE_SEED", "SEARCHABLE", "TUNERS", "VAEHyperModel", "VAETunerMixin", "best_workdir", "default_ranges",
    "make_objective", "make_tuner", "score",
]

DEFAULT_OBJECTIVE = keras_tuner.Objective("val_elbo", direction="max")
# Metrics that are better when larger; everything else VAE logs (loss, kl) is better smaller.
_MAXIMIZED = ("elbo", "reconstruction", "iwae")
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
        tuner_state.make_state_writes_atomic()  # before keras-tuner's __init__, which may write
        for name in ("optimizer", "loss", "metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name}= is not supported: the VAE compiles itself from each trial's Config.")
        if kwargs.get("executions_per_trial", 1) != 1:
            raise ValueError("executions_per_trial must be 1: each trial trains one model, seeded by "
                             "config.training.seed (and the epoch a Hyperband round continues at).")
        kwargs.setdefault("seed", 1 + hypermodel.base_config.training.seed % (2 ** 31 - 1))
        if _is_distributed_worker() and kwargs.get("overwrite"):
            # keras-tuner would delete the shared project folder under the chief's feet.
            print("overwrite ignored on a distributed worker: only the chief may start the project over")
            kwargs["overwrite"] = False
        return kwargs

    def _after_init(self):
        objective = self.oracle.objective
        importance_samples = self.hypermodel.base_config.training.importance_samples
        if objective.name in ("iwae", "val_iwae") and importance_samples == 1:
            # Otherwise every trial trains to the end and only then finds no such metric.
            raise ValueError(f"objective {objective.name} is the importance-weighted bound, which only a run with "
                             "training.importance_samples > 1 logs: set --importance-samples, or use val_elbo.")
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
            checkpoint.write_json(spec, path)
        self._spec_checked = True

    # Data.

    def _data(self, config, train, validation, first_epoch=0):
        """(train, validation, steps per epoch, steps_per_epoch for fit): a training set of known
        length is repeated with the epoch's length given, one iterator for the whole trial (as
        tfp_vae.training does); one of unknown length is passed as it is. The Config's own training
        data is seeded for a trial that continues at `first_epoch` (data.train_seed); a `train`
        dataset passed in is used as it is, its randomness its owner's."""
        if train is not None:
            steps = int(train.cardinality())
            if steps < 0:
                # Both count optimizer steps, computed from epochs x steps per epoch.
                if config.training.warmup_epochs > 0 or config.training.learning_rate_schedule != "constant":
                    raise ValueError("the training dataset's length is unknown, so a warm-up or a cosine "
                                     "learning-rate schedule in epochs cannot be converted to steps: use a "
                                     "dataset of known cardinality (e.g. dataset.apply("
                                     "tf.data.experimental.assert_cardinality(n))), or neither.")
                return train, validation, 1, None
            return train.repeat(), validation, steps, steps
        key = json.dumps([dataclasses.asdict(config.data), config.training.batch_size], sort_keys=True)
        if key not in self._datasets:
            self._datasets = {key: data_lib.make_datasets(config)}  # one at a time: they hold data
        datasets = self._datasets[key]
        steps = math.ceil(datasets.train_examples / config.training.batch_size)
        # A new training pipeline per trial: a cached one's iterators would go on with the stream
        # of the trials before it, making a trial's data depend on what ran before it in this
        # process (and differ after a restart or on another worker).
        train = data_lib.train_pipeline(config, first_epoch=first_epoch)
        return train.repeat(), datasets.validation, steps, steps

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
        for leftover in glob.glob(os.path.join(trial_dir, checkpoint.WEIGHTS + "*")):
            shutil.rmtree(leftover, ignore_errors=True)  # weights/ and a killed save's staging
        if os.path.exists(os.path.join(trial_dir, "metrics.json")):
            os.remove(os.path.join(trial_dir, "metrics.json"))
        save_config(config, os.path.join(trial_dir, "config.json"))

        tf_keras.backend.clear_session()
        # A Hyperband round that continues a trial at initial_epoch draws fresh random numbers
        # (data and sampling noise) instead of replaying the trial's first epochs', as a resumed
        # tfp_vae.training run does.
        tf_keras.utils.set_random_seed(data_lib.train_seed(config.training.seed, initial_epoch))
        train, validation, steps_per_epoch, fit_steps = self._data(config, train, validation_data, initial_epoch)
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
            prefix = os.path.join(self.get_trial_dir(resumed_from), checkpoint.WEIGHTS, checkpoint.CHECKPOINT_PREFIX)
            model.load_weights(prefix)

        keeper = scoring.ScoreAndKeepBest(self.oracle.objective, validation, trial_dir, verbose)
        all_callbacks = [keeper, StopOnNaN()] + self._copy_callbacks(callbacks, trial)
        try:
            model.fit(train, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=fit_steps,
                      callbacks=all_callbacks,
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
        checkpoint.write_json(metrics, os.path.join(trial_dir, "metrics.json"))
        self._last_results[trial.trial_id] = (keeper.best, keeper.best_epoch + 1, epochs, time.time() - started)
        return results

    def _finished_results(self, trial, trial_dir):
        """The results a completed earlier run of this very trial recorded, or None."""
        path = os.path.join(trial_dir, "metrics.json")
        weights = os.path.join(trial_dir, checkpoint.WEIGHTS, checkpoint.CHECKPOINT_PREFIX + ".index")
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
        checkpoint.save_weights(model, self.get_trial_dir(trial_id))

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
        with tuner_state.named_state_errors(kwargs):
            super().__init__(hypermodel=hypermodel, objective=objective or DEFAULT_OBJECTIVE,
                             max_trials=max_trials, **kwargs)
        self._after_init()


class BayesianOptimization(VAETunerMixin, keras_tuner.BayesianOptimization):
    """keras_tuner.BayesianOptimization for tfp_vae VAEs (needs scipy and scikit-learn:
    keras-tuner[bayesian]). Objective defaults to val_elbo (max)."""

    def __init__(self, hypermodel: VAEHyperModel, objective=None, max_trials: int = 10, **kwargs):
        kwargs = self._setup_vae_tuner(hypermodel, kwargs)
        with tuner_state.named_state_errors(kwargs):
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
        with tuner_state.named_state_errors(kwargs):
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


def best_workdir(project: str, config: Config) -> Tuple[str, Optional[str]]:
    """The folder that trains the search's best `config` in full, `project/best`, and where an
    earlier `best/` was moved (or None). A restarted search (more trials, other --final-epochs)
    can pick another best config than the one `best/` holds, or fewer epochs: that run cannot be
    resumed, so it is renamed aside (`best.replaced-<UTC time>`), not deleted or trained over."""
    workdir = os.path.join(project, "best")
    # As training.train compares it: with the image shape of the data.
    config = config.replace(model={"image_shape": data_lib.image_shape(config.data)})
    try:
        checkpoint.check_resumable(config, workdir)
    except ValueError:
        aside = stem = f"{workdir}.replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        copies = 1
        while os.path.exists(aside):  # replaced twice within a second
            copies += 1
            aside = f"{stem}-{copies}"
        os.rename(workdir, aside)
        return workdir, aside
    return workdir, None


def load_trial_config(trial_dir: str) -> Config:
    """The Config a trial trained with (its folder's config.json)."""
    return load_config(os.path.join(trial_dir, "config.json"))
