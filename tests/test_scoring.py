"""Seeded validation scoring of tuning trials: repeatable, and harmless to the training noise."""
import numpy as np
import tf_keras

import tfp_vae
from tfp_vae import data as data_lib
from tfp_vae import scoring

BASE = tfp_vae.Config().replace(
    model={"architecture": "mlp", "latent_dim": 2, "hidden_units": (16,)},
    data={"train_examples": 512, "validation_examples": 256},
    training={"epochs": 1, "batch_size": 64, "seed": 0})


def test_scoring_each_epoch_leaves_the_training_noise_alone():
    """A trial scores its validation data after every epoch with a fixed draw of z. That must not
    restart the training function's random streams: with the learning rate at 0 and the same
    batches in the same order, an epoch's training loss depends on its sampling noise only, so
    equal losses in two epochs mean the second replayed the first's noise."""
    validation = data_lib.make_datasets(BASE).validation
    x = np.concatenate([batch.numpy() for batch in validation])

    def fit_three_epochs(at_epoch_end):
        tf_keras.utils.set_random_seed(0)
        model = tfp_vae.VAE(BASE.model)
        model.compile(tf_keras.optimizers.Adam(learning_rate=0.0))
        history = model.fit(x, batch_size=64, epochs=3, shuffle=False, verbose=0,
                            callbacks=[tf_keras.callbacks.LambdaCallback(
                                on_epoch_end=lambda epoch, logs: at_epoch_end(model))])
        return model, history.history["loss"]

    scores = []
    model, losses = fit_three_epochs(lambda model: scores.append(scoring.score(model, validation)))
    assert len(set(losses)) == 3, losses
    # The weights never moved, so the fixed draw scores them the same every time, whatever the
    # global seed is.
    tf_keras.utils.set_random_seed(123)
    assert scores[0] == scores[1] == scores[2] == scoring.score(model, validation)
    # What the check guards against: a global reseed restarts the training function's noise.
    _, replayed = fit_three_epochs(lambda model: tf_keras.utils.set_random_seed(scoring.SCORE_SEED))
    assert replayed[1] == replayed[0] and replayed[2] == replayed[0], replayed
