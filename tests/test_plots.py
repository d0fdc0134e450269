import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest

from tfp_vae import plots


def test_image_grid_places_each_image_with_one_pixel_gaps_and_clips():
    images = np.stack([np.full((2, 3, 1), value) for value in (0.2, 0.5, 1.7)])  # 1.7: out of range
    grid = plots.image_grid(images, columns=2)
    assert grid.shape == (2 * 3 - 1, 2 * 4 - 1, 1)
    np.testing.assert_allclose(grid[0:2, 0:3], 0.2)
    np.testing.assert_allclose(grid[0:2, 4:7], 0.5)
    np.testing.assert_allclose(grid[3:5, 0:3], 1.0)  # clipped to [0, 1]
    np.testing.assert_allclose(grid[2, :], 1.0)  # the gap row
    np.testing.assert_allclose(grid[:, 3], 1.0)  # the gap column
    np.testing.assert_allclose(grid[3:5, 4:7], 1.0)  # no fourth image: left blank
    assert plots.image_grid(images, columns=10).shape == (2, 3 * 4 - 1, 1)  # never more columns than images


def test_image_grid_rejects_a_batch_without_channels():
    with pytest.raises(ValueError, match=r"\[N, H, W, C\], got shape \(4, 28, 28\)"):
        plots.image_grid(np.zeros((4, 28, 28)))


def test_latent_scatter_rejects_points_and_labels_that_do_not_match(tmp_path):
    with pytest.raises(ValueError, match="points must be"):
        plots.save_latent_scatter(np.zeros((5, 2)), np.zeros(4, int), str(tmp_path / "scatter.png"))
    with pytest.raises(ValueError, match="points must be"):
        plots.save_latent_scatter(np.zeros((5, 3)), np.zeros(5, int), str(tmp_path / "scatter.png"))
    assert os.listdir(tmp_path) == []


def test_every_picture_is_a_readable_png_and_no_temporary_file_stays(tmp_path):
    random = np.random.default_rng(0)
    images = random.uniform(size=(6, 28, 28, 1))
    at_prior = np.concatenate([random.normal(-5, 1, 200), [-np.inf]])  # log q(z) can underflow
    calls = {
        "grid": lambda path: plots.save_image_grid(images, path, title="grid", columns=4),
        "scatter": lambda path: plots.save_latent_scatter(
            random.normal(size=(50, 2)), np.r_[np.arange(10).repeat(4), np.full(10, -1)], path,
            class_names=[f"c{i}" for i in range(10)]),
        "histograms": lambda path: plots.save_latent_histograms(
            random.normal(size=(100, 5)), path, dimensions=[0, 2, 4], prior_loc=np.zeros(5), prior_scale=np.ones(5)),
        "histograms_sampled_prior": lambda path: plots.save_latent_histograms(
            random.normal(size=(100, 5)), path, dimensions=[1], prior_samples=random.normal(size=(100, 5))),
        "kl_bars": lambda path: plots.save_kl_bars(random.uniform(size=8), random.uniform(size=8),
                                                   [True, False] * 4, path),
        "traversal": lambda path: plots.save_traversal_grid(
            random.uniform(size=(2, 5, 28, 28, 1)), path, ["z1", "z2"], np.linspace(-2, 2, 5)),
        "samples": lambda path: plots.save_samples_and_reconstructions(images[:4], images[:4], images[:4], path),
        "holes": lambda path: plots.save_prior_hole_histogram(at_prior, random.normal(0, 1, 200), -3.0, path),
    }
    for name, call in calls.items():
        path = str(tmp_path / f"{name}.png")
        assert call(path) == path
        picture = plt.imread(path)
        assert picture.ndim == 3 and min(picture.shape[:2]) > 50, name
    assert sorted(os.listdir(tmp_path)) == sorted(f"{name}.png" for name in calls)


def test_prior_hole_histogram_leaves_out_undefined_densities(tmp_path):
    # Leave-one-out over one example gives NaN: it is not drawn (and warns nothing); -inf still is.
    at_prior = np.concatenate([np.random.default_rng(0).normal(-5, 1, 200), [-np.inf]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, aggregate, prior in (("one_example", np.full(1, np.nan), at_prior),
                                       ("one_value", np.full(1, np.nan), np.full(1, -6.6)),
                                       ("nothing", np.full(1, np.nan), np.full(3, np.nan))):
            path = str(tmp_path / f"{name}.png")
            assert plots.save_prior_hole_histogram(prior, aggregate, float("nan"), path) == path
            assert plt.imread(path).ndim == 3
