"""Paired differences between two runs' per-image figures (test-set parts or evaluate.py's).

Two models evaluated by `likelihood.evaluate_in_parts` on the same data config score the same
binarized test images (their binarization is fixed per image), so the difference of their
-log p(x) is best judged image by image: the spread between images, which dominates each
model's own standard error, cancels.

    from tfp_vae import comparison
    result = comparison.paired_difference("runs/likelihood/resnet_hvamp_500_iwae5",
                                          "runs/likelihood/resnet_hvamp_500_bf16")
    result["difference"], result["difference_stderr"]  # nats: iwae5's -log p(x) minus bf16's

benchmarks/paired_likelihood.py prints it.
"""
import glob
import json
import math
import os
import re
from typing import Dict, Optional, Union

import numpy as np

__all__ = ["PARTS_DIRECTORY", "parts_folder_name", "part_file_name", "parts_folder", "load_parts",
           "paired_difference"]

# The layout likelihood.evaluate_in_parts writes and this module reads, defined once:
# WORKDIR/likelihood_parts/{tag}K{num_samples}-N{images}/part-003-of-010.npz.
PARTS_DIRECTORY = "likelihood_parts"
_PART = re.compile(r"part-(\d{3})-of-(\d{3})\.npz$")  # the names part_file_name writes
_PART_GLOB = "part-*-of-*.npz"
_FIGURES = ("log_likelihood", "elbo")


def parts_folder_name(tag: str, num_samples: Union[int, str], total: Union[int, str]) -> str:
    # str: "*" in a glob pattern.
    return f"{tag}K{num_samples}-N{total}"


def part_file_name(part: int, parts: int) -> str:
    return f"part-{part:03d}-of-{parts:03d}.npz"


def parts_folder(workdir: str, num_samples: int = 5000) -> str:
    """The folder of `workdir`'s test-set parts with `num_samples` importance samples."""
    pattern = os.path.join(PARTS_DIRECTORY, parts_folder_name("*", num_samples, "*"))
    folders = sorted(glob.glob(os.path.join(workdir, pattern)))
    if not folders:
        raise ValueError(f"{workdir} has no test-set parts with K={num_samples} ({pattern}): "
                         "run benchmarks/likelihood.py on it first, or pass a parts folder.")
    if len(folders) > 1:
        raise ValueError(f"{workdir} has several K={num_samples} parts folders ({', '.join(map(os.path.basename, folders))}): "
                         "the run was evaluated after different epochs; pass the parts folder you mean.")
    return folders[0]


def _load(path: str) -> dict:
    with np.load(path) as values:
        loaded = {name: np.asarray(values[name], np.float64) for name in _FIGURES}
        if "split" in values.files:
            loaded["split"] = str(values["split"])
    return loaded


def load_parts(folder: str) -> Dict[int, dict]:
    """{part index: {figure: per-image values}} for the finished parts in `folder`; a single
    .npz file (evaluation.PER_EXAMPLE_FILE, written by trainers/evaluate.py) is part 0."""
    if folder.endswith(".npz"):
        if not os.path.isfile(folder):
            raise ValueError(f"{folder} does not exist: run trainers/evaluate.py on that run first.")
        return {0: _load(folder)}
    parts, totals = {}, set()
    for path in sorted(glob.glob(os.path.join(folder, _PART_GLOB))):
        match = _PART.search(path)
        if not match:
            continue
        totals.add(int(match.group(2)))
        parts[int(match.group(1))] = {**_load(path), "split": "test"}  # likelihood.evaluate_in_parts: test
    if len(totals) > 1:
        raise ValueError(f"{folder} mixes parts of evaluations cut into {sorted(totals)} parts: "
                         "remove the stale ones.")
    return parts


def _data_config(folder: str) -> Optional[dict]:
    # WORKDIR/evaluation_per_example.npz, or WORKDIR/likelihood_parts/TAG (two levels down).
    up = (os.pardir,) if folder.endswith(".npz") else (os.pardir, os.pardir)
    path = os.path.join(folder, *up, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file).get("data")


def paired_difference(folder: str, against: str) -> dict:
    """Mean and standard error of (folder's - against's) per-image -log p(x) and -ELBO.

    `folder`, `against`: parts folders, run folders holding one K=5000 parts folder, or the
    per-example files trainers/evaluate.py writes (same split, examples and data config on both
    sides). Uses the parts both have finished (a partial evaluation compares on its images so far);
    refuses runs whose data configs differ, since their images are not the same binarized ones.
    """
    folder, against = (path if path.endswith(".npz") or glob.glob(os.path.join(path, _PART_GLOB))
                       else parts_folder(path) for path in (folder, against))
    data, against_data = _data_config(folder), _data_config(against)
    if data is not None and against_data is not None and data != against_data:
        raise ValueError(f"{folder} and {against} were evaluated on different data configs, so not on the same "
                         f"test images: {data} vs {against_data}.")
    parts, against_parts = load_parts(folder), load_parts(against)
    shared = sorted(set(parts) & set(against_parts))
    if not shared:
        raise ValueError(f"{folder} ({sorted(parts)}) and {against} ({sorted(against_parts)}) have no finished "
                         "part in common: nothing to pair.")
    splits = {part.get("split") for part in (*parts.values(), *against_parts.values())}
    if len(splits) > 1:
        raise ValueError(f"{folder} and {against} hold different splits ({', '.join(sorted(map(str, splits)))}): "
                         "pair evaluations of the same split.")
    result = {"parts": shared, "folder": folder, "against": against, "split": splits.pop()}
    for figure, name, suffix in (("log_likelihood", "negative_log_likelihood", ""), ("elbo", "negative_elbo", "_elbo")):
        values = -np.concatenate([parts[part][figure] for part in shared])
        against_values = -np.concatenate([against_parts[part][figure] for part in shared])
        if values.shape != against_values.shape:
            raise ValueError(f"{folder} and {against} hold different image counts in parts {shared}: "
                             "they were evaluated on different images (--examples?).")
        difference = values - against_values
        count = len(difference)
        result["examples"] = count
        result[name] = float(np.mean(values))
        result[f"{name}_against"] = float(np.mean(against_values))
        result[f"difference{suffix}"] = float(np.mean(difference))
        result[f"difference{suffix}_stderr"] = (float(np.std(difference, ddof=1) / math.sqrt(count))
                                                if count > 1 else float("nan"))
    return result
