"""The named models of the likelihood protocol (tfp_vae.likelihood, benchmarks/likelihood.py):
each a Config on the protocol's data, a description for the table, and the run its report is
compared with.

    from tfp_vae.registry import MODELS
    MODELS["mlp"].config.training.epochs   # 600
"""
import dataclasses
from typing import NamedTuple, Optional

from tfp_vae.config import Config, DataConfig, ModelConfig, TrainingConfig

__all__ = ["MODELS", "Model"]

# Every model sees the protocol's data; only the network, prior and optimisation differ.
_PROTOCOL = DataConfig(dataset="fashion_mnist", binarization="dynamic", validation_examples=10_000)
# The published MLP VAE's network (VampPrior's and Exemplar VAE's code): two gated layers of 300
# units and 40 latents, batch 100.
_MLP = ModelConfig(architecture="mlp", gated=True, hidden_units=(300, 300), latent_dim=40)
_MLP_TRAINING = TrainingConfig(epochs=600, batch_size=100, learning_rate=1e-3,
                               learning_rate_schedule="cosine", warmup_epochs=10, keep_best=True)

# Conv encoder and decoder with residual blocks at 14x14 and 7x7 (network.py). 100 pseudo-inputs
# (not the VampPrior paper's 500): each is encoded at every step, and with this encoder 100
# already cost half again the time of a step (31 s an epoch against 22 s with N(0, I)).
_RESNET = ModelConfig(architecture="resnet", conv_filters=(32, 64), residual_blocks=1, latent_dim=40)
# Two stochastic layers of 40 (tfp_vae.hierarchy), the VampPrior on the top one: the ConvHVAE
# design of the published 224.67, on this package's resnet.
_RESNET_HVAMP = Config(model=dataclasses.replace(_RESNET, prior="vamp", prior_components=100, latent_dim=80,
                                                 top_latent_dim=40),
                       data=_PROTOCOL, training=dataclasses.replace(_MLP_TRAINING, epochs=250))
# 500 pseudo-inputs (twice a step's time), trained in bfloat16; the IWAE fine-tunes start from it.
_RESNET_HVAMP_500_BF16 = _RESNET_HVAMP.replace(model={"prior_components": 500},
                                              training={"mixed_precision": True, "mixed_precision_dtype": "bfloat16"})


def _iwae_fine_tune(importance_samples: int, epochs: int, learning_rate: float) -> Config:
    # Trained on from finished weights, so without a KL warm-up.
    return _RESNET_HVAMP_500_BF16.replace(training={"importance_samples": importance_samples, "warmup_epochs": 0,
                                                    "epochs": epochs, "learning_rate": learning_rate})


class Model(NamedTuple):
    description: str
    config: Config
    # A model with the N(0, I) prior whose aggregate-posterior numbers the report shows next to
    # this one's (a learnt prior's reason to exist is the marginal KL it absorbs).
    reference: Optional[str] = None
    # A fine-tuning run: the registered model whose finished run (its folder beside this one's)
    # gives the starting weights (TrainingConfig.initial_weights).
    start_from: Optional[str] = None


MODELS = {
    "mlp": Model("gated MLP 300-300, 40 latents, N(0, I) prior",
                 Config(model=_MLP, data=_PROTOCOL, training=_MLP_TRAINING)),
    # Only the weights kept differ: the moving average (momentum 0.999, about the last two epochs)
    # is validated, kept and evaluated instead of the last iterate.
    "mlp_ema": Model("the mlp model and training, validated, kept and evaluated as a moving average of "
                     "its weights (momentum 0.999)",
                     Config(model=_MLP, data=_PROTOCOL, training=dataclasses.replace(_MLP_TRAINING, ema_momentum=0.999)),
                     reference="mlp"),
    "mlp_vamp": Model("the mlp network with a VampPrior of 500 pseudo-inputs",
                      Config(model=dataclasses.replace(_MLP, prior="vamp", prior_components=500),
                             data=_PROTOCOL, training=_MLP_TRAINING), reference="mlp"),
    # resnet_vamp's network under N(0, I): what the VampPrior buys on the same network (resnet_vamp's
    # report is against mlp until this has run; then make this its reference).
    "resnet": Model("resnet 32-64 (a residual block per resolution), 40 latents, N(0, I) prior",
                    Config(model=_RESNET, data=_PROTOCOL, training=dataclasses.replace(_MLP_TRAINING, epochs=250))),
    "resnet_vamp": Model("resnet 32-64 (a residual block per resolution), 40 latents, VampPrior of 100 "
                         "pseudo-inputs", Config(model=dataclasses.replace(_RESNET, prior="vamp", prior_components=100),
                                                 data=_PROTOCOL, training=dataclasses.replace(_MLP_TRAINING, epochs=250)),
                         reference="mlp"),
    "resnet_hvamp": Model("resnet_vamp with a second stochastic layer: z_top 40 (VampPrior of 100 pseudo-inputs), "
                          "z_bottom 40 given z_top", _RESNET_HVAMP,
                          reference="resnet_vamp"),  # what the second layer changes, same network and prior
    # The VampPrior paper's KL warm-up (beta from 0 to 1 over 100 epochs, against 10 above): a
    # longer warm-up is what Sonderby et al. (Ladder VAE, 2016) found hierarchical VAEs need to use
    # their latent units.
    "resnet_hvamp_warmup": Model("resnet_hvamp with the KL warmed up over 100 epochs (the VampPrior paper's) "
                                 "instead of 10", _RESNET_HVAMP.replace(training={"warmup_epochs": 100}),
                                 reference="resnet_hvamp"),
    # The published ConvHVAE decoders run four gated 64-filter convolutions at 28x28; this one ends
    # at 14x14. A 16-filter stage at 28x28 is the cheapest test of whether that is what separates
    # resnet_hvamp (225.49) from them: about 1.6 times the decoder's multiply-adds (and
    # importance-sampling time), 1.3 times a training step's (multiply-adds counted per layer).
    "resnet_hvamp_fullres": Model("resnet_hvamp with a decoder stage at full resolution (16 filters: a "
                                  "residual block at 28x28, then a 3x3 convolution to the logits)",
                                  _RESNET_HVAMP.replace(model={"full_resolution_filters": 16}),
                                  reference="resnet_hvamp"),
    # The same model trained with a bfloat16 network body (variables, distributions and loss stay
    # float32; the evaluation rebuilds it in float32): on a CPU with AMX units a step takes about
    # 0.64 times float32's, which is what lets a longer run fit in a working session.
    "resnet_hvamp_bf16": Model("resnet_hvamp trained with a bfloat16 network body (mixed precision), evaluated "
                               "in float32", _RESNET_HVAMP.replace(training={"mixed_precision": True,
                                                                             "mixed_precision_dtype": "bfloat16"}),
                               reference="resnet_hvamp"),
    # The VampPrior paper's 500 pseudo-inputs on z_top (mlp_vamp shows 500 buy 1.5 nats over N(0, I)
    # on the MLP): about twice a step's time, hence trained in bfloat16.
    "resnet_hvamp_500_bf16": Model("resnet_hvamp_bf16 with a VampPrior of 500 pseudo-inputs", _RESNET_HVAMP_500_BF16,
                                   reference="resnet_hvamp_bf16"),
    # Burda et al. (2016, table 2) continued a trained VAE on the IWAE bound and kept most of the
    # log p(x) a model trained on it from the start has. Here: the finished resnet_hvamp_500_bf16,
    # 30 more epochs on the 5-sample bound, Adam restarted at 1e-4 and decayed (cosine) to 1e-6.
    # Five decoder passes per example: about twice a step's time.
    "resnet_hvamp_500_iwae5": Model("resnet_hvamp_500_bf16 trained on for 30 epochs on the 5-sample importance-"
                                    "weighted bound (IWAE) instead of the ELBO",
                                    _iwae_fine_tune(importance_samples=5, epochs=30, learning_rate=1e-4),
                                    reference="resnet_hvamp_500_bf16", start_from="resnet_hvamp_500_bf16"),
    # Models trained on the IWAE bound got better with k (Burda et al. 2016, table 1: k = 1, 5, 50 on
    # MNIST). resnet_hvamp_500_iwae5's validation bound had flattened by its last 10 epochs;
    # this continues its kept weights on the 10-sample bound, Adam restarted at half its rate.
    "resnet_hvamp_500_iwae10": Model("resnet_hvamp_500_iwae5 trained on for 15 epochs on the 10-sample "
                                     "importance-weighted bound",
                                     _iwae_fine_tune(importance_samples=10, epochs=15, learning_rate=5e-5),
                                     reference="resnet_hvamp_500_bf16", start_from="resnet_hvamp_500_iwae5"),
    # One more doubling of k. The gains shrink with k (validation proxy, paired: k = 5 gave -0.37
    # nats, k = 10 -0.06 more); an epoch took 288 s against k = 10's 204 s (median, same Xeon).
    "resnet_hvamp_500_iwae20": Model("resnet_hvamp_500_iwae10 trained on for 10 epochs on the 20-sample "
                                     "importance-weighted bound",
                                     _iwae_fine_tune(importance_samples=20, epochs=10, learning_rate=5e-5),
                                     reference="resnet_hvamp_500_bf16", start_from="resnet_hvamp_500_iwae10"),
    # An autoregressive decoder (a different class: compare with the PixelSNAIL rows).
    "mlp_made": Model("the mlp network with an autoregressive decoder (a MADE of 500 units over the pixels, "
                      "conditioned on z)", Config(model=dataclasses.replace(_MLP, autoregressive_units=(500,)),
                                                   data=_PROTOCOL, training=_MLP_TRAINING), reference="mlp"),
}
