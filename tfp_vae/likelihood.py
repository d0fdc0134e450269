"""The standard likelihood protocol on dynamically binarized Fashion-MNIST, for named models.

The protocol of the published figures (VampPrior, Exemplar VAE): training images re-binarized
every epoch, the last 10,000 training images held out for validation (model selection: the epoch
with the best validation ELBO is kept), test images binarized once with a fixed seed, and
-log p(x) estimated by importance sampling with 5,000 samples on all 10,000 test images.

    from tfp_vae import likelihood
    row = likelihood.run("mlp", "runs/likelihood/mlp", time_budget=3600)   # seconds, resumable
    print(likelihood.table_row(row))

Both phases resume: training from the run folder's backup (tfp_vae.training), the evaluation
from the parts of the test set already done (WORKDIR/likelihood_parts/, 1,000 images each,
with the same samples as an evaluation in one go). WORKDIR/likelihood.json holds the result.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import csv
import json
import math
import os
import platform
import time
from typing import Optional

import numpy as np

from tfp_vae import data as data_lib
from tfp_vae import checkpoint, comparison, evaluation, report, training
from tfp_vae.config import Config, load_config
from tfp_vae.registry import MODELS, Model

__all__ = ["AGGREGATE_HEADER", "MODELS", "Model", "PART_EXAMPLES", "TABLE_HEADER", "aggregate_row", "evaluate_in_parts",
           "run", "table_row"]

PART_EXAMPLES = 1000
# A fine-tuning run's record of the run it started from (workdir, epochs, training_seconds).
STARTS_FROM = "starts_from.json"
EVALUATION_BATCH = 100
TABLE_HEADER = ("| model | parameters | epochs | training time | test ELBO | test NLL (K = 5000) |\n"
                "|---|---:|---:|---:|---:|---:|")
AGGREGATE_HEADER = ("| model | test NLL | mean KL(q(z\\|x) \\|\\| p(z)) | I_q(x; z) | KL(q(z) \\|\\| p(z)) "
                    "| the same, leave-one-out (lower estimate) | active units |\n"
                    "|---|---:|---:|---:|---:|---:|---:|")


def evaluate_in_parts(workdir: str, num_samples: int = 5000, examples: Optional[int] = None,
                      deadline: Optional[float] = None, verbose: int = 1, tag: str = "",
                      jit_compile: bool = True) -> Optional[dict]:
    """-log p(x) on the test split of the run in `workdir`, PART_EXAMPLES images at a time.

    Each finished part is saved under a folder named by `tag` (which weights: the runner passes
    the epoch count), K and the number of images; a part is only started while the slowest part
    so far would end before `deadline` (a time.time() value). Returns the summary, or None when
    time ran out first; call again to continue. `jit_compile`: as in evaluation.evaluate. XLA draws
    other random numbers than TensorFlow's kernels for the same seed, so parts computed with and
    without it are different (equally valid) estimates: they combine, but do not repeat digit for digit.
    """
    config = load_config(os.path.join(workdir, "config.json"))
    available = data_lib.num_examples(config.data, "test")
    total = available if examples is None else min(examples, available)
    folder = os.path.join(workdir, comparison.PARTS_DIRECTORY, comparison.parts_folder_name(tag, num_samples, total))
    os.makedirs(folder, exist_ok=True)
    parts = math.ceil(total / PART_EXAMPLES)
    model, prior, slowest = None, None, 0.0
    dataset = data_lib.input_pipeline(config.data, "test", EVALUATION_BATCH, shuffle=False)
    for part in range(parts):
        path = os.path.join(folder, comparison.part_file_name(part, parts))
        if os.path.exists(path):
            continue
        if deadline is not None and time.time() + slowest > deadline:
            return None
        if model is None:
            model = training.load(workdir)
            prior = model.prior  # once: a learnt prior's current value, as constants
        started = time.time()
        first = part * PART_EXAMPLES
        result = evaluation.evaluate(
            model.encoder, model.decoder, prior, dataset.skip(first // EVALUATION_BATCH), num_samples,
            examples=min(PART_EXAMPLES, total - first), batch_offset=first // EVALUATION_BATCH,
            per_example=True, verbose=verbose, jit_compile=jit_compile)
        evaluation.write_npz({**result["per_example"], "seconds": result["seconds"]}, path)
        slowest = max(slowest, time.time() - started)
    pieces = [np.load(os.path.join(folder, comparison.part_file_name(part, parts))) for part in range(parts)]
    values = {name: np.concatenate([piece[name] for piece in pieces])
              for name in ("log_likelihood", "log_likelihood_half", "elbo", "reconstruction")}
    summary = evaluation.summarize(values, num_samples, int(np.prod(config.model.image_shape)),
                                   continuous=config.model.likelihood != "bernoulli")
    summary["seconds"] = float(sum(float(piece["seconds"]) for piece in pieces))
    summary["split"] = "test"
    return summary


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'unknown'})"


def run(name: str, workdir: str, time_budget: Optional[float] = None, *, config: Optional[Config] = None,
        num_samples: int = 5000, examples: Optional[int] = None, reference: Optional[str] = None,
        verbose: int = 1, jit_compile: bool = True, epochs: Optional[int] = None,
        start_from: Optional[str] = None) -> dict:
    """Trains (or continues) model `name` in `workdir`, then evaluates it; returns the row's values.

    `time_budget` (seconds) covers both phases of this call; the returned dict has "status"
    "training", "evaluating" or "done". `config` replaces the registered one (tests shrink it);
    `examples` caps the test images (the protocol uses all). `reference`: the folder of a finished
    run whose aggregate-posterior numbers the report (report.md) shows next to this one's.
    `jit_compile`: XLA for the evaluation (benchmarks/evaluation_speed.py measures which is faster).
    `epochs` replaces the config's count: a finished run then trains on from its last epoch's backup
    (weights and optimizer state), and the cosine schedule is re-stretched to the new length, so the
    added epochs restart from that longer schedule's rate at the step reached (a warm restart, not
    the run a fresh schedule of `epochs` would have been). The best validation epoch so far stays
    the one kept until a later epoch beats it; the evaluation is redone for the weights kept.
    `start_from`: the folder of a finished run whose weights start this one; default for a
    fine-tuning model (`Model.start_from`): that model's folder beside `workdir`. Its training time
    is reported beside this run's.
    """
    if config is None:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
        config = MODELS[name][1]
    if epochs is not None:
        config = config.replace(training={"epochs": epochs})  # TrainingConfig validates it
    start_name = MODELS[name].start_from if name in MODELS else None
    if start_from is None and start_name:
        start_from = os.path.join(os.path.dirname(os.path.normpath(workdir)), start_name)
    # What the run started from, as it was then: the source run may since have been extended or moved.
    start_path = os.path.join(workdir, STARTS_FROM)
    start = None
    if os.path.exists(start_path):
        with open(start_path) as handle:
            start = json.load(handle)
        config = config.replace(training={"initial_weights": start["workdir"]})
    elif start_from is not None:
        source = _finished_metrics(start_from, start_name)
        start = {"workdir": start_from, "epochs": source["epochs"], "training_seconds": source["training_seconds"]}
        config = config.replace(training={"initial_weights": start_from})
    started = time.time()
    deadline = None if time_budget is None else started + time_budget
    metrics_path = os.path.join(workdir, "metrics.json")
    metrics = None
    if os.path.exists(metrics_path):
        with open(metrics_path) as handle:
            metrics = json.load(handle)
    checkpoint.check_not_shortened(workdir, config.training.epochs)
    recorded_now = start is not None and not os.path.exists(start_path)
    if recorded_now:
        # Before training, which a kill may cut short: a resumed run must not read the source
        # again, which may have trained on meanwhile. Taken back if no epoch got done, so a
        # corrected --start-from is not overruled by a start that never happened.
        os.makedirs(workdir, exist_ok=True)
        checkpoint.write_json(start, start_path)
    if metrics is None or not metrics.get("finished") or metrics["epochs"] < config.training.epochs:
        try:
            metrics = training.train(config, workdir, verbose=verbose, time_budget=time_budget)
        except BaseException:
            if recorded_now and not os.path.exists(os.path.join(workdir, checkpoint.BACKUP)):
                os.remove(start_path)
            raise
    row = {
        "model": name, "description": MODELS[name][0] if name in MODELS else "",
        "parameters": metrics["parameters"], "epochs": metrics["epochs"],
        "epochs_planned": metrics["epochs_planned"], "best_epoch": metrics.get("best_epoch"),
        "training_seconds": metrics["training_seconds"], "validation_elbo": metrics["validation"].get("elbo"),
        "machine": _machine(), "status": "training",
        "timed_epochs": _timed_epochs(workdir),
    }
    if start is not None:
        row["starts_from"] = start
    if metrics["finished"]:
        row["status"] = "evaluating"
        summary = evaluate_in_parts(workdir, num_samples, examples, deadline, verbose,
                                    tag=f"epochs{metrics['epochs']}-", jit_compile=jit_compile)
        if summary is not None:
            row.update(status="done", test_elbo=summary["elbo"], test_nll=summary["negative_log_likelihood"],
                       test_nll_stderr=summary["log_likelihood_stderr"],
                       test_nll_half=None if summary["log_likelihood_half"] is None else -summary["log_likelihood_half"],
                       num_samples=num_samples,
                       test_examples=summary["examples"], evaluation_seconds=summary["seconds"],
                       evaluation_jit_compile=jit_compile)  # of this call's parts
            # Where the KL goes, next to the likelihood: evaluation.json feeds the report.
            checkpoint.write_json(dict(summary, likelihood=config.model.likelihood,
                                     batch_size=EVALUATION_BATCH),
                                os.path.join(workdir, "evaluation.json"))
            # For a two-level model, of z_top (tfp_vae.hierarchy.TopLevel).
            row["aggregate_posterior"] = _diagnosis(workdir, examples, reference, summary)
    checkpoint.write_json(row, os.path.join(workdir, "likelihood.json"))
    return row


def _diagnosis(workdir: str, examples: Optional[int], reference: Optional[str], evaluated: dict) -> dict:
    """The aggregate-posterior numbers of the report (tfp_vae.report) on the test images of the
    evaluation `evaluated`. The last report is reused unless the weights are newer, it lacks the
    reference, it covers other images (trainers/diagnose.py --split/--examples write the same
    file), or it shows another likelihood than this evaluation's (evaluated again since)."""
    path = os.path.join(workdir, "diagnosis.json")
    weights = os.path.join(workdir, checkpoint.WEIGHTS)
    keys = ("mean_kl", "mean_kl_stderr", "mutual_information", "mutual_information_stderr",
            "marginal_kl", "marginal_kl_stderr", "marginal_kl_leave_one_out", "marginal_kl_leave_one_out_stderr",
            "active_units", "examples", "kl_is_exact")
    summary = None
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(weights):
        with open(path) as handle:
            summary = json.load(handle)
        if reference is not None and summary.get("reference", {}).get("workdir") != reference:
            summary = None
        elif any(key not in summary for key in keys):  # written by an older version of the report
            summary = None
        elif (summary.get("split"), summary["examples"], summary.get("negative_log_likelihood")) != (
                "test", evaluated["examples"], evaluated["negative_log_likelihood"]):
            summary = None
    if summary is None:
        summary = report.diagnose_run(workdir, split="test", examples=examples, reference=reference)
    numbers = {key: summary[key] for key in keys}
    if "level" in summary:  # a two-level model's report covers z_top
        numbers["level"] = summary["level"]
    return numbers


def _finished_metrics(workdir: str, name: Optional[str]) -> dict:
    """metrics.json of a finished run, which a fine-tuning run starts from."""
    path = os.path.join(workdir, "metrics.json")
    metrics = None
    if os.path.exists(path):
        with open(path) as handle:
            metrics = json.load(handle)
    if metrics is None or not metrics.get("finished"):
        state = "has not finished training" if os.path.isdir(workdir) else "does not exist"
        first = f"benchmarks/likelihood.py --model {name}" if name else "that run"
        raise ValueError(f"this model starts from the weights of the finished run in {workdir}, which {state}: "
                         f"run {first} first (or pass --start-from FOLDER, a finished run of the same model), "
                         "then this one.")
    return metrics


def _timed_epochs(workdir: str) -> int:
    """How many epochs the epoch clock timed: fewer than were trained when part of the run was
    trained by a version without it, so training_seconds then covers only those epochs."""
    path = os.path.join(workdir, checkpoint.EPOCH_TIMES)
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        return len({row["epoch"] for row in csv.DictReader(handle)})


def _duration(seconds: float) -> str:
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _training_time(row: dict) -> str:
    timed = row.get("timed_epochs", row["epochs"])
    text = _duration(row["training_seconds"])
    if timed < row["epochs"]:
        text += f" ({timed} of {row['epochs']} epochs timed)"
    start = row.get("starts_from")
    if start:  # the fine-tuning after the run it starts from
        text = f"{_duration(start['training_seconds'])} + {text} (after {start['epochs']} epochs of its start)"
    return text


def table_row(row: dict) -> str:
    """The README table's row: model, parameters, epochs, training time, test ELBO, test NLL."""
    best = row.get("best_epoch")
    epochs = f"{row['epochs']}" + ("" if best is None else " (best: its start)" if best == 0 else f" (best {best})")
    if row["status"] != "done":
        return (f"| {row['model']} | {row['parameters']:,} | {epochs} of {row['epochs_planned']} | "
                f"{_training_time(row)} | ({row['status']}) | ({row['status']}) |")
    return (f"| {row['model']} | {row['parameters']:,} | {epochs} | {_training_time(row)} | "
            f"{row['test_elbo']:.2f} | **{row['test_nll']:.2f}** ± {report.format_number(row['test_nll_stderr'])} |")


def aggregate_row(row: dict) -> str:
    """Where each model's KL goes on the test set (tfp_vae.diagnosis): the per-example KL splits
    into the mutual information I_q(x; z) and the marginal KL of the aggregate posterior q(z)."""
    if row.get("status") != "done":
        return f"| {row['model']} | ({row['status']}) | | | | | |"
    numbers = row["aggregate_posterior"]

    def value(name):
        return f"{numbers[name]:.2f} ± {report.format_number(numbers[name + '_stderr'])}"
    level = " (z_top)" if numbers.get("level") else ""
    return (f"| {row['model']}{level} | {row['test_nll']:.2f} | {value('mean_kl')} | {value('mutual_information')} | "
            f"{value('marginal_kl')} | {value('marginal_kl_leave_one_out')} | {numbers['active_units']} |")
