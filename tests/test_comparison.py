import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tfp_vae import comparison

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_folder(root, name, log_likelihoods, data=None, parts_total=None, tag="epochs3-"):
    """A run folder with config.json and one parts folder: a part per array in log_likelihoods."""
    workdir = os.path.join(root, name)
    total = parts_total or len(log_likelihoods)
    folder = os.path.join(workdir, "likelihood_parts", f"{tag}K5000-N{10 * total}")
    os.makedirs(folder)
    with open(os.path.join(workdir, "config.json"), "w") as file:
        json.dump({"data": data or {"dataset": "fashion_mnist", "binarization": "dynamic"}}, file)
    for part, values in enumerate(log_likelihoods):
        if values is None:  # not finished yet
            continue
        values = np.asarray(values, np.float32)
        np.savez(os.path.join(folder, f"part-{part:03d}-of-{total:03d}.npz"), log_likelihood=values,
                 log_likelihood_half=values - 1, elbo=values - 3, reconstruction=values + 10, seconds=1.0)
    return workdir


def test_paired_difference_is_the_per_image_mean_and_its_stderr(tmp_path):
    rng = np.random.default_rng(0)
    base = -225 + 20 * rng.standard_normal((2, 10))  # large spread between images...
    shift = 0.3 + 0.05 * rng.standard_normal((2, 10))  # ...a small, steady gain per image
    better = _run_folder(tmp_path, "better", base + shift)
    worse = _run_folder(tmp_path, "worse", base)
    result = comparison.paired_difference(better, worse)
    difference = -(shift.astype(np.float32).ravel())  # float32 as stored: -log p(x) goes down
    expected = -(base + shift).astype(np.float32).astype(np.float64).ravel() + base.astype(np.float32).ravel()
    assert result["examples"] == 20 and result["parts"] == [0, 1]
    assert result["difference"] == pytest.approx(np.mean(expected), abs=1e-5)
    assert result["difference"] == pytest.approx(np.mean(difference), abs=1e-4)
    assert result["difference_stderr"] == pytest.approx(np.std(expected, ddof=1) / math.sqrt(20), rel=1e-4)
    # Pairing is the point: the unpaired stderr would be ~20/sqrt(20), this is ~0.05/sqrt(20).
    assert result["difference_stderr"] < 0.05
    assert result["negative_log_likelihood"] == pytest.approx(-np.mean((base + shift).astype(np.float32)), abs=1e-4)
    assert result["negative_log_likelihood_against"] == pytest.approx(-np.mean(base.astype(np.float32)), abs=1e-4)
    # ELBO values are log_likelihood - 3 in both: the same difference.
    assert result["difference_elbo"] == pytest.approx(result["difference"], abs=1e-4)


def test_partial_evaluations_pair_on_the_parts_both_finished(tmp_path):
    first = _run_folder(tmp_path, "first", [[-1.0, -2.0], None, [-5.0, -6.0]])
    second = _run_folder(tmp_path, "second", [[-2.0, -2.0], [-3.0, -3.0], None])
    result = comparison.paired_difference(first, second)
    assert result["parts"] == [0] and result["examples"] == 2
    assert result["difference"] == pytest.approx(-0.5)  # (1 + 2)/2 - (2 + 2)/2
    # Parts folders work as arguments too.
    assert comparison.paired_difference(comparison.parts_folder(first), second)["difference"] == result["difference"]


def test_refuses_what_cannot_be_paired(tmp_path):
    plain = _run_folder(tmp_path, "plain", [[-1.0, -2.0]])
    static = _run_folder(tmp_path, "static", [[-1.0, -2.0]], data={"dataset": "fashion_mnist", "binarization": "static"})
    with pytest.raises(ValueError, match="different data configs"):
        comparison.paired_difference(plain, static)
    disjoint = _run_folder(tmp_path, "disjoint", [None, [-1.0, -2.0]], parts_total=1)
    with pytest.raises(ValueError, match="no finished part in common"):
        comparison.paired_difference(plain, disjoint)
    fewer = _run_folder(tmp_path, "fewer", [[-1.0]])
    with pytest.raises(ValueError, match="different image counts"):
        comparison.paired_difference(plain, fewer)
    with pytest.raises(ValueError, match="no test-set parts with K=5000"):
        comparison.parts_folder(str(tmp_path / "nothing"))
    mixed = comparison.parts_folder(_run_folder(tmp_path, "mixed", [[-1.0, -2.0]]))
    values = np.zeros(2, np.float32)
    np.savez(os.path.join(mixed, "part-001-of-002.npz"), log_likelihood=values, elbo=values)
    with pytest.raises(ValueError, match=r"cut into \[1, 2\] parts"):
        comparison.paired_difference(mixed, plain)
    os.makedirs(os.path.join(plain, "likelihood_parts", "epochs9-K5000-N10"))
    with pytest.raises(ValueError, match="several K=5000 parts folders"):
        comparison.paired_difference(plain, plain)


def _per_example_file(root, name, log_likelihoods, split):
    workdir = os.path.join(root, name)
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as file:
        json.dump({"data": {"dataset": "fashion_mnist", "binarization": "dynamic"}}, file)
    values = np.asarray(log_likelihoods, np.float32)
    path = os.path.join(workdir, "evaluation_per_example.npz")
    np.savez(path, log_likelihood=values, log_likelihood_half=values, elbo=values - 2, reconstruction=values,
             split=split)
    return path


def test_evaluate_py_files_pair_within_one_split(tmp_path):
    tuned = _per_example_file(tmp_path, "tuned", [-1.0, -2.0, -4.0], "validation")
    start = _per_example_file(tmp_path, "start", [-1.5, -2.0, -5.0], "validation")
    result = comparison.paired_difference(tuned, start)
    assert result["split"] == "validation" and result["examples"] == 3
    assert result["difference"] == pytest.approx(-0.5)
    test_images = _per_example_file(tmp_path, "test_images", [-1.5, -2.0, -5.0], "test")
    with pytest.raises(ValueError, match="different splits"):
        comparison.paired_difference(tuned, test_images)
    with pytest.raises(ValueError, match="different splits"):  # test parts against a validation file
        comparison.paired_difference(_run_folder(tmp_path, "parts", [[-1.0, -2.0, -4.0]]), tuned)
    with pytest.raises(ValueError, match="does not exist"):
        comparison.paired_difference(str(tmp_path / "none" / "evaluation_per_example.npz"), start)


def test_the_script_prints_the_difference_and_fails_with_the_reason(tmp_path):
    first = _run_folder(tmp_path, "first", [[-1.0, -3.0]])
    second = _run_folder(tmp_path, "second", [[-2.0, -3.5]])
    script = os.path.join(ROOT, "benchmarks", "paired_likelihood.py")
    done = subprocess.run([sys.executable, script, first, second], capture_output=True, text=True, check=True)
    assert "-log p(x)  2.00 - 2.75 = -0.750 +- 0.250" in done.stdout
    failed = subprocess.run([sys.executable, script, first, str(tmp_path / "missing")], capture_output=True, text=True)
    assert failed.returncode == 2 and "no test-set parts with K=5000" in failed.stderr
