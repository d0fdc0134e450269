"""tfp_vae: variational autoencoders from tfp.layers, trained with tf_keras `model.fit`.

    import tfp_vae
    metrics = tfp_vae.train(tfp_vae.Config(), "runs/default")   # offline Fashion-MNIST
    model = tfp_vae.load("runs/default")
    loc, scale = model.encode(images)                           # posterior q(z|x)
    tfp_vae.evaluation.evaluate_run("runs/default", num_samples=5000)
    tfp_vae.report.diagnose_run("runs/default")
    tfp_vae.export.export("runs/default", "saved_models/fashion_vae")
    tfp_vae.likelihood.run("mlp", "runs/likelihood/mlp")       # the published-protocol benchmark
"""
from tfp_vae import _env  # noqa: F401  (sets TF_USE_LEGACY_KERAS before tensorflow loads)

from tfp_vae.config import Config, DataConfig, ModelConfig, TrainingConfig, load_config, save_config
from tfp_vae.model import VAE, build_decoder, build_encoder, standard_normal_prior
from tfp_vae.prior import build_prior
from tfp_vae.training import build_model, load, train
# Modules with their own entry points: data.make_datasets, evaluation.evaluate_run,
# report.diagnose_run, export.export, likelihood.run, comparison.paired_difference.
# (tuning and hypermodel are not imported here: keras-tuner binds Keras 3 when it loads.)
from tfp_vae import (autoregressive, comparison, data, diagnosis, evaluation, export, likelihood, network,  # noqa: E402
                     prior, report)

__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainingConfig", "VAE", "autoregressive", "build_decoder", "build_encoder",
    "build_model", "build_prior", "comparison", "data", "diagnosis", "evaluation", "export", "likelihood", "load",
    "load_config", "network", "prior", "report", "save_config", "standard_normal_prior", "train",
]
__version__ = "0.1.0"
