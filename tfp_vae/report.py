"""diagnose_run(workdir): the aggregate-posterior report of a trained run, as JSON, Markdown and PNGs.

    from tfp_vae import report
    summary = report.diagnose_run("runs/default", split="test")

writes WORKDIR/diagnosis.json (every number), WORKDIR/report.md (tables, the identity explained,
the pictures linked) and WORKDIR/diagnosis/*.png.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import json
import math
import os
import time
from typing import Optional

import numpy as np

from tfp_vae import data as data_lib
from tfp_vae import diagnosis, hierarchy, plots
from tfp_vae.config import load_config
from tfp_vae.checkpoint import write_json
from tfp_vae.training import load

__all__ = ["CLASS_NAMES", "diagnose_run", "format_number", "markdown_report", "save_pictures"]

CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(digit) for digit in range(10)],
}
PICTURES = {
    "latent_scatter": "posterior means E[q(z|x)], coloured by class",
    "latent_histograms": "per-dimension histograms of q(z) against the prior",
    "kl_bars": "per-dimension KL",
    "traversals": "latent traversals",
    "samples_and_reconstructions": "prior samples next to reconstructions",
    "prior_holes": "log q(z) at prior samples vs at aggregate-posterior samples",
}
# Enough points for the pictures without drawing 10,000 markers.
MOST_SCATTER_POINTS = 5000
MOST_DIMENSIONS_SHOWN = 16
TRAVERSED_DIMENSIONS = 8
TRAVERSAL_OFFSETS = np.linspace(-3.0, 3.0, 9)


def _principal_directions(loc: np.ndarray):
    """Projects posterior means on the top two principal directions (or the axes when latent <= 2)."""
    centred = loc - loc.mean(0)
    if loc.shape[1] == 1:
        return np.column_stack([loc[:, 0], np.zeros(len(loc))]), ("z1", "(none)")
    if loc.shape[1] == 2:
        return loc, ("z1", "z2")
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ directions[:2].T
    if projected.shape[1] < 2:  # one example has one direction only (an SVD gives min(N, D))
        projected = np.column_stack([projected, np.zeros(len(loc))])
    return projected, ("first principal direction", "second principal direction")


def save_pictures(model, result: diagnosis.Diagnosis, folder: str, class_names=None, seed: int = 0) -> dict:
    """Draws every picture of the report into `folder`; returns {name: file name}."""
    os.makedirs(folder, exist_ok=True)
    posteriors, summary = result.posteriors, result.summary
    latent_dim = posteriors.loc.shape[1]
    files = {name: f"{name}.png" for name in PICTURES}

    def path(name):
        return os.path.join(folder, files[name])

    shown = np.random.default_rng(seed).permutation(len(posteriors.loc))[:MOST_SCATTER_POINTS]
    points, axis_names = _principal_directions(posteriors.loc.astype(np.float64))
    plots.save_latent_scatter(points[shown], posteriors.labels[shown], path("latent_scatter"),
                              PICTURES["latent_scatter"], class_names, axis_names)

    per_dimension = summary["per_dimension"]
    activity = np.asarray(summary["posterior_mean_variance"])
    ranking = np.argsort(-np.asarray(per_dimension.get("mean_kl", activity)))  # most informative first
    moments = diagnosis.gaussian_prior_moments(model.prior)
    prior_loc, prior_scale = (moments[0], np.sqrt(np.diag(moments[1]))) if moments else (None, None)
    plots.save_latent_histograms(posteriors.latents, path("latent_histograms"),
                                 sorted(ranking[:MOST_DIMENSIONS_SHOWN]), PICTURES["latent_histograms"],
                                 prior_loc, prior_scale, result.prior_latents)
    if "mean_kl" in per_dimension:
        plots.save_kl_bars(per_dimension["mean_kl"], per_dimension["fitted_gaussian_kl"],
                           per_dimension["active"], path("kl_bars"), PICTURES["kl_bars"])
    else:  # a non-Gaussian prior has no per-dimension closed form: show the activity instead
        plots.save_kl_bars(activity, activity, per_dimension["active"], path("kl_bars"),
                           "variance over x of E[z_d | x] (no per-dimension KL for this prior)")

    # Traversals around the aggregate mean, in units of q(z)'s own spread per dimension.
    mean, spread = np.asarray(summary["mean"]), np.sqrt(np.diag(np.asarray(summary["covariance"])))
    traversed = ranking[:min(TRAVERSED_DIMENSIONS, latent_dim)]
    latents = np.repeat(mean[None, None], len(traversed), 0).repeat(len(TRAVERSAL_OFFSETS), 1)
    for row, dimension in enumerate(traversed):
        latents[row, :, dimension] += TRAVERSAL_OFFSETS * spread[dimension]
    images = model.decode(latents.reshape(-1, latent_dim).astype(np.float32)).numpy()
    plots.save_traversal_grid(images.reshape(*latents.shape[:2], *images.shape[1:]), path("traversals"),
                              [f"z{d + 1}" for d in traversed], TRAVERSAL_OFFSETS, PICTURES["traversals"])

    count = min(16, len(posteriors.x))
    samples = model.decode(result.prior_latents[:16].astype(np.float32)).numpy()
    reconstructions = model.decode(posteriors.loc[:count].astype(np.float32)).numpy()
    plots.save_samples_and_reconstructions(samples, posteriors.x[:count], reconstructions,
                                           path("samples_and_reconstructions"),
                                           PICTURES["samples_and_reconstructions"])
    holes = summary["prior_holes"]
    plots.save_prior_hole_histogram(result.log_density_at_prior, result.log_density_leave_one_out,
                                    holes["threshold_log_density"], path("prior_holes"),
                                    PICTURES["prior_holes"])
    return files


def format_number(value, digits=2):
    """`value` to `digits` decimals, or "n/a" when it is undefined: None (how JSON files carry it,
    e.g. a standard error from one example) or NaN."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _with_error(value, stderr):
    return f"{value:.3f} ± {format_number(stderr, 3)}"


def markdown_report(summary: dict, pictures: dict, folder: str, class_names=None, evaluation=None) -> str:
    """The report's Markdown: tables of `summary`, the identity explained, `pictures` linked."""
    identity = summary["identity"]
    lines = [
        f"# Aggregate-posterior report: {summary['split']} split, {summary['examples']} examples",
        "",
        *([f"The latents here are {summary['level']}.", ""] if summary.get("level") else []),
        "A VAE pays KL(q(z|x) || p(z)) for every example. Averaged over the data this splits exactly "
        "(Hoffman & Johnson 2016, \"ELBO surgery\") into **I_q(x; z)**, the information the code keeps "
        "about which example it came from (at most log N), plus **KL(q(z) || p(z))**, how far the "
        "aggregate posterior q(z) = mean over x of q(z|x) is from the prior. Only the second asks the "
        "latents of the whole population to look like the prior; the first is the price of encoding "
        "anything at all. Below, q(z) is the mixture of the N posteriors (exact log-sum-exp over all "
        "N); the z are Monte Carlo, so each estimate carries its standard error, and the two sides of "
        "the identity must agree within it. Being a mixture of N posteriors, this q(z) makes I_q read "
        "somewhat low and KL(q(z) || p(z)) high when N is small: quote numbers from a whole split.",
        "",
        "| quantity | nats | standard error |",
        "|---|---:|---:|",
        f"| mean over x of KL(q(z\\|x) \\|\\| p(z)){'' if summary['kl_is_exact'] else ' (Monte Carlo)'} "
        f"| {summary['mean_kl']:.3f} | {format_number(summary['mean_kl_stderr'], 3)} (over examples) |",
        f"| I_q(x; z) (at most log N = {summary['mutual_information_upper_bound']:.2f}) "
        f"| {summary['mutual_information']:.3f} | {format_number(summary['mutual_information_stderr'], 3)} |",
        f"| KL(q(z) \\|\\| p(z)) | {summary['marginal_kl']:.3f} | {format_number(summary['marginal_kl_stderr'], 3)} |",
        *([f"| KL(q(z) \\|\\| p(z)), each z's own posterior left out of q(z): a lower estimate "
           f"| {summary['marginal_kl_leave_one_out']:.3f} | {format_number(summary['marginal_kl_leave_one_out_stderr'], 3)} |"]
          if "marginal_kl_leave_one_out" in summary else []),
        f"| I_q + KL(q(z) \\|\\| p(z)) − mean KL (identity: 0) | {identity['difference']:.3f} "
        f"| {format_number(identity['difference_stderr'], 3)} |",
        f"| KL(N(mean, covariance of q(z)) \\|\\| p(z)) "
        f"| {format_number(summary['fitted_gaussian_kl'], 3)} | closed form |",
    ]
    if summary["fitted_gaussian_kl"] is not None:
        # For a Gaussian prior KL(q || p) = KL(N_fit || p) + KL(q || N_fit): shape beyond moments.
        lines.append(f"| KL(q(z) \\|\\| N(mean, covariance of q(z))): its non-Gaussian shape "
                     f"| {summary['marginal_kl'] - summary['fitted_gaussian_kl']:.3f} "
                     f"| {format_number(summary['marginal_kl_stderr'], 3)} |")
    lines += [
        f"| active units (Var_x E[z_d\\|x] > {summary['active_threshold']}) | "
        f"{summary['active_units']} of {summary['latent_dim']} | |",
    ]
    if "class_information" in summary:
        lines.append(f"| I(class; z) (at most log C = {summary['class_information_upper_bound']:.2f}) "
                     f"| {summary['class_information']:.3f} | {format_number(summary['class_information_stderr'], 3)} |")
    if evaluation:
        lines.append(f"| log p(x), K = {evaluation['num_samples']} importance samples "
                     f"({evaluation['examples']} {evaluation['split']} examples) "
                     f"| {evaluation['log_likelihood']:.2f} | {format_number(evaluation['log_likelihood_stderr'], 2)} |")
        lines.append(f"| ELBO | {evaluation['elbo']:.2f} | {format_number(evaluation['elbo_stderr'], 2)} |")
    holes = summary["prior_holes"]
    lines += [
        "", "## Prior holes", "",
        f"{100 * holes['fraction_below_threshold']:.1f}% of prior samples land where log q(z) is below "
        f"the 1st percentile of log q(z) at aggregate-posterior samples (1.0% if q(z) matched p(z)); "
        "KL(p(z) || q(z)) = "
        f"{_with_error(holes['prior_to_aggregate_kl'], holes['prior_to_aggregate_kl_stderr'])} "
        "nats. Samples from the prior in those regions decode to images the model never trained on.",
        "", f"![{PICTURES['prior_holes']}]({folder}/{pictures['prior_holes']})",
    ]
    if summary["per_class"]:
        lines += ["", "## Per class", "",
                  "Each class's own aggregate posterior q(z|class) = mean over the class of q(z|x), "
                  "against the prior. One class should *not* look like the prior (the prior is for "
                  "the whole population): compare its KL(q(z|class) || p(z)) with the population's "
                  f"KL(q(z) || p(z)) = {summary['marginal_kl']:.2f} above. ‖mean‖ is the distance of "
                  "the class's mean code from the origin; spread is its RMS standard deviation per "
                  "dimension (1 for the prior).", "",
                  "| class | examples | mean KL | I_q within class | KL(q(z\\|class) \\|\\| p(z)) "
                  "| fitted-Gaussian KL | ‖mean‖ | spread | active units |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, group in summary["per_class"].items():
            name = class_names[int(label)] if class_names and int(label) < len(class_names) else label
            lines.append(
                f"| {name} | {group['examples']} | {group['mean_kl']:.2f} "
                f"| {_with_error(group['mutual_information'], group['mutual_information_stderr'])} "
                f"| {_with_error(group['marginal_kl'], group['marginal_kl_stderr'])} "
                f"| {format_number(group['fitted_gaussian_kl'])} | {group['mean_norm']:.2f} "
                f"| {group['spread']:.2f} | {group['active_units']} |")
    lines += ["", "## Pictures", ""]
    for name, file_name in pictures.items():
        if name != "prior_holes":
            lines += [f"**{PICTURES[name]}**", "", f"![{PICTURES[name]}]({folder}/{file_name})", ""]
    return "\n".join(lines) + "\n"


def _read_optional_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _reference(reference: str, split: str, examples: int) -> dict:
    """What the report needs of a reference run (e.g. the same network with N(0, I)): its prior,
    its diagnosis and evaluation on the same split and number of examples."""
    found = _read_optional_json(os.path.join(reference, "diagnosis.json"))
    if found is None:
        raise FileNotFoundError(f"the reference run {reference} has no diagnosis.json: diagnose it first "
                                f"(python trainers/diagnose.py --workdir {reference}).")
    if (found["split"], found["examples"]) != (split, examples):
        raise ValueError(f"the reference run {reference} was diagnosed on {found['examples']} "
                         f"{found['split']} examples, this one on {examples} {split} examples: "
                         "diagnose both on the same images to compare them.")
    keys = ("mean_kl", "mean_kl_stderr", "kl_is_exact", "mutual_information", "mutual_information_stderr",
            "marginal_kl", "marginal_kl_stderr", "marginal_kl_leave_one_out",
            "marginal_kl_leave_one_out_stderr", "active_units", "latent_dim")
    values = {key: found.get(key) for key in keys}  # a report from an older version may lack some
    evaluation = _read_optional_json(os.path.join(reference, "evaluation.json"))
    if evaluation and (evaluation["split"], evaluation["examples"]) == (split, examples):
        values["log_likelihood"], values["elbo"] = evaluation["log_likelihood"], evaluation["elbo"]
    model = load_config(os.path.join(reference, "config.json")).model
    values.update(workdir=reference, prior=model.prior, architecture=model.architecture)
    return values


def _comparison(summary: dict, evaluation: Optional[dict], model, reference: dict) -> list:
    """Markdown lines: this run's KL split next to the reference run's (`model`: this ModelConfig)."""
    rows = [("mean over x of KL(q(z\\|x) \\|\\| p(z))", "mean_kl"), ("I_q(x; z)", "mutual_information"),
            ("KL(q(z) \\|\\| p(z))", "marginal_kl"),
            ("KL(q(z) \\|\\| p(z)), leave-one-out (lower estimate)", "marginal_kl_leave_one_out")]
    lines = ["", f"## Against {reference['workdir']}", "",
             f"The same split and examples; this run is `{model.architecture}` with the `{model.prior}` "
             f"prior, the reference `{reference['architecture']}` with `{reference['prior']}`. "
             "A learnt prior can absorb KL(q(z) || p(z)), the part of the KL "
             "that only says the aggregate posterior differs from the prior; I_q(x; z) is information "
             "the code carries, which no prior removes.", "",
             "| quantity (nats) | this run | reference | this run − reference |", "|---|---:|---:|---:|"]
    for label, key in rows:
        if summary.get(key) is None or reference.get(key) is None:
            continue
        lines.append(f"| {label} | {_with_error(summary[key], summary[key + '_stderr'])} "
                     f"| {_with_error(reference[key], reference[key + '_stderr'])} "
                     f"| {summary[key] - reference[key]:+.3f} |")
    if evaluation and "log_likelihood" in reference:
        for label, key in (("log p(x) (importance sampling)", "log_likelihood"), ("ELBO", "elbo")):
            lines.append(f"| {label} | {evaluation[key]:.2f} | {reference[key]:.2f} "
                         f"| {evaluation[key] - reference[key]:+.2f} |")
    lines.append(f"| active units | {summary['active_units']} of {summary['latent_dim']} "
                 f"| {reference['active_units']} of {reference['latent_dim']} | |")
    return lines


def diagnose_run(workdir: str, *, split: str = "test", examples: Optional[int] = None,
                 batch_size: int = 500, samples_per_example: int = 1, seed: int = 0,
                 reference: Optional[str] = None) -> dict:
    """Diagnoses the trained model of a run folder; writes diagnosis.json, report.md, diagnosis/*.png.

    `reference`: another diagnosed run folder (e.g. the same network with the N(0, I) prior) whose
    numbers the report shows next to this run's, under `summary["reference"]` too."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir} does not exist: pass the --workdir of a finished "
                                "trainers/train.py run.")
    started = time.time()
    config = load_config(os.path.join(workdir, "config.json"))
    model = load(workdir)
    dataset = data_lib.input_pipeline(config.data, split, batch_size, seed=seed, with_labels=True,
                                      shuffle=False)
    # A two-level model: the report covers z_top, the layer under the configured prior.
    level = hierarchy.TopLevel(model) if config.model.top_latent_dim else model
    result = diagnosis.diagnose(level.encoder, level.prior, dataset, examples=examples,
                                samples_per_example=samples_per_example, seed=seed, batch_size=batch_size)
    class_names = CLASS_NAMES.get(config.data.dataset)
    folder = "diagnosis"
    pictures = save_pictures(level, result, os.path.join(workdir, folder), class_names, seed)
    if config.model.top_latent_dim:
        result.summary["level"] = (f"z_top ({config.model.top_latent_dim} of {config.model.latent_dim} dimensions) "
                                   "of a two-level model; pictures decode z_bottom at its prior mean given z_top")
    summary = dict(result.summary, split=split, seed=seed, dataset=config.data.dataset,
                   class_names=class_names,
                   pictures={name: f"{folder}/{file}" for name, file in pictures.items()},
                   seconds=time.time() - started, units="nats")
    evaluation = _read_optional_json(os.path.join(workdir, "evaluation.json"))
    if evaluation and (evaluation["split"], evaluation["examples"]) != (split, summary["examples"]):
        evaluation = None  # another split or number of images: not this report's numbers
    # The likelihood the report shows: a runner that evaluates again knows when it is stale.
    summary["negative_log_likelihood"] = evaluation["negative_log_likelihood"] if evaluation else None
    text = markdown_report(summary, pictures, folder, class_names, evaluation)
    if reference is not None:
        summary["reference"] = _reference(reference, split, summary["examples"])
        text += "\n".join(_comparison(summary, evaluation, config.model, summary["reference"])) + "\n"
    write_json(summary, os.path.join(workdir, "diagnosis.json"))
    temporary = os.path.join(workdir, f"report.md.tmp-{os.getpid()}")
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, os.path.join(workdir, "report.md"))
    return summary
