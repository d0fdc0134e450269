"""Aggregate-posterior diagnostics: where the per-example KL goes ("ELBO surgery").

Hoffman & Johnson (2016): averaged over the data, the KL a VAE pays for every example splits as

    mean_n KL(q(z|x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)),   q(z) = mean_n q(z|x_n),

the mutual information between example index and code, plus how far the aggregate posterior
q(z) is from the prior. Here q(z) is the finite mixture over the N examples used, evaluated
exactly (log-sum-exp over all N components, batched); only the z are Monte Carlo: one (or more)
z_m ~ q(z|x_m) per example, which are exact draws from q(z) stratified over its components.

    from tfp_vae import diagnosis
    result = diagnosis.diagnose(model.encoder, model.prior, labelled_batches, examples=10_000)
    result.summary["mutual_information"], result.summary["identity"]

`encoder` is any callable x -> tfd distribution over z (batch [B], event [latent]); `prior` any
tfd distribution with `log_prob` and `sample` (a learnable prior works the same way).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["ACTIVE_THRESHOLD", "DEFAULT_PAIR_BUDGET", "Diagnosis", "Posteriors", "collect_posteriors",
           "diagnose", "gaussian_kl_to_prior", "gaussian_prior_moments", "mixture_log_densities", "summarize"]

tfd = tfp.distributions

# (latent, component) pairs per log-density call: [pairs, latent] float32 temporaries stay
# around 32 MB each for a 32-dimensional latent.
DEFAULT_PAIR_BUDGET = 2 ** 18
# Burda et al. (2016): a latent dimension is active when Var_x(E_q[z_d | x]) exceeds this.
ACTIVE_THRESHOLD = 0.01
# Prior-hole reference: the 1st percentile of log q(z) at aggregate-posterior samples.
HOLE_PERCENTILE = 1.0


@dataclasses.dataclass
class Posteriors:
    """Pass 1 over the data: every example's posterior summaries and its z samples."""

    x: np.ndarray               # [N, ...] the examples, re-encoded in pass 2
    labels: np.ndarray          # [N] int64; -1 where unknown
    loc: np.ndarray             # [N, latent] E_q[z | x_n]
    variance: np.ndarray        # [N, latent] Var_q[z_d | x_n] (the diagonal of the covariance)
    kl: np.ndarray              # [N] KL(q(z|x_n) || p(z)), exact when registered in TFP
    kl_is_exact: bool
    latents: np.ndarray         # [M, latent] z_m ~ q(z | x_owner[m])
    owner: np.ndarray           # [M] index n of the posterior each z_m came from
    log_posterior: np.ndarray   # [M] log q(z_m | x_owner[m])
    log_prior: np.ndarray       # [M] log p(z_m)


@dataclasses.dataclass
class Diagnosis:
    summary: dict               # JSON-ready numbers (see `summarize`)
    posteriors: Posteriors
    prior_latents: np.ndarray   # [P, latent] z ~ p(z), for the prior-hole measure
    log_density_at_prior: np.ndarray       # [P] log q(z) at prior_latents
    log_density_leave_one_out: np.ndarray  # [M] log q(z_m) without z_m's own component


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _kl(posterior, prior, seed, kl_samples: int):
    """(exact KL, True) when TFP has it registered, else (Monte-Carlo KL, False)."""
    try:
        return tfd.kl_divergence(posterior, prior), True
    except NotImplementedError:  # e.g. a mixture prior: no closed form
        z = posterior.sample(kl_samples, seed=seed)
        return tf.reduce_mean(posterior.log_prob(z) - prior.log_prob(z), 0), False


def collect_posteriors(encoder: Callable, prior, dataset, *, examples: Optional[int] = None,
                       samples_per_example: int = 1, seed: int = 0, kl_samples: int = 64) -> Posteriors:
    """Encodes the (first `examples`) batches of `dataset` (x or (x, label)) once."""
    _check_positive("samples_per_example", samples_per_example)
    if examples is not None:
        _check_positive("examples", examples)
    parts, seen, exact = {}, 0, True
    for index, batch in enumerate(dataset):
        x, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        x = tf.convert_to_tensor(x, tf.float32)
        if examples is not None:
            x = x[:examples - seen]
        size = int(x.shape[0])
        if size == 0:
            break
        labels = np.full([size], -1, np.int64) if labels is None else np.asarray(labels)[:size]
        posterior = encoder(x)
        unwrapped = getattr(posterior, "tensor_distribution", posterior)  # a tfp.layers output wraps it
        if not isinstance(unwrapped, tfd.MultivariateNormalDiag):
            raise ValueError(
                "the aggregate-posterior diagnosis needs q(z|x) to be one diagonal Gaussian per example; this "
                f"encoder gives a {type(unwrapped).__name__}. For a two-level model (top_latent_dim > 0), "
                "diagnose its top layer: tfp_vae.hierarchy.TopLevel(model).encoder and .prior (as report.py does).")
        batch_seed = tf.constant([seed, index], tf.int32)
        kl, batch_exact = _kl(posterior, prior, tf.random.experimental.stateless_fold_in(batch_seed, 1),
                              kl_samples)
        exact = exact and batch_exact
        z = posterior.sample(samples_per_example, seed=batch_seed)  # [S, B, latent]
        values = {
            "x": x.numpy(), "labels": labels.astype(np.int64), "loc": posterior.mean().numpy(),
            "variance": posterior.variance().numpy(), "kl": kl.numpy(),
            # Example-major: z_m for m = n * S + s.
            "latents": np.swapaxes(z.numpy(), 0, 1).reshape(size * samples_per_example, -1),
            "owner": np.repeat(np.arange(seen, seen + size), samples_per_example),
            "log_posterior": posterior.log_prob(z).numpy().T.reshape(-1),
            "log_prior": prior.log_prob(z).numpy().T.reshape(-1),
        }
        for name, value in values.items():
            parts.setdefault(name, []).append(value)
        seen += size
        if examples is not None and seen >= examples:
            break
    if not parts:
        raise ValueError("the dataset yielded no examples to diagnose.")
    return Posteriors(kl_is_exact=exact, **{name: np.concatenate(value) for name, value in parts.items()})


def _component_batch_fn(encoder: Callable, pairs_per_call: int):
    """tf.function: log-sum-exp over one batch of components, for every latent, in chunks."""

    @tf.function(reduce_retracing=True)
    def log_sum_exp(x, component_index, component_labels, latents, owners, latent_labels):
        posterior = encoder(x)  # once per component batch; every latent chunk reuses it
        chunk = tf.maximum(1, pairs_per_call // tf.shape(x)[0])
        steps = (tf.shape(latents)[0] + chunk - 1) // chunk
        every, without_own, same_label = (
            tf.TensorArray(tf.float32, size=steps, infer_shape=False) for _ in range(3))
        for step in tf.range(steps):
            start = step * chunk
            log_density = posterior.log_prob(latents[start:start + chunk, None, :])  # [chunk, batch]
            own = owners[start:start + chunk, None] == component_index[None, :]
            same = latent_labels[start:start + chunk, None] == component_labels[None, :]
            every = every.write(step, tf.reduce_logsumexp(log_density, 1))
            without_own = without_own.write(step, tf.reduce_logsumexp(tf.where(own, -np.inf, log_density), 1))
            same_label = same_label.write(step, tf.reduce_logsumexp(tf.where(same, log_density, -np.inf), 1))
        return every.concat(), without_own.concat(), same_label.concat()

    return log_sum_exp


def mixture_log_densities(encoder: Callable, x, latents, *, owners=None, latent_labels=None,
                          component_labels=None, batch_size: int = 500,
                          pair_budget: int = DEFAULT_PAIR_BUDGET) -> dict:
    """log q(z_m) for the mixture q(z) = mean_n q(z | x_n) of the N examples `x`, at each z_m.

    Returns {"all": log mean_n q(z_m|x_n), "leave_one_out": the same without component
    owners[m] (log of the mean over the other N - 1), "same_label": the mixture over the
    components whose label equals latent_labels[m]}, each [M], float64. Components are encoded
    batch_size at a time and combined by a streaming log-sum-exp: the same numbers for any batching.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("pair_budget", pair_budget)
    x = np.asarray(x, np.float32)
    latents = np.asarray(latents, np.float32)
    count, components = len(latents), len(x)
    owners = np.full([count], -1, np.int64) if owners is None else np.asarray(owners, np.int64)
    component_labels = (np.full([components], -1, np.int64) if component_labels is None
                        else np.asarray(component_labels, np.int64))
    # -2 never equals a component label (unknown labels are -1): no same-label mixture.
    latent_labels = (np.full([count], -2, np.int64) if latent_labels is None
                     else np.where(np.asarray(latent_labels) < 0, -2, latent_labels).astype(np.int64))
    log_sum_exp = _component_batch_fn(encoder, pair_budget)
    totals = [np.full([count], -np.inf) for _ in range(3)]
    for start in range(0, components, batch_size):
        stop = min(start + batch_size, components)
        partial = log_sum_exp(x[start:stop], tf.range(start, stop, dtype=tf.int64),
                              component_labels[start:stop], latents, owners, latent_labels)
        for total, part in zip(totals, partial):
            np.logaddexp(total, part.numpy().astype(np.float64), out=total)
    # Mixture weights 1/N: without the -log N, log q(z) would be log N too large.
    class_sizes = {label: int(np.sum(component_labels == label)) for label in np.unique(component_labels)}
    same_label_count = np.array([class_sizes.get(label, 0) for label in latent_labels], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # N = 1 leaves nothing to leave out
        return {
            "all": totals[0] - math.log(components),
            "leave_one_out": totals[1] - np.log(components - (owners >= 0)),
            "same_label": np.where(same_label_count > 0,
                                   totals[2] - np.log(np.maximum(same_label_count, 1)), np.nan),
        }


def diagnose(encoder: Callable, prior, dataset, *, examples: Optional[int] = None,
             samples_per_example: int = 1, prior_samples: Optional[int] = None, seed: int = 0,
             batch_size: int = 500, pair_budget: int = DEFAULT_PAIR_BUDGET) -> Diagnosis:
    """All the numbers of the report over the first `examples` of `dataset` (x or (x, label)).

    `prior_samples` (default: as many as latent samples) z ~ p(z) measure prior holes.
    """
    posteriors = collect_posteriors(encoder, prior, dataset, examples=examples,
                                    samples_per_example=samples_per_example, seed=seed)
    if prior_samples is None:
        prior_samples = len(posteriors.latents)
    _check_positive("prior_samples", prior_samples)
    prior_latents = prior.sample(prior_samples, seed=tf.constant([seed, -1], tf.int32))
    log_prior_at_prior = prior.log_prob(prior_latents).numpy()
    prior_latents = prior_latents.numpy()
    # One pass 2 for both sets of points; prior samples own no component and have no label.
    latents = np.concatenate([posteriors.latents, prior_latents])
    owners = np.concatenate([posteriors.owner, np.full([prior_samples], -1)])
    latent_labels = np.concatenate([posteriors.labels[posteriors.owner], np.full([prior_samples], -1)])
    densities = mixture_log_densities(
        encoder, posteriors.x, latents, owners=owners, latent_labels=latent_labels,
        component_labels=posteriors.labels, batch_size=batch_size, pair_budget=pair_budget)
    count = len(posteriors.latents)
    at_latents = {name: values[:count] for name, values in densities.items()}
    at_prior = {"all": densities["all"][count:], "log_prior": log_prior_at_prior}
    summary = summarize(posteriors, at_latents, at_prior, prior)
    return Diagnosis(summary=summary, posteriors=posteriors, prior_latents=prior_latents,
                     log_density_at_prior=at_prior["all"],
                     log_density_leave_one_out=at_latents["leave_one_out"])


def _mean_stderr(values) -> tuple:
    values = np.asarray(values, np.float64)
    stderr = np.std(values, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(np.mean(values)), float(stderr)


def gaussian_prior_moments(prior):
    """(mean, covariance) in float64 when the prior is a Gaussian, else None."""
    if not isinstance(getattr(prior, "tensor_distribution", prior), tfd.MultivariateNormalLinearOperator):
        return None
    return np.asarray(prior.mean(), np.float64), np.asarray(prior.covariance(), np.float64)


def gaussian_kl_to_prior(mean, covariance, prior) -> Optional[float]:
    """KL(N(mean, covariance) || prior) in closed form for a Gaussian prior, else None."""
    moments = gaussian_prior_moments(prior)
    if moments is None:
        return None
    prior_mean, prior_covariance = moments
    mean, covariance = np.asarray(mean, np.float64), np.asarray(covariance, np.float64)
    difference = prior_mean - mean
    solved = np.linalg.solve(prior_covariance, np.column_stack([covariance, difference]))
    return float(0.5 * (np.trace(solved[:, :-1]) + difference @ solved[:, -1] - len(mean)
                        + np.linalg.slogdet(prior_covariance)[1] - np.linalg.slogdet(covariance)[1]))


def _group(posteriors: Posteriors, examples, latents, log_aggregate, prior) -> dict:
    """The identity's three terms and the moments of q(z) over one group of examples."""
    own = posteriors.owner[latents]
    log_posterior, log_prior = posteriors.log_posterior[latents], posteriors.log_prior[latents]
    loc, variance = posteriors.loc[examples].astype(np.float64), posteriors.variance[examples]
    mean_kl, mean_kl_stderr = _mean_stderr(posteriors.kl[examples])
    information, information_stderr = _mean_stderr(log_posterior - log_aggregate)
    marginal, marginal_stderr = _mean_stderr(log_aggregate - log_prior)
    # The identity's Monte-Carlo error: its per-sample terms minus the exact KL of each z's own
    # posterior, which removes the spread of KL between examples (not Monte-Carlo error).
    difference, difference_stderr = _mean_stderr(log_posterior - log_prior - posteriors.kl[own])
    # Moments of the mixture: Cov(z) = Cov_x(E[z|x]) + E_x[Var(z|x)].
    mean = np.mean(loc, 0)
    covariance = (loc - mean).T @ (loc - mean) / len(loc) + np.diag(np.mean(variance, 0, dtype=np.float64))
    activity = np.var(loc, 0)
    return {
        "examples": int(len(loc)), "latent_samples": int(len(latents)),
        "mean_kl": mean_kl, "mean_kl_stderr": mean_kl_stderr,
        "mutual_information": information, "mutual_information_stderr": information_stderr,
        "marginal_kl": marginal, "marginal_kl_stderr": marginal_stderr,
        "identity": {
            "mean_kl": mean_kl, "mutual_information_plus_marginal_kl": information + marginal,
            "difference": difference, "difference_stderr": difference_stderr,
            "within_4_stderr": bool(abs(difference) <= 4 * difference_stderr + 1e-6)},
        "mean": mean.tolist(), "mean_norm": float(np.linalg.norm(mean)),
        "spread": float(math.sqrt(np.trace(covariance) / len(mean))),
        "covariance": covariance.tolist(),
        "fitted_gaussian_kl": gaussian_kl_to_prior(mean, covariance, prior),
        "posterior_mean_variance": activity.tolist(),
        "active_units": int(np.sum(activity > ACTIVE_THRESHOLD)),
    }


def _per_dimension(posteriors: Posteriors, prior, mean, covariance) -> dict:
    """Per-dimension KLs against the prior's marginals (they sum to the KL for diagonal Gaussians)."""
    moments = gaussian_prior_moments(prior)
    if moments is None:
        return {}
    prior_mean, prior_variance = moments[0], np.diag(moments[1])

    def kl(loc, variance):
        return 0.5 * (np.log(prior_variance / variance)
                      + (variance + (loc - prior_mean) ** 2) / prior_variance - 1)

    per_example = kl(posteriors.loc.astype(np.float64), posteriors.variance.astype(np.float64))
    return {"mean_kl": np.mean(per_example, 0).tolist(),
            "fitted_gaussian_kl": kl(np.asarray(mean), np.diag(covariance)).tolist()}


def summarize(posteriors: Posteriors, at_latents: dict, at_prior: dict, prior) -> dict:
    """JSON-ready numbers: overall, per dimension, per class, and prior holes.

    `at_latents`: mixture_log_densities at posteriors.latents; `at_prior`: {"all": log q(z),
    "log_prior": log p(z)} at prior samples z ~ p(z).
    """
    count = len(posteriors.loc)
    summary = _group(posteriors, np.arange(count), np.arange(len(posteriors.latents)),
                     at_latents["all"], prior)
    summary.update(latent_dim=int(posteriors.loc.shape[1]), kl_is_exact=posteriors.kl_is_exact,
                   mutual_information_upper_bound=math.log(count), active_threshold=ACTIVE_THRESHOLD)
    if count > 1:
        # The same terms with each z's own component left out of q(z): z_m is then a fresh point
        # for the other N - 1 posteriors, so by Jensen E log q_-m(z) <= log q_population(z), and
        # this marginal KL is a lower estimate of the population's (its I_q an upper one, no
        # longer capped at log N). With its own component (above) the marginal KL reads high
        # when I_q nears log N: the truth lies between the two.
        leave_one_out = at_latents["leave_one_out"]
        summary["marginal_kl_leave_one_out"], summary["marginal_kl_leave_one_out_stderr"] = _mean_stderr(
            leave_one_out - posteriors.log_prior)
        summary["mutual_information_leave_one_out"], summary["mutual_information_leave_one_out_stderr"] = \
            _mean_stderr(posteriors.log_posterior - leave_one_out)
    summary["per_dimension"] = _per_dimension(
        posteriors, prior, summary["mean"], np.asarray(summary["covariance"]))
    summary["per_dimension"]["active"] = [v > ACTIVE_THRESHOLD for v in summary["posterior_mean_variance"]]
    # Prior holes. Reference: log q at aggregate samples WITHOUT each sample's own component, so
    # both sets of points are new to the mixture (with it, narrow posteriors inflate log q).
    reference = at_latents["leave_one_out"] if count > 1 else np.array([math.nan])
    threshold = float(np.percentile(reference, HOLE_PERCENTILE))
    reverse_kl, reverse_kl_stderr = _mean_stderr(at_prior["log_prior"] - at_prior["all"])
    quantiles = [1, 5, 25, 50, 75, 95, 99]
    summary["prior_holes"] = {
        "threshold_log_density": threshold,
        "fraction_below_threshold": float(np.mean(at_prior["all"] < threshold)),
        "fraction_expected_without_holes": HOLE_PERCENTILE / 100,
        "prior_to_aggregate_kl": reverse_kl, "prior_to_aggregate_kl_stderr": reverse_kl_stderr,
        "quantiles": quantiles,
        "log_density_at_prior_samples": np.percentile(at_prior["all"], quantiles).tolist(),
        "log_density_at_aggregate_samples": np.percentile(reference, quantiles).tolist(),
    }
    labels = posteriors.labels[posteriors.owner]
    known = np.unique(posteriors.labels[posteriors.labels >= 0])
    summary["per_class"] = {}
    if len(known):
        # I(y; z) = E[log q(z|y) - log q(z)]: how much the code says about the class.
        summary["class_information"], summary["class_information_stderr"] = _mean_stderr(
            (at_latents["same_label"] - at_latents["all"])[labels >= 0])
        summary["class_information_upper_bound"] = math.log(len(known))
    for label in known:
        latents = np.flatnonzero(labels == label)
        summary["per_class"][str(int(label))] = _group(
            posteriors, np.flatnonzero(posteriors.labels == label), latents,
            at_latents["same_label"][latents], prior)
    return summary
