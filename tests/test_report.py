"""The report of a run (report.diagnose_run) and its CLI, trainers/diagnose.py."""
from tfp_vae import _env  # noqa: F401

import json
import os
import subprocess
import sys
import warnings

import pytest

from tfp_vae import report
from test_evaluation import ROOT, make_run  # tests/ is on sys.path under pytest


def run_diagnose(*arguments):
    return subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "diagnose.py"), *arguments],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("arguments,message", [
    (["--split", "holdout"], "invalid choice: 'holdout'"),
    (["--examples", "0"], "--examples must be >= 1"),
])
def test_diagnose_cli_rejects_bad_flags(tmp_path, arguments, message):
    result = run_diagnose("--workdir", str(tmp_path), *arguments)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_diagnose_cli_rejects_missing_workdir(tmp_path):
    result = run_diagnose("--workdir", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr


def test_diagnose_cli_writes_the_report(tmp_path):
    workdir = str(tmp_path / "run")
    make_run(workdir)
    result = run_diagnose("--workdir", workdir, "--examples", "100", "--batch-size", "40")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "diagnosis.json")) as handle:
        summary = json.load(handle)
    assert summary["examples"] == 100 and summary["split"] == "test"
    assert set(summary["per_class"]) <= {str(label) for label in range(10)} and summary["per_class"]
    with open(os.path.join(workdir, "report.md")) as handle:
        text = handle.read()
    assert "I_q(x; z)" in text and "Trouser" in text
    for name, relative in summary["pictures"].items():
        assert os.path.getsize(os.path.join(workdir, relative)) > 1000, name
        assert f"]({relative})" in text, name
    assert set(summary["pictures"]) == set(report.PICTURES)


def test_a_reference_run_is_shown_next_to_this_one_and_mismatches_are_refused(tmp_path):
    workdir, reference = str(tmp_path / "run"), str(tmp_path / "reference")
    make_run(workdir)
    make_run(reference)
    with pytest.raises(FileNotFoundError, match="has no diagnosis.json"):
        report.diagnose_run(workdir, examples=60, reference=reference)
    report.diagnose_run(reference, examples=50)
    with pytest.raises(ValueError, match="50 test examples, this one on 60"):
        report.diagnose_run(workdir, examples=60, reference=reference)
    own = report.diagnose_run(reference, examples=60)
    result = run_diagnose("--workdir", workdir, "--examples", "60", "--reference", reference)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "diagnosis.json")) as handle:
        shown = json.load(handle)["reference"]
    assert shown["marginal_kl"] == pytest.approx(own["marginal_kl"]) and shown["prior"] == "standard_normal"
    with open(os.path.join(workdir, "report.md")) as handle:
        text = handle.read()
    assert f"## Against {reference}" in text and f"{own['marginal_kl']:.3f}" in text
    result = run_diagnose("--workdir", workdir, "--reference", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "--reference" in result.stderr


def test_one_example_writes_strict_json_and_the_report_says_n_a(tmp_path):
    # One example has no standard error: the JSON carries null (NaN is not JSON) and the report n/a.
    workdir = str(tmp_path / "run")
    make_run(workdir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an undefined figure is left out of a picture, not drawn as NaN
        report.diagnose_run(workdir, examples=1)

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    with open(os.path.join(workdir, "diagnosis.json")) as handle:
        summary = json.load(handle, parse_constant=refuse)
    assert summary["examples"] == 1 and summary["mean_kl_stderr"] is None
    with open(os.path.join(workdir, "report.md")) as handle:
        text = handle.read()
    assert f"| {summary['mean_kl']:.3f} | n/a (over examples) |" in text and "nan" not in text
