"""Images in, model inputs out: Fashion-MNIST from local IDX files, any other image set from TFDS.

Fashion-MNIST is read from the original IDX files (Debian's `dataset-fashion-mnist` package) so
training works offline; TFDS rejects those files as a manual_dir because its checksums differ.
Every source yields TFDS-shaped elements `{"image": uint8 [H, W, C], "label": int64 []}`, and
`input_pipeline` turns them into float32 batches in [0, 1], binarized as the config asks.
"""
from tfp_vae import _env  # noqa: F401  (must run before tensorflow is imported)

import dataclasses
import gzip
import os
import zlib
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfp_vae.config import Config, DataConfig

__all__ = [
    "DEFAULT_IDX_DIR", "IDX_DIR_ENV", "SPLITS", "Datasets", "image_shape", "input_pipeline",
    "load_examples", "make_datasets", "num_examples", "read_idx", "to_model_input", "train_pipeline", "train_seed",
]

DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"
IDX_DIR_ENV = "TFP_VAE_FASHION_MNIST_DIR"
SPLITS = ("train", "validation", "test")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_MAGIC = {0x00000803: 3, 0x00000801: 1}  # unsigned bytes, 3-d images / 1-d labels
_REMEDY = (f"Reinstall it with `sudo apt-get install --reinstall dataset-fashion-mnist`, or point "
           f"--idx-dir / ${IDX_DIR_ENV} at a folder with intact Fashion-MNIST IDX files.")
# Parsed arrays per IDX folder: the 26 MB of gzip are inflated once per process, not per split.
_IDX_CACHE = {}
# Stateless-seed offsets so the fixed binarizations of different splits never share noise.
_SPLIT_SEED_OFFSET = {"test": 0, "train": 1, "validation": 2}


def _bad_file(path: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}. {_REMEDY}")


def read_idx(path: str) -> np.ndarray:
    """Parses one IDX file (gzip or plain, told apart by the gzip magic bytes) into uint8."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist. {_REMEDY}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise _bad_file(path, "gzip stream ends early (truncated download or copy?)") from None
        except (gzip.BadGzipFile, zlib.error) as error:
            raise _bad_file(path, f"corrupt gzip data ({error})") from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic not in _IDX_MAGIC:
        raise _bad_file(path, "not an IDX file of unsigned bytes (bad magic number"
                              f" {raw[:4].hex() or 'missing'}; expected 00000803 or 00000801)")
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _bad_file(path, "file ends inside the IDX header (truncated)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected, actual = int(np.prod(dims)), len(raw) - header
    if actual != expected:
        # Never return fewer examples than the header promises: that would silently shrink a split.
        what = "truncated" if actual < expected else "longer than its header says"
        raise _bad_file(path, f"{what}: header {dims} needs {expected} bytes of data, found {actual}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _idx_folder(config: DataConfig) -> Tuple[str, bool]:
    """The IDX folder and whether the user chose it (then missing files are an error)."""
    chosen = config.idx_dir or os.environ.get(IDX_DIR_ENV)
    return (chosen, True) if chosen else (DEFAULT_IDX_DIR, False)


def _idx_arrays(config: DataConfig) -> Optional[dict]:
    """{"train"/"test": (images [N, 28, 28, 1], labels int64 [N])}, or None to fall back to TFDS."""
    if config.dataset != "fashion_mnist":
        return None
    folder, chosen = _idx_folder(config)
    key = os.path.abspath(folder)
    if key in _IDX_CACHE:
        return _IDX_CACHE[key]
    paths = [os.path.join(folder, name) for pair in _IDX_FILES.values() for name in pair]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing and not chosen:
        return None
    if missing:
        source = "idx_dir (--idx-dir)" if config.idx_dir else f"${IDX_DIR_ENV}"
        raise FileNotFoundError(f"{missing[0]} does not exist ({len(missing)} of the 4 Fashion-MNIST "
                                f"IDX files are missing from {folder}, set by {source}). {_REMEDY}")
    arrays = {}
    for split, (image_name, label_name) in _IDX_FILES.items():
        image_path, label_path = os.path.join(folder, image_name), os.path.join(folder, label_name)
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise _bad_file(image_path if images.ndim != 3 else label_path,
                            "images and labels are swapped or mislabelled")
        if len(images) != len(labels):
            raise _bad_file(label_path, f"{len(labels)} labels for {len(images)} images in {image_path}")
        arrays[split] = (images[..., None], labels.astype(np.int64))
    _IDX_CACHE[key] = arrays
    return arrays


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}.")


def _check_validation_size(config: DataConfig, split: str, total: Optional[int]) -> None:
    if split == "validation" and config.validation_examples == 0:
        raise ValueError("validation_examples is 0, so there is no validation split; set it > 0.")
    if total is not None and config.validation_examples >= total:
        raise ValueError(f"validation_examples={config.validation_examples} leaves no training data: "
                         f"{config.dataset}'s train split has only {total} examples.")


def _idx_split(config: DataConfig, arrays: dict, split: str):
    if split == "test":
        return arrays["test"]
    images, labels = arrays["train"]
    _check_validation_size(config, split, len(images))
    carve = len(images) - config.validation_examples
    if split == "validation":
        return images[carve:], labels[carve:]
    keep = min(carve, config.train_examples or carve)
    return images[:keep], labels[:keep]


def _tfds_builder(config: DataConfig, prepare: bool = True):
    try:
        builder = tfds.builder(config.dataset, data_dir=config.tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"unknown TFDS dataset {config.dataset!r}: {error}") from error
    if not prepare:
        return builder
    try:
        builder.download_and_prepare()
    except Exception as error:  # DownloadError, ConnectionError, disk errors... all mean "no data".
        raise RuntimeError(
            f"the dataset {config.dataset!r} could not be loaded by TFDS into data_dir "
            f"{builder.data_dir_root} ({type(error).__name__}: {error}). For fashion_mnist, install "
            "Debian's package (`sudo apt-get install dataset-fashion-mnist`) or set "
            f"${IDX_DIR_ENV} / --idx-dir to a folder of its IDX files. For any dataset, run once on "
            "a machine with network access to fill the TFDS data_dir, then copy it here "
            "(--tfds-data-dir).") from error
    return builder


def _tfds_split(config: DataConfig, builder, split: str) -> tf.data.Dataset:
    splits = builder.info.splits  # Empty under tfds.testing.mock_data: sizes are then unknown.
    cap = config.train_examples
    if split == "test":
        name = split
    elif "validation" in splits:  # The dataset ships its own validation split: train stays whole.
        _check_validation_size(config, split, None)
        name = split if split == "validation" else f"train[:{cap}]" if cap else "train"
    else:
        total = splits["train"].num_examples if "train" in splits else None
        _check_validation_size(config, split, total)
        v = config.validation_examples
        if split == "validation":
            name = f"train[-{v}:]"
        elif total is not None:
            name = f"train[:{min(total - v, cap or total)}]"
        else:
            name = f"train[:-{v}]" if v else "train"
    dataset = builder.as_dataset(split=name)
    if "image" not in dataset.element_spec:
        raise ValueError(f"{config.dataset} has no 'image' feature (features: "
                         f"{sorted(dataset.element_spec)}); only datasets with one are supported.")
    if split == "train" and cap:  # A no-op when the slice already applied the cap.
        dataset = dataset.take(cap)
    no_label = tf.constant(-1, tf.int64)
    return dataset.map(lambda e: {"image": e["image"],
                                  "label": tf.cast(e["label"], tf.int64) if "label" in e else no_label})


def load_examples(config: DataConfig, split: str) -> tf.data.Dataset:
    """uint8 examples `{"image": [H, W, C], "label": []}` of one split, in the source's order."""
    _check_split(split)
    arrays = _idx_arrays(config)
    if arrays is not None:
        images, labels = _idx_split(config, arrays, split)
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    return _tfds_split(config, _tfds_builder(config), split)


def num_examples(config: DataConfig, split: str) -> int:
    _check_split(split)
    arrays = _idx_arrays(config)
    if arrays is not None:
        return len(_idx_split(config, arrays, split)[1])
    count = int(load_examples(config, split).cardinality())
    if count < 0:  # Unknown cardinality: counting is slow but correct.
        count = int(load_examples(config, split).reduce(0, lambda n, _: n + 1))
    return count


def image_shape(config: DataConfig) -> Tuple[int, int, int]:
    arrays = _idx_arrays(config)
    if arrays is not None:
        return tuple(int(size) for size in arrays["train"][0].shape[1:])
    # The features come from the builder's code: no download is needed just to know the shape.
    features = _tfds_builder(config, prepare=False).info.features
    if "image" not in features:
        raise ValueError(f"{config.dataset} has no 'image' feature; only datasets with one are supported.")
    shape = tuple(features["image"].shape)
    if len(shape) != 3 or None in shape:
        raise ValueError(f"{config.dataset} images have shape {shape}; a fixed (H, W, C) is needed.")
    return shape


def to_model_input(images, dataset: str = "fashion_mnist", binarization_seed=None) -> tf.Tensor:
    """uint8 images -> float32 in [0, 1]; with a stateless seed [2], Bernoulli-sampled to {0, 1}."""
    # binarized_mnist stores 0/1, not 0/255. Dividing (not multiplying by 1/255) keeps x == image / 255.
    x = tf.cast(images, tf.float32) / (1.0 if dataset == "binarized_mnist" else 255.0)
    if binarization_seed is None:
        return x
    return tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=binarization_seed) < x, tf.float32)


def input_pipeline(config: DataConfig, split: str, batch_size: int, *, seed: int = 0,
                   with_labels: bool = False, shuffle: Optional[bool] = None) -> tf.data.Dataset:
    """float32 batches x [B, H, W, C] (or (x, label)): load, cache, binarize, shuffle, batch."""
    _check_split(split)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    examples = load_examples(config, split).cache()
    name = config.dataset
    if shuffle is None:
        shuffle = split == "train"
    fixed_seeds = config.binarization == "static" or (config.binarization == "dynamic" and split != "train")
    if fixed_seeds:
        # Fixed per-example seeds (split, index), numbered before the shuffle: identical every
        # epoch and for any batch size or shuffle order, so evaluations are comparable across runs.
        examples = examples.enumerate()
    if shuffle:
        # Shuffle examples, not batches, so batches are mixed anew every epoch; and the cached
        # uint8 examples, before the map: each epoch starts by filling the buffer, and filling it
        # with binarized float32 images (mapped first) made every epoch wait 1.5 s for its first
        # batch with the whole training set in the buffer (benchmarks/epoch_overhead.py).
        size = int(examples.cardinality())
        buffer = min(config.shuffle_buffer, size) if size > 0 else config.shuffle_buffer
        examples = examples.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if config.binarization == "dynamic" and split == "train":
        # A seeded tf.random op inside map replays the same numbers every epoch (static in
        # disguise). A rerandomized Dataset.random draws a fresh, seed-reproducible stream per
        # iteration, i.e. per epoch; each draw seeds one example's stateless sample. The stream
        # also depends on the global seed (tf.random.set_seed), as every seeded TF op does.
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((examples, draws)).map(
            lambda e, r: (to_model_input(e["image"], name, tf.stack([r, tf.constant(0, tf.int64)])),
                          e["label"]), num_parallel_calls=tf.data.AUTOTUNE)
    elif config.binarization == "none":
        dataset = examples.map(lambda e: (to_model_input(e["image"], name), e["label"]),
                               num_parallel_calls=tf.data.AUTOTUNE)
    else:
        base = tf.constant(config.test_binarization_seed + _SPLIT_SEED_OFFSET[split], tf.int64)
        dataset = examples.map(
            lambda i, e: (to_model_input(e["image"], name, tf.stack([base, i])), e["label"]),
            num_parallel_calls=tf.data.AUTOTUNE)
    if not with_labels:
        dataset = dataset.map(lambda x, label: x)
    return dataset.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class Datasets:
    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]  # None when validation_examples == 0
    test: tf.data.Dataset
    image_shape: Tuple[int, int, int]
    train_examples: int
    validation_examples: int
    test_examples: int


def train_seed(seed: int, first_epoch: int = 0) -> int:
    """The seed of a training run that starts (or resumes) at epoch `first_epoch`: of its input
    pipeline here, and of TensorFlow's global generator in tfp_vae.training.

    The pipeline draws each epoch's shuffle and binarization from (seed, iteration), and a resumed
    fit starts a new iterator at iteration 0: with the config's seed unchanged, epoch 101 of a
    resumed run would replay epoch 1's order and binarization noise (and, reseeded the same way,
    its reparameterization noise). A fresh run keeps the config's seed; a resumed one gets a
    stream of its own, derived from the epoch it resumes at.
    """
    if isinstance(first_epoch, bool) or not isinstance(first_epoch, (int, np.integer)) or first_epoch < 0:
        raise ValueError(f"first_epoch must be a non-negative integer, got {first_epoch!r}.")
    if first_epoch == 0:
        return seed
    return int(np.random.SeedSequence([int(seed), int(first_epoch)]).generate_state(1)[0])


def train_pipeline(config: Config, *, with_labels: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
    """The training pipeline of a run that starts (or resumes) at `first_epoch`. Each new
    pipeline starts its stream afresh: its first pass is the same for the same config and
    first_epoch, whatever ran before it in the process (iterating one pipeline again goes on)."""
    return input_pipeline(config.data, "train", config.training.batch_size, with_labels=with_labels,
                          seed=train_seed(config.training.seed, first_epoch))


def make_datasets(config: Config, *, with_labels: bool = False, first_epoch: int = 0) -> Datasets:
    """The three input pipelines of a run, batched and seeded from `config.training`; a run that
    resumes at `first_epoch` (the epochs already trained) gets fresh training draws (`train_seed`)."""
    data, batch_size, seed = config.data, config.training.batch_size, config.training.seed

    def pipeline(split):
        return input_pipeline(data, split, batch_size, seed=seed, with_labels=with_labels)

    has_validation = data.validation_examples > 0
    return Datasets(
        train=train_pipeline(config, with_labels=with_labels, first_epoch=first_epoch),
        validation=pipeline("validation") if has_validation else None,
        test=pipeline("test"),
        image_shape=image_shape(data),
        train_examples=num_examples(data, "train"),
        validation_examples=num_examples(data, "validation") if has_validation else 0,
        test_examples=num_examples(data, "test"),
    )
