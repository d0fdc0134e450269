"""tfp_vae: variational autoencoders from tfp.layers, trained with tf_keras `model.fit`.

    import tfp_vae
    metrics = tfp_vae.train(tfp_vae.Config(), "runs/default")   # offline Fashion-MNIST
    model = tfp_vae.load("runs/default")
    loc, scale = model.encode(images)                           # posterior q(z|x)
"""
from tfp_vae import _env  # noqa: F401  (sets TF_USE_LEGACY_KERAS before tensorflow loads)

from tfp_vae.config import Config, DataConfig, ModelConfig, TrainingConfig, load_config, save_config
from tfp_vae.model import VAE, build_decoder, build_encoder, standard_normal_prior
from tfp_vae.training import build_model, load, train

__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainingConfig", "VAE", "build_decoder", "build_encoder",
    "build_model", "load", "load_config", "save_config", "standard_normal_prior", "train",
]
__version__ = "0.1.0"
