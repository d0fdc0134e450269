"""Pictures, one function per picture (matplotlib, Agg backend: no screen needed)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["image_grid", "save_image_grid"]


def image_grid(images, columns: int = 8) -> np.ndarray:
    """Tiles [N, H, W, C] images in [0, 1] into one [rows*H, columns*W, C] array (1px gaps)."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}.")
    count, height, width, channels = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * (height + 1):row * (height + 1) + height,
             column * (width + 1):column * (width + 1) + width] = image
    return grid


def save_image_grid(images, path: str, title: str = "", columns: int = 8) -> str:
    """Writes a PNG grid of `images` atomically and returns its path."""
    grid = image_grid(images, columns)
    figure, axis = plt.subplots(figsize=(columns, grid.shape[0] / grid.shape[1] * columns + 0.4))
    axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0)
    axis.set_axis_off()
    if title:
        axis.set_title(title)
    return _save_figure(figure, path)


# Aggregate-posterior pictures (tfp_vae.report). Each takes plain arrays and writes one PNG.

__all__ += ["save_kl_bars", "save_latent_histograms", "save_latent_scatter", "save_prior_hole_histogram",
            "save_samples_and_reconstructions", "save_traversal_grid"]


def _save_figure(figure, path: str) -> str:
    temporary = f"{path}.tmp-{os.getpid()}.png"
    figure.savefig(temporary, dpi=80, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)  # atomic: a report never links half a PNG
    return path


def save_latent_scatter(points, labels, path: str, title: str = "", class_names=None,
                        axis_names=("z1", "z2")) -> str:
    """2-D points [N, 2] coloured by integer label (labels < 0: unlabelled, grey)."""
    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(f"points must be [N, 2] with N labels, got {points.shape} and {labels.shape}.")
    figure, axis = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10" if len(np.unique(labels)) <= 10 else "tab20")
    for index, label in enumerate(np.unique(labels)):
        chosen = labels == label
        name = "unlabelled" if label < 0 else (class_names[label] if class_names is not None and
                                               label < len(class_names) else f"class {label}")
        axis.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.5, label=name,
                     color="grey" if label < 0 else colours(index % colours.N))
    axis.set_xlabel(axis_names[0])
    axis.set_ylabel(axis_names[1])
    axis.legend(markerscale=4, fontsize=8, loc="best")
    axis.set_title(title)
    return _save_figure(figure, path)


def save_latent_histograms(samples, path: str, dimensions, title: str = "", prior_loc=None,
                           prior_scale=None, prior_samples=None) -> str:
    """Histogram of aggregate-posterior samples [M, latent] per listed dimension, against the
    prior's marginal: a Normal(prior_loc[d], prior_scale[d]) density, else `prior_samples`."""
    samples = np.asarray(samples)
    dimensions = list(dimensions)
    columns = min(4, len(dimensions))
    rows = -(-len(dimensions) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.4 * rows), squeeze=False)
    for axis in axes.ravel()[len(dimensions):]:
        axis.set_axis_off()
    for axis, dimension in zip(axes.ravel(), dimensions):
        axis.hist(samples[:, dimension], bins=60, density=True, alpha=0.6, label="q(z)")
        if prior_loc is not None:
            loc, scale = prior_loc[dimension], prior_scale[dimension]
            grid = np.linspace(loc - 4 * scale, loc + 4 * scale, 200)
            axis.plot(grid, np.exp(-0.5 * ((grid - loc) / scale) ** 2) / (scale * np.sqrt(2 * np.pi)),
                      "k-", label="p(z)")
        elif prior_samples is not None:
            axis.hist(np.asarray(prior_samples)[:, dimension], bins=60, density=True, histtype="step",
                      color="k", label="p(z)")
        axis.set_title(f"z{dimension + 1}", fontsize=9)
        axis.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return _save_figure(figure, path)


def save_kl_bars(mean_kl, fitted_kl, active, path: str, title: str = "") -> str:
    """Per-dimension mean_x KL(q(z_d|x) || p(z_d)) beside the fitted marginal's KL; inactive hatched."""
    mean_kl, fitted_kl, active = np.asarray(mean_kl), np.asarray(fitted_kl), np.asarray(active, bool)
    positions = np.arange(len(mean_kl))
    figure, axis = plt.subplots(figsize=(max(6, 0.3 * len(mean_kl) + 2), 3.5))
    bars = axis.bar(positions - 0.2, mean_kl, 0.4, label="mean over x of KL(q(z_d|x) || p(z_d))")
    for bar, is_active in zip(bars, active):
        if not is_active:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    axis.bar(positions + 0.2, fitted_kl, 0.4, label="KL of the fitted Gaussian marginal q(z_d)")
    axis.set_xticks(positions)
    axis.set_xticklabels([f"{d + 1}" for d in positions], fontsize=7)
    axis.set_xlabel("latent dimension (hatched: inactive)")
    axis.set_ylabel("nats")
    axis.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2)
    axis.set_title(title)
    return _save_figure(figure, path)


def save_traversal_grid(images, path: str, row_labels, values, title: str = "") -> str:
    """images [rows, columns, H, W, C]: row r varies one latent dimension over `values`."""
    images = np.asarray(images)
    rows, columns = images.shape[:2]
    grid = image_grid(images.reshape(rows * columns, *images.shape[2:]), columns)
    height = images.shape[2] + 1
    figure, axis = plt.subplots(figsize=(columns * 0.9 + 1, rows * 0.9 + 0.6))
    axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0)
    axis.set_yticks([r * height + height / 2 for r in range(rows)])
    axis.set_yticklabels(row_labels, fontsize=8)
    axis.set_xticks([c * (images.shape[3] + 1) + images.shape[3] / 2 for c in range(columns)])
    axis.set_xticklabels([f"{v:+.1f}" for v in values], fontsize=7)
    axis.set_xlabel("offset from the aggregate mean, in standard deviations of q(z_d)")
    for side in axis.spines.values():
        side.set_visible(False)
    axis.set_title(title)
    return _save_figure(figure, path)


def save_samples_and_reconstructions(samples, originals, reconstructions, path: str, title: str = "",
                                     columns: int = 4) -> str:
    """Three panels: decoded prior samples | data | their reconstructions."""
    figure, axes = plt.subplots(1, 3, figsize=(3 * columns + 1, columns + 0.8))
    for axis, images, name in zip(axes, (samples, originals, reconstructions),
                                  ("z ~ p(z), decoded", "data x", "reconstruction from E[q(z|x)]")):
        grid = image_grid(images, columns)
        axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0)
        axis.set_axis_off()
        axis.set_title(name, fontsize=10)
    figure.suptitle(title)
    return _save_figure(figure, path)


def save_prior_hole_histogram(at_prior, at_aggregate, threshold: float, path: str, title: str = "") -> str:
    """log q(z) at prior samples against at aggregate-posterior samples, with the hole threshold."""
    # NaN marks a density that is not defined (leave-one-out over one example): left out, not binned.
    # -inf is a real hole and stays, clipped into the lowest bin.
    at_prior, at_aggregate = (np.asarray(values, np.float64) for values in (at_prior, at_aggregate))
    at_prior, at_aggregate = at_prior[~np.isnan(at_prior)], at_aggregate[~np.isnan(at_aggregate)]
    finite = np.concatenate([at_prior[np.isfinite(at_prior)], at_aggregate[np.isfinite(at_aggregate)]])
    figure, axis = plt.subplots(figsize=(7, 3.5))
    if len(finite):
        low, high = np.percentile(finite, 0.5), np.max(finite)
        if not high > low:  # one value (a one-example report): bins of zero width have no density
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, 80)
        for values, style in ((at_aggregate, dict(alpha=0.6, label="z ~ q(z)")),
                              (at_prior, dict(histtype="step", color="k", label="z ~ p(z)"))):
            if len(values):
                axis.hist(np.clip(values, bins[0], None), bins=bins, density=True, **style)
    else:
        axis.text(0.5, 0.5, "no finite density to show", ha="center", va="center", transform=axis.transAxes)
    axis.axvline(threshold, color="r", linestyle="--", label="1st percentile under q(z)")
    axis.set_xlabel("log q(z)  (lowest bin collects everything below)")
    axis.legend(fontsize=8)
    axis.set_title(title)
    return _save_figure(figure, path)
