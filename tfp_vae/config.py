"""One configuration object for data, model and training, validated and saved as JSON.

The same `Config` flows through the CLI, training, tuning and export, and is written as
`config.json` next to every run so a run can be rebuilt from its folder alone.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional, Tuple

__all__ = [
    "ARCHITECTURES",
    "BINARIZATIONS",
    "LEARNING_RATE_SCHEDULES",
    "LIKELIHOODS",
    "MIXED_PRECISION_DTYPES",
    "PRIORS",
    "STRATEGIES",
    "check_free_bits",
    "check_importance_samples",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainingConfig",
    "load_config",
    "save_config",
]

# mlp: dense layers; conv: stride-2 convolutions; resnet: stride-2 convolutions each followed by
# residual blocks (tfp_vae.network).
ARCHITECTURES = ("mlp", "conv", "resnet")
# standard_normal: N(0, I), exact KL; mixture: a learnt mixture of diagonal Gaussians; vamp: the
# VampPrior, a mixture of the encoder's posteriors at learnt pseudo-inputs (tfp_vae.prior).
PRIORS = ("standard_normal", "mixture", "vamp")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
# bernoulli: pixels in {0, 1}; continuous_bernoulli: a proper density for pixels in [0, 1].
LIKELIHOODS = ("bernoulli", "continuous_bernoulli")
BINARIZATIONS = ("none", "static", "dynamic")
# tf.distribute strategies (tfp_vae.distribute): one device, local replicas, several workers.
STRATEGIES = ("default", "mirrored", "multi_worker")
# The network body's compute dtype under mixed precision: float16 for GPUs (with loss scaling),
# bfloat16 for CPUs with AMX or AVX512_BF16 units and TPUs (float32's exponent range: no loss scaling).
MIXED_PRECISION_DTYPES = ("float16", "bfloat16")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _non_negative_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")


def _non_negative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network; `image_shape` is filled in from the dataset."""

    architecture: str = "mlp"
    latent_dim: int = 32
    # Hidden widths of the MLP encoder; the decoder mirrors them.
    hidden_units: Tuple[int, ...] = (512, 256)
    # MLP only: gated linear units h = (W x + b) * sigmoid(V x + c) instead of ReLU, as in the
    # VampPrior and Exemplar-VAE MLPs whose published likelihoods tfp_vae compares against.
    gated: bool = False
    # Filters of the stride-2 conv layers; the decoder mirrors them. Two layers divide H and W by 4.
    conv_filters: Tuple[int, ...] = (32, 64)
    # resnet only: residual blocks (two 3x3 convolutions and a skip) after each stride-2 layer.
    residual_blocks: int = 1
    # resnet only: filters of a decoder stage at full resolution (the last transposed convolution
    # goes up to H x W with these filters, then residual_blocks blocks and a 3x3 convolution to the
    # logits). 0 writes the logits from the last transposed convolution: the cheapest decoder, and
    # the decoder runs once per importance sample. The published ConvHVAE decoders work at 28x28.
    full_resolution_filters: int = 0
    likelihood: str = "bernoulli"
    # Hidden units of a MADE (tfp AutoregressiveNetwork, conditioned on z) that makes the Bernoulli
    # decoder autoregressive over pixels: p(x|z) = prod_i p(x_i | x_<i, z). () keeps the pixels
    # independent given z. Autoregressive decoders are a different class of model: compare them
    # with autoregressive published rows.
    autoregressive_units: Tuple[int, ...] = ()
    prior: str = "standard_normal"
    # mixture / vamp: mixture components (VampPrior: pseudo-inputs, each encoded every step).
    prior_components: int = 500
    # Samples of z per example for the Monte-Carlo KL when the prior has no closed-form KL
    # (mixture, vamp); 1 reuses the z that the decoder sees, the usual one-sample ELBO.
    kl_samples: int = 1
    # A second stochastic layer (tfp_vae.hierarchy): the first top_latent_dim of the latent_dim
    # dimensions are z_top, the rest z_bottom, generated p(z_top) p(z_bottom | z_top) and inferred
    # q(z_top | x) q(z_bottom | x, z_top); the prior above sits on z_top. 0: one layer.
    top_latent_dim: int = 0
    # Hidden units of the two small networks of a two-level model: p(z_bottom | z_top) and
    # q(z_bottom | x, z_top).
    conditional_units: int = 300
    image_shape: Tuple[int, int, int] = (28, 28, 1)

    def __post_init__(self):
        _choice("architecture", self.architecture, ARCHITECTURES)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("prior", self.prior, PRIORS)
        _positive_int("latent_dim", self.latent_dim)
        _positive_int("residual_blocks", self.residual_blocks)
        _non_negative_int("full_resolution_filters", self.full_resolution_filters)
        if self.full_resolution_filters and self.architecture != "resnet":
            raise ValueError(f"full_resolution_filters (--full-resolution-filters) applies to architecture "
                             f"'resnet' only; architecture is {self.architecture!r}. Set it to 0 or use "
                             "--architecture resnet.")
        _positive_int("prior_components", self.prior_components)
        _positive_int("kl_samples", self.kl_samples)
        _positive_int("conditional_units", self.conditional_units)
        if isinstance(self.top_latent_dim, bool) or not isinstance(self.top_latent_dim, int) or not (
                0 <= self.top_latent_dim < self.latent_dim):
            raise ValueError(f"top_latent_dim must be an integer from 0 (one stochastic layer) to latent_dim - 1 "
                             f"= {self.latent_dim - 1} (the rest is z_bottom), got {self.top_latent_dim!r}.")
        if not isinstance(self.gated, bool):
            raise ValueError(f"gated must be true or false, got {self.gated!r}.")
        if self.gated and self.architecture != "mlp":
            raise ValueError(f"gated (--gated) applies to architecture 'mlp' only; architecture is "
                             f"{self.architecture!r}. Drop --gated or use --architecture mlp.")
        object.__setattr__(self, "hidden_units", tuple(self.hidden_units))
        object.__setattr__(self, "conv_filters", tuple(self.conv_filters))
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "autoregressive_units", tuple(self.autoregressive_units))
        for units in self.autoregressive_units:
            _positive_int("each of autoregressive_units", units)
        if self.autoregressive_units and self.likelihood != "bernoulli":
            raise ValueError("autoregressive_units (--autoregressive-units) make the Bernoulli decoder "
                             f"autoregressive; likelihood is {self.likelihood!r}. Use likelihood "
                             "'bernoulli' or drop --autoregressive-units.")
        if not self.hidden_units:
            raise ValueError("hidden_units must list at least one width, e.g. (512, 256).")
        for width in self.hidden_units:
            _positive_int("each of hidden_units", width)
        if not self.conv_filters:
            raise ValueError("conv_filters must list at least one filter count, e.g. (32, 64).")
        for filters in self.conv_filters:
            _positive_int("each of conv_filters", filters)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (height, width, channels), got {self.image_shape!r}.")
        for size in self.image_shape:
            _positive_int("each of image_shape", size)
        if self.architecture in ("conv", "resnet"):
            factor = 2 ** len(self.conv_filters)
            height, width, _ = self.image_shape
            if height % factor or width % factor:
                raise ValueError(
                    f"conv with {len(self.conv_filters)} stride-2 layers needs height and width "
                    f"divisible by {factor}; image_shape is {self.image_shape}. Use fewer "
                    "conv_filters or architecture='mlp'.")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they become model inputs."""

    # Any TFDS image dataset; fashion_mnist reads local IDX files first when they exist.
    dataset: str = "fashion_mnist"
    # Folder of Fashion-MNIST IDX files; None means $TFP_VAE_FASHION_MNIST_DIR, then Debian's path.
    idx_dir: Optional[str] = None
    # TFDS data_dir; None means TFDS's default (~/tensorflow_datasets).
    tfds_data_dir: Optional[str] = None
    binarization: str = "dynamic"
    # Carved from the end of the training split; the test split is never touched.
    validation_examples: int = 10_000
    # Cap on training examples (after the validation carve), for quick runs; None uses all.
    train_examples: Optional[int] = None
    # Seed of the test split's one-off binarization: every evaluation sees the same test set.
    test_binarization_seed: int = 1234
    shuffle_buffer: int = 60_000

    def __post_init__(self):
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be a TFDS name such as 'fashion_mnist', got {self.dataset!r}.")
        _choice("binarization", self.binarization, BINARIZATIONS)
        _non_negative_int("validation_examples", self.validation_examples)
        if self.train_examples is not None:
            _positive_int("train_examples", self.train_examples)
        _positive_int("shuffle_buffer", self.shuffle_buffer)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The objective and the optimisation."""

    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    # constant, or cosine: decays from learning_rate to 1% of it over `epochs` (per step). A cosine
    # run resumed with a larger --epochs is re-stretched to the new length.
    learning_rate_schedule: str = "constant"
    # Weight of KL(q(z|x) || p(z)) in the loss; 1 gives the ELBO.
    beta: float = 1.0
    # beta rises linearly from 0 over this many epochs (per step), then stays at `beta`.
    warmup_epochs: float = 0.0
    # Free bits (nats per latent dimension, batch-averaged): KL below it is not penalised.
    free_bits: float = 0.0
    seed: int = 0
    # Batches per tf.function call: fewer Python round trips for small models.
    steps_per_execution: int = 1
    # How training is spread over devices and machines: tfp_vae.distribute, README section "Several machines".
    # batch_size is the GLOBAL batch, split over all replicas; learning_rate is not rescaled.
    strategy: str = "default"
    # mirrored only: split the CPU into this many logical devices (testing without GPUs); 0: don't.
    num_cpu_devices: int = 0
    # A float16 or bfloat16 network body (mixed_precision_dtype), float32 variables, distributions
    # and loss; float16 turns loss scaling on.
    mixed_precision: bool = False
    mixed_precision_dtype: str = "float16"
    # XLA-compile the training step (strategy "default" only: fails under tf.distribute here).
    jit_compile: bool = False
    # Early-stopping style selection: the final weights are those of the epoch with the best
    # validation ELBO (checkpointed in WORKDIR/best/ as training goes), not of the last epoch.
    keep_best: bool = False
    # Polyak averaging: > 0 keeps an exponential moving average of the weights with this momentum
    # (tfp_vae.averaging; 0.999 averages over about the last 1,000 steps, once the ramp from the
    # first step is over). Validation, the kept best epoch, the final weights and everything
    # downstream use the average; the backup keeps both.
    ema_momentum: float = 0.0
    # k > 1 trains on the importance-weighted bound log mean_k p(x, z_k) / q(z_k|x) (IWAE, Burda et
    # al. 2016), tighter than the ELBO (k = 1), at k decoder passes per example.
    importance_samples: int = 1
    # A run folder whose final weights (WEIGHTS/) start this run, e.g. to fine-tune a finished run
    # with importance_samples > 1; its model config must equal this one's. Used only when the run
    # starts: a resumed run continues from its own backup.
    initial_weights: Optional[str] = None

    def __post_init__(self):
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("steps_per_execution", self.steps_per_execution)
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) \
                or not 0 < self.learning_rate < math.inf:
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}.")
        _non_negative("beta", self.beta)
        _non_negative("warmup_epochs", self.warmup_epochs)
        _non_negative("free_bits", self.free_bits)
        if isinstance(self.ema_momentum, bool) or not isinstance(self.ema_momentum, (int, float)) \
                or not 0 <= self.ema_momentum < 1:
            raise ValueError(f"ema_momentum must be a number in [0, 1) (0 turns weight averaging off; "
                             f"0.999 is a common choice), got {self.ema_momentum!r}.")
        # TensorFlow's stateless seeds (model.sample's, the pipelines') are int32.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 31:
            raise ValueError(f"seed must be an integer in [0, 2**31), got {self.seed!r}.")
        _choice("strategy", self.strategy, STRATEGIES)
        _non_negative_int("num_cpu_devices", self.num_cpu_devices)
        _choice("learning_rate_schedule", self.learning_rate_schedule, LEARNING_RATE_SCHEDULES)
        for name in ("mixed_precision", "jit_compile", "keep_best"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        _choice("mixed_precision_dtype", self.mixed_precision_dtype, MIXED_PRECISION_DTYPES)
        _positive_int("importance_samples", self.importance_samples)
        check_importance_samples(self.importance_samples, self.beta, self.warmup_epochs, self.free_bits)
        if self.initial_weights is not None and (not isinstance(self.initial_weights, str) or not self.initial_weights):
            raise ValueError(f"initial_weights must be the path of a run folder (or null), got {self.initial_weights!r}.")
        if self.mixed_precision_dtype != "float16" and not self.mixed_precision:
            # Refused rather than ignored: the run would silently compute in float32.
            raise ValueError(
                f"mixed_precision_dtype {self.mixed_precision_dtype!r} (--mixed-precision-dtype) applies "
                "only with mixed_precision: add --mixed-precision, or drop --mixed-precision-dtype.")
        if self.num_cpu_devices and self.strategy != "mirrored":
            raise ValueError(
                f"num_cpu_devices (--num-cpu-devices) needs strategy 'mirrored' (--strategy mirrored); "
                f"strategy is {self.strategy!r}.")
        if self.jit_compile and self.strategy != "default":
            # Seen on TF 2.21 / tf_keras 2.21 (keras issue 19005): mirrored fails at the first step
            # with "Trying to access resource ... located in device CPU:1 from device CPU:0";
            # multi_worker with "Collectives are not yet implemented for CPU devices when compiling
            # with XLA".
            raise ValueError(
                f"jit_compile (--jit-compile) does not work with strategy {self.strategy!r} "
                f"(--strategy {self.strategy}) on this TensorFlow: XLA-compiled steps fail under "
                "tf.distribute (keras issue 19005). Use --strategy default with --jit-compile, or "
                "drop --jit-compile.")


def check_free_bits(model: ModelConfig, free_bits: float) -> None:
    """Free bits penalise max(free_bits, KL_d), KL_d to N(0, 1) per dimension of a one-layer
    Gaussian posterior: undefined for a learnt prior or a two-level model (Config and VAE.compile)."""
    if free_bits > 0 and model.prior != "standard_normal":
        raise ValueError("free_bits (--free-bits) is defined per latent dimension against N(0, I): "
                         f"it needs prior 'standard_normal', not {model.prior!r}.")
    if free_bits > 0 and model.top_latent_dim:
        raise ValueError("free_bits (--free-bits) is defined per dimension of a one-layer Gaussian posterior; "
                         "a two-level model (top_latent_dim > 0) has none: drop --free-bits or --top-latent-dim.")


def check_importance_samples(importance_samples: int, beta: float, warmup: float, free_bits: float) -> None:
    """The importance-weighted bound has no separate KL term for beta, a warm-up or free bits to act on
    (Config and VAE.compile)."""
    if importance_samples > 1 and (beta != 1 or warmup > 0 or free_bits > 0):
        raise ValueError(
            f"importance_samples {importance_samples} (--importance-samples) trains on the importance-weighted "
            f"bound, which has no KL term to weigh: it needs beta 1, no warm-up and no free bits; got beta "
            f"{beta}, warm-up {warmup}, free bits {free_bits}. Drop --beta/--warmup-epochs/--free-bits, or use "
            "--importance-samples 1 (the ELBO).")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    def __post_init__(self):
        binary_pixels = self.data.binarization != "none" or self.data.dataset == "binarized_mnist"
        if self.model.likelihood == "bernoulli" and not binary_pixels:
            raise ValueError(
                "likelihood 'bernoulli' needs binary pixels: set binarization to 'dynamic' or "
                "'static', or use likelihood 'continuous_bernoulli' for grayscale/colour pixels.")
        if self.model.likelihood == "continuous_bernoulli" and self.data.binarization != "none":
            raise ValueError(
                "likelihood 'continuous_bernoulli' models pixel intensities in [0, 1]: set "
                "binarization to 'none', or use likelihood 'bernoulli' for binarized images.")
        if self.data.dataset == "binarized_mnist" and self.data.binarization != "none":
            raise ValueError("binarized_mnist is already binary: set binarization to 'none'.")
        check_free_bits(self.model, self.training.free_bits)
        if self.training.keep_best and self.data.validation_examples == 0:
            raise ValueError("keep_best (--keep-best) selects the epoch with the best validation ELBO: "
                             "set validation_examples > 0, or drop --keep-best.")

    def replace(self, **sections) -> "Config":
        """Returns a copy with whole sections or fields replaced: `replace(model={'latent_dim': 2})`."""
        updates = {}
        for name, value in sections.items():
            if name not in ("model", "data", "training"):
                raise ValueError(f"unknown config section {name!r}; use model, data or training.")
            current = getattr(self, name)
            updates[name] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        sections = {"model": ModelConfig, "data": DataConfig, "training": TrainingConfig}
        unknown = set(values) - set(sections)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; expected {sorted(sections)}.")
        built = {}
        for name, section in sections.items():
            fields = dict(values.get(name, {}))
            known = {field.name for field in dataclasses.fields(section)}
            extra = set(fields) - known
            if extra:
                raise ValueError(f"unknown fields {sorted(extra)} in config section {name!r}; "
                                 f"known fields are {sorted(known)}.")
            built[name] = section(**fields)
        return cls(**built)


def save_config(config: Config, path: str) -> None:
    """Writes `config` as JSON atomically (readers never see half a file)."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(config.to_dict(), handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def load_config(path: str) -> Config:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config at {path}: is this a tfp_vae run folder (trainers/train.py --workdir)?")
    with open(path) as handle:
        try:
            values = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); re-create it or re-run training.") from None
    return Config.from_dict(values)
