"""The likelihood protocol runner: resumable training and evaluation, the table row."""
from tfp_vae import _env  # noqa: F401

import json
import os
import time

import numpy as np
import pytest

from tfp_vae import checkpoint, data, evaluation, likelihood, report, training
from tfp_vae.config import load_config


def tiny_config(epochs=2):
    return likelihood.MODELS["mlp"].config.replace(
        model={"hidden_units": (32,), "latent_dim": 4},
        data={"train_examples": 512, "validation_examples": 256},
        training={"epochs": epochs, "batch_size": 64, "warmup_epochs": 0.5})


def test_an_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        likelihood.run("nope", "/nonexistent")


def test_a_budgeted_run_stops_then_resumes_to_a_full_row(tmp_path):
    workdir = str(tmp_path / "run")
    first = likelihood.run("tiny", workdir, time_budget=1e-3, config=tiny_config(), num_samples=8,
                           examples=1500, verbose=0)
    assert first["status"] == "training" and first["epochs"] == 1
    assert "(training)" in likelihood.table_row(first)
    row = likelihood.run("tiny", workdir, config=tiny_config(), num_samples=8, examples=1500, verbose=0)
    assert row["status"] == "done" and row["epochs"] == 2 and row["test_examples"] == 1500
    assert 100 < row["test_nll"] < 800 and row["test_nll"] <= -row["test_elbo"] + 1e-3  # the bound is tighter
    assert row["parameters"] > 0 and row["training_seconds"] > 0
    with open(os.path.join(workdir, "likelihood.json")) as handle:
        assert json.load(handle) == json.loads(json.dumps(row))
    text = likelihood.table_row(row)
    assert text.startswith("| tiny |") and f"{row['test_nll']:.2f}" in text
    assert row["timed_epochs"] == 2 and "timed" not in text
    # Epochs trained before the epoch clock existed are not in training_seconds: the row says so.
    assert "(1 of 2 epochs timed)" in likelihood.table_row(dict(row, timed_epochs=1))
    # A fine-tune that kept its starting weights (tfp_vae.training: best_epoch 0) says so.
    assert "| 2 (best: its start) |" in likelihood.table_row(dict(row, best_epoch=0))
    assert text.count("|") == likelihood.TABLE_HEADER.splitlines()[0].count("|")
    # The aggregate-posterior report ran on the same test images: the KL splits into I_q + marginal.
    numbers = row["aggregate_posterior"]
    assert numbers["examples"] == 1500 and numbers["kl_is_exact"]
    assert numbers["mean_kl"] == pytest.approx(numbers["mutual_information"] + numbers["marginal_kl"], abs=0.2)
    for name in ("evaluation.json", "diagnosis.json", "report.md"):
        assert os.path.exists(os.path.join(workdir, name))
    aggregate = likelihood.aggregate_row(row)
    assert f"{numbers['marginal_kl']:.2f}" in aggregate
    assert aggregate.count("|") == likelihood.AGGREGATE_HEADER.splitlines()[0].replace("\\|", "").count("|")

    # A learnt prior's report shows the standard-prior run's KL split next to its own.
    learnt = tiny_config().replace(model={"prior": "mixture", "prior_components": 5})
    other = likelihood.run("tiny_mixture", str(tmp_path / "mixture"), config=learnt, num_samples=8, examples=1500,
                           reference=workdir, verbose=0)
    with open(os.path.join(tmp_path, "mixture", "report.md")) as handle:
        text = handle.read()
    assert f"## Against {workdir}" in text and "`mixture` prior" in text and "`standard_normal`" in text
    assert f"{numbers['marginal_kl']:.3f}" in text  # the reference's marginal KL, in the table
    assert f"{other['aggregate_posterior']['marginal_kl']:.3f}" in text
    assert f"{-row['test_nll']:.2f}" in text  # and both likelihoods

    # A report written by an older version (no leave-one-out numbers) is redone, not a KeyError.
    path = os.path.join(workdir, "diagnosis.json")
    with open(path) as handle:
        older = json.load(handle)
    del older["marginal_kl_leave_one_out"], older["marginal_kl_leave_one_out_stderr"]
    with open(path, "w") as handle:
        json.dump(older, handle)
    again = likelihood.run("tiny", workdir, config=tiny_config(), num_samples=8, examples=1500, verbose=0)
    assert again["aggregate_posterior"]["marginal_kl_leave_one_out"] == pytest.approx(
        numbers["marginal_kl_leave_one_out"], rel=1e-5)
    with open(path) as handle:
        assert "marginal_kl_leave_one_out" in json.load(handle)

    # trainers/diagnose.py on the run folder (other images, other split) writes the same file:
    # the runner's row does not take those numbers for the test set's.
    for other_images in (dict(split="test", examples=500), dict(split="validation")):
        other = report.diagnose_run(workdir, **other_images)
        assert (other["split"], other["examples"]) in (("test", 500), ("validation", 256))
        again = likelihood.run("tiny", workdir, config=tiny_config(), num_samples=8, examples=1500, verbose=0)
        assert again["aggregate_posterior"]["examples"] == 1500
        assert again["aggregate_posterior"]["marginal_kl"] == pytest.approx(numbers["marginal_kl"], rel=1e-5)
        with open(path) as handle:
            assert json.load(handle)["split"] == "test"
    # A report that shows another likelihood (the run was evaluated again since) is written anew.
    with open(path) as handle:
        stale = dict(json.load(handle), negative_log_likelihood=123.0)
    with open(path, "w") as handle:
        json.dump(stale, handle)
    likelihood.run("tiny", workdir, config=tiny_config(), num_samples=8, examples=1500, verbose=0)
    with open(path) as handle:
        assert json.load(handle)["negative_log_likelihood"] == pytest.approx(row["test_nll"], rel=1e-9)


def test_evaluation_in_parts_equals_one_evaluation_and_resumes(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    training.train(tiny_config(epochs=1), workdir, verbose=0)
    assert likelihood.evaluate_in_parts(workdir, 8, examples=2500, deadline=time.time() - 1, verbose=0) is None
    in_parts = likelihood.evaluate_in_parts(workdir, 8, examples=2500, verbose=0)
    folder = os.path.join(workdir, "likelihood_parts", "K8-N2500")
    assert sorted(os.listdir(folder)) == [f"part-00{index}-of-003.npz" for index in range(3)]
    model = training.load(workdir)
    config = load_config(os.path.join(workdir, "config.json"))
    dataset = data.input_pipeline(config.data, "test", likelihood.EVALUATION_BATCH, shuffle=False)
    whole = evaluation.evaluate(model.encoder, model.decoder, model.prior, dataset, 8, examples=2500, verbose=0)
    for name in ("log_likelihood", "elbo", "log_likelihood_half"):
        assert in_parts[name] == pytest.approx(whole[name], rel=1e-6)
    # Finished parts are reused: removing one recomputes only that one, identically.
    os.remove(os.path.join(folder, "part-001-of-003.npz"))
    again = likelihood.evaluate_in_parts(workdir, 8, examples=2500, verbose=0)
    assert again["log_likelihood"] == pytest.approx(in_parts["log_likelihood"], rel=1e-6)
    # Without XLA the setting reaches the estimate. Its random draws differ (XLA's stateless
    # normal sampler is not TensorFlow's, even for the same seed and algorithm), so the recomputed
    # part is another estimate of the same bound: 0.05 nats is ~5 standard errors here.
    os.remove(os.path.join(folder, "part-002-of-003.npz"))
    settings = []
    original = evaluation.importance_sampling_fn

    def recording(*args, **kwargs):
        settings.append(kwargs["jit_compile"])
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "importance_sampling_fn", recording)
    without_xla = likelihood.evaluate_in_parts(workdir, 8, examples=2500, verbose=0, jit_compile=False)
    assert settings and not any(settings)
    assert without_xla["log_likelihood"] == pytest.approx(in_parts["log_likelihood"], abs=0.05)
    assert np.isfinite(again["log_likelihood_stderr"])


def test_a_two_level_model_gets_its_row_and_a_report_of_its_top_layer(tmp_path):
    config = tiny_config(epochs=1).replace(model={"latent_dim": 4, "top_latent_dim": 2, "conditional_units": 8})
    row = likelihood.run("tiny_two_level", str(tmp_path), config=config, num_samples=8, examples=1000, verbose=0)
    assert row["status"] == "done" and np.isfinite(row["test_nll"])
    assert f"**{row['test_nll']:.2f}**" in likelihood.table_row(row)
    numbers = row["aggregate_posterior"]
    assert numbers["level"].startswith("z_top (2 of 4 dimensions)")
    assert likelihood.aggregate_row(row).startswith("| tiny_two_level (z_top) |")
    with open(tmp_path / "diagnosis.json") as handle:
        assert json.load(handle)["latent_dim"] == 2
    assert "The latents here are z_top" in (tmp_path / "report.md").read_text()


def test_a_finished_run_extends_to_more_epochs_and_is_evaluated_again(tmp_path):
    workdir = str(tmp_path / "run")
    first = likelihood.run("tiny", workdir, config=tiny_config(), num_samples=8, examples=1000, verbose=0)
    assert first["status"] == "done" and first["epochs"] == 2
    steps_per_epoch = 512 // 64
    longer = likelihood.run("tiny", workdir, config=tiny_config(), num_samples=8, examples=1000, verbose=0, epochs=3)
    assert longer["status"] == "done" and longer["epochs"] == 3 and longer["epochs_planned"] == 3
    with open(os.path.join(workdir, "metrics.json")) as handle:
        # Continued from the epoch-2 backup (weights and optimizer), not trained again from scratch.
        assert json.load(handle)["optimizer_steps"] == 3 * steps_per_epoch
    assert load_config(os.path.join(workdir, "config.json")).training.epochs == 3
    # The evaluation of the longer run's weights is a new one, beside the first.
    parts = sorted(os.listdir(os.path.join(workdir, "likelihood_parts")))
    assert parts == ["epochs2-K8-N1000", "epochs3-K8-N1000"]
    with pytest.raises(ValueError, match="already trained 3 epochs, more than the 2 asked for.*pass epochs=3 or more"):
        likelihood.run("tiny", workdir, config=tiny_config(), num_samples=8, examples=1000, verbose=0, epochs=2)
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        likelihood.run("tiny", workdir, config=tiny_config(), verbose=0, epochs=0)


def test_the_start_is_recorded_before_training_and_taken_back_if_no_epoch_ran(tmp_path, monkeypatch):
    base = str(tmp_path / "base")
    likelihood.run("tiny", base, config=tiny_config(epochs=1), num_samples=8, examples=1000, verbose=0)
    tuning = tiny_config(epochs=1).replace(training={"importance_samples": 4, "warmup_epochs": 0})
    tuned = tmp_path / "tuned"

    def killed_after_an_epoch(config, workdir, **kwargs):
        os.makedirs(os.path.join(workdir, checkpoint.BACKUP))
        raise KeyboardInterrupt

    def refused_at_the_start(config, workdir, **kwargs):
        raise ValueError("the weights do not fit")

    monkeypatch.setattr(likelihood.training, "train", refused_at_the_start)
    with pytest.raises(ValueError, match="do not fit"):
        likelihood.run("tiny_iwae", str(tuned), config=tuning, start_from=base, verbose=0)
    assert not (tuned / likelihood.STARTS_FROM).exists()
    monkeypatch.setattr(likelihood.training, "train", killed_after_an_epoch)
    with pytest.raises(KeyboardInterrupt):
        likelihood.run("tiny_iwae", str(tuned), config=tuning, start_from=base, verbose=0)
    with open(tuned / likelihood.STARTS_FROM) as handle:
        record = json.load(handle)
    assert (record["workdir"], record["epochs"]) == (base, 1)


def test_a_fine_tuning_model_starts_from_a_finished_run_and_reports_both_times(tmp_path):
    base = str(tmp_path / "base")
    with pytest.raises(ValueError, match="which does not exist: run that run first .or pass --start-from"):
        likelihood.run("tiny_iwae", str(tmp_path / "early"), config=tiny_config(), start_from=base, verbose=0)
    first = likelihood.run("tiny", base, config=tiny_config(), num_samples=8, examples=1000, verbose=0)
    tuning = tiny_config(epochs=1).replace(training={"importance_samples": 4, "warmup_epochs": 0})
    row = likelihood.run("tiny_iwae", str(tmp_path / "tuned"), config=tuning, start_from=base, num_samples=8,
                         examples=1000, verbose=0)
    assert row["status"] == "done" and row["epochs"] == 1
    assert row["starts_from"] == {"workdir": base, "epochs": 2, "training_seconds": first["training_seconds"]}
    assert "(after 2 epochs of its start)" in likelihood.table_row(row)
    assert load_config(str(tmp_path / "tuned" / "config.json")).training.initial_weights == base
    # The row keeps what the run started from, even after the source moved on (here: renamed).
    os.rename(base, str(tmp_path / "moved"))
    again = likelihood.run("tiny_iwae", str(tmp_path / "tuned"), config=tuning, start_from=str(tmp_path / "moved"),
                           num_samples=8, examples=1000, verbose=0)
    assert again["starts_from"] == row["starts_from"] and again["test_nll"] == row["test_nll"]
