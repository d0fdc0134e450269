"""Command-line flags <-> Config, shared by the scripts in trainers/."""
import argparse
import dataclasses

from tfp_vae.config import (ARCHITECTURES, BINARIZATIONS, LEARNING_RATE_SCHEDULES, LIKELIHOODS, MIXED_PRECISION_DTYPES,
                            PRIORS, STRATEGIES, Config, load_config)

__all__ = ["add_config_flags", "config_from_flags"]


def _int_list(text: str):
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 512,256; got {text!r}")


# flag -> (section, field, type, help); every flag defaults to None, meaning "keep the config's value".
# bool flags come in pairs: --mixed-precision / --no-mixed-precision.
FLAGS = {
    "--dataset": ("data", "dataset", str, "TFDS image dataset name (default fashion_mnist, read offline from IDX files)"),
    "--idx-dir": ("data", "idx_dir", str, "folder with the Fashion-MNIST IDX files (default $TFP_VAE_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)"),
    "--tfds-data-dir": ("data", "tfds_data_dir", str, "TFDS data_dir"),
    "--binarization": ("data", "binarization", str, f"one of {', '.join(BINARIZATIONS)}"),
    "--validation-examples": ("data", "validation_examples", int, "examples carved from the end of train for validation"),
    "--train-examples": ("data", "train_examples", int, "cap on training examples, for quick runs"),
    "--architecture": ("model", "architecture", str, f"one of {', '.join(ARCHITECTURES)}"),
    "--latent-dim": ("model", "latent_dim", int, "latent dimensions"),
    "--hidden-units": ("model", "hidden_units", _int_list, "MLP widths, e.g. 512,256"),
    "--gated": ("model", "gated", bool, "MLP: gated linear units instead of ReLU layers"),
    "--conv-filters": ("model", "conv_filters", _int_list, "conv/resnet filters per stride-2 layer, e.g. 32,64"),
    "--residual-blocks": ("model", "residual_blocks", int, "resnet: residual blocks per resolution"),
    "--full-resolution-filters": ("model", "full_resolution_filters", int,
                                  "resnet: filters of a decoder stage at full image resolution (0: none)"),
    "--likelihood": ("model", "likelihood", str, f"one of {', '.join(LIKELIHOODS)}"),
    "--autoregressive-units": ("model", "autoregressive_units", _int_list,
                               "MADE hidden units, e.g. 500: an autoregressive Bernoulli decoder"),
    "--prior": ("model", "prior", str, f"one of {', '.join(PRIORS)}"),
    "--prior-components": ("model", "prior_components", int, "mixture/vamp prior: components (VampPrior pseudo-inputs)"),
    "--kl-samples": ("model", "kl_samples", int, "Monte-Carlo samples of the KL for mixture/vamp priors"),
    "--top-latent-dim": ("model", "top_latent_dim", int, "a second stochastic layer: the first N of --latent-dim "
                         "dimensions are z_top (0: one layer)"),
    "--conditional-units": ("model", "conditional_units", int, "two-level models: hidden units of p(z_bottom|z_top) "
                            "and q(z_bottom|x, z_top)"),
    "--epochs": ("training", "epochs", int, "training epochs (raise it on an existing workdir to train longer)"),
    "--batch-size": ("training", "batch_size", int, "examples per batch: the GLOBAL batch, split over all replicas and workers"),
    "--learning-rate": ("training", "learning_rate", float, "Adam learning rate (not rescaled with the number of replicas)"),
    "--learning-rate-schedule": ("training", "learning_rate_schedule", str,
                                 f"one of {', '.join(LEARNING_RATE_SCHEDULES)} (cosine: down to 1% over --epochs)"),
    "--keep-best": ("training", "keep_best", bool, "final weights from the epoch with the best validation ELBO"),
    "--ema-momentum": ("training", "ema_momentum", float, "keep a moving average of the weights with this "
                       "momentum (e.g. 0.999) and validate, keep and save it; 0: off"),
    "--importance-samples": ("training", "importance_samples", int, "k > 1: train on the k-sample importance-weighted "
                             "bound (IWAE) instead of the ELBO, k decoder passes per example"),
    "--initial-weights": ("training", "initial_weights", str, "a run folder whose final weights start this run "
                          "(fine-tuning; same model config)"),
    "--beta": ("training", "beta", float, "KL weight (1 = ELBO)"),
    "--warmup-epochs": ("training", "warmup_epochs", float, "epochs over which beta rises linearly from 0"),
    "--free-bits": ("training", "free_bits", float, "nats per latent dimension left unpenalised"),
    "--seed": ("training", "seed", int, "random seed"),
    "--steps-per-execution": ("training", "steps_per_execution", int, "batches per tf.function call"),
    "--strategy": ("training", "strategy", str, f"one of {', '.join(STRATEGIES)}: one device; all local GPUs "
                   "(or --num-cpu-devices logical CPUs); several workers from TF_CONFIG (README, section 'Several machines')"),
    "--num-cpu-devices": ("training", "num_cpu_devices", int, "with --strategy mirrored: split the CPU into N logical devices (testing)"),
    "--mixed-precision": ("training", "mixed_precision", bool, "a float16 (or --mixed-precision-dtype) network body; "
                          "distributions, loss and variables float32"),
    "--mixed-precision-dtype": ("training", "mixed_precision_dtype", str,
                                f"one of {', '.join(MIXED_PRECISION_DTYPES)}: float16 for GPUs, bfloat16 for CPUs "
                                "with AMX / AVX512_BF16 and TPUs"),
    "--jit-compile": ("training", "jit_compile", bool, "XLA-compile the training step (--strategy default only)"),
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON config to start from (e.g. a run's config.json); flags override it")
    for flag, (_, _, kind, text) in FLAGS.items():
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=text)


def config_from_flags(args: argparse.Namespace) -> Config:
    """Builds the Config: defaults, then --config, then the flags given. Bad values raise ValueError."""
    config = load_config(args.config) if args.config else Config()
    sections = {"data": {}, "model": {}, "training": {}}
    for flag, (section, field, _, _) in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            sections[section][field] = value
    return dataclasses.replace(
        config, **{name: dataclasses.replace(getattr(config, name), **values)
                   for name, values in sections.items() if values})
