import json

import pytest

from tfp_vae.config import Config, DataConfig, ModelConfig, TrainingConfig, load_config, save_config


def test_json_round_trip(tmp_path):
    config = Config().replace(model={"latent_dim": 7, "hidden_units": (64, 32)}, training={"beta": 2.0})
    path = tmp_path / "config.json"
    save_config(config, str(path))
    assert load_config(str(path)) == config
    assert json.loads(path.read_text())["model"]["hidden_units"] == [64, 32]


@pytest.mark.parametrize("build,message", [
    (lambda: ModelConfig(latent_dim=0), "latent_dim"),
    (lambda: ModelConfig(architecture="transformer"), "architecture must be one of mlp, conv, resnet"),
    (lambda: ModelConfig(architecture="resnet", gated=True), "gated"),
    (lambda: ModelConfig(architecture="resnet", residual_blocks=0), "residual_blocks"),
    (lambda: ModelConfig(architecture="resnet", full_resolution_filters=-16), "full_resolution_filters must be"),
    (lambda: ModelConfig(architecture="conv", full_resolution_filters=16), "applies to architecture 'resnet'"),
    (lambda: ModelConfig(prior="flow"), "prior must be one of standard_normal, mixture, vamp"),
    (lambda: ModelConfig(prior="vamp", prior_components=0), "prior_components"),
    (lambda: ModelConfig(kl_samples=0), "kl_samples"),
    (lambda: TrainingConfig(learning_rate_schedule="step"), "learning_rate_schedule"),
    (lambda: Config(model=ModelConfig(prior="mixture"), training=TrainingConfig(free_bits=0.5)), "free_bits"),
    (lambda: Config(data=DataConfig(validation_examples=0), training=TrainingConfig(keep_best=True)),
     "keep_best"),
    (lambda: ModelConfig(likelihood="gaussian"), "likelihood"),
    (lambda: ModelConfig(hidden_units=()), "hidden_units"),
    (lambda: ModelConfig(architecture="conv", image_shape=(30, 30, 1)), "divisible by 4"),
    (lambda: DataConfig(binarization="sometimes"), "binarization"),
    (lambda: DataConfig(validation_examples=-1), "validation_examples"),
    (lambda: DataConfig(train_examples=0), "train_examples"),
    (lambda: TrainingConfig(learning_rate=0.0), "learning_rate"),
    (lambda: TrainingConfig(beta=-0.5), "beta"),
    (lambda: TrainingConfig(batch_size=2.5), "batch_size"),
    (lambda: TrainingConfig(free_bits=float("nan")), "free_bits"),
    (lambda: TrainingConfig(warmup_epochs=float("inf")), "warmup_epochs must be a finite number"),
    (lambda: TrainingConfig(learning_rate=float("inf")), "learning_rate must be a finite number"),
    (lambda: TrainingConfig(seed=-1), r"seed must be an integer in \[0, 2\*\*31\)"),
    (lambda: TrainingConfig(seed=2 ** 31), "seed"),
    (lambda: TrainingConfig(seed=1.0), "seed"),
    (lambda: TrainingConfig(ema_momentum=1.0), r"ema_momentum must be a number in \[0, 1\)"),
    (lambda: TrainingConfig(ema_momentum=-0.1), "ema_momentum"),
    (lambda: TrainingConfig(ema_momentum=True), "ema_momentum"),
    (lambda: TrainingConfig(mixed_precision=True, mixed_precision_dtype="float8"),
     "mixed_precision_dtype must be one of float16, bfloat16"),
    (lambda: TrainingConfig(mixed_precision_dtype="bfloat16"), "applies only with mixed_precision: add --mixed-precision"),
    (lambda: TrainingConfig(importance_samples=0), "importance_samples must be a positive integer"),
    (lambda: TrainingConfig(importance_samples=5, warmup_epochs=10), "importance_samples 5 .*no warm-up"),
    (lambda: TrainingConfig(importance_samples=5, beta=2.0), "needs beta 1"),
    (lambda: TrainingConfig(initial_weights=""), "initial_weights must be the path of a run folder"),
    (lambda: Config(data=DataConfig(binarization="none")), "bernoulli"),
    (lambda: Config(model=ModelConfig(likelihood="continuous_bernoulli")), "binarization to 'none'"),
])
def test_bad_values_raise_value_error_naming_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_fields_in_json_are_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"latent_dims": 3}}))
    with pytest.raises(ValueError, match="latent_dims"):
        load_config(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="run folder"):
        load_config(str(tmp_path / "missing.json"))
