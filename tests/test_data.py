"""Tests of tfp_vae.data on the real Fashion-MNIST IDX files, broken copies of them, and mocked TFDS."""
from tfp_vae import _env  # noqa: F401

import gzip
import hashlib
import os

import numpy as np
import pytest
import requests
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import downloader

from tfp_vae import data
from tfp_vae.config import Config, DataConfig, TrainingConfig

IDX_DIR = data.DEFAULT_IDX_DIR
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(IDX_DIR, TRAIN_IMAGES)),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(data.IDX_DIR_ENV, raising=False)


@pytest.fixture
def offline(monkeypatch):
    """Makes every TFDS download fail at once, as on a machine without network (and never hang)."""
    def refuse(url, **kwargs):
        raise requests.exceptions.ConnectionError(f"network disabled by the test: {url}")
    monkeypatch.setattr(downloader, "_open_url", refuse)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)


def collect(dataset):
    """All batches of one pass, concatenated (tuples stay tuples)."""
    batches = [tf.nest.map_structure(np.asarray, batch) for batch in dataset]
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *batches)


def raw_train():
    return data.read_idx(os.path.join(IDX_DIR, TRAIN_IMAGES))


def idx_copy(folder, **replacements):
    """A folder of the four IDX files: symlinks to the real ones, except `name=bytes` replacements."""
    os.makedirs(folder, exist_ok=True)
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS):
        target = os.path.join(folder, name)
        key = name.replace("-", "_").replace(".", "_")
        if key in replacements:
            with open(target, "wb") as handle:
                handle.write(replacements[key])
        else:
            os.symlink(os.path.join(IDX_DIR, name), target)
    return str(folder)


def real_bytes(name):
    with open(os.path.join(IDX_DIR, name), "rb") as handle:
        return handle.read()


# --- reading the IDX files ---------------------------------------------------------------------

def test_read_idx_real_files():
    images, labels = raw_train(), data.read_idx(os.path.join(IDX_DIR, TRAIN_LABELS))
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    assert data.read_idx(os.path.join(IDX_DIR, TEST_IMAGES)).shape == (10000, 28, 28)


def test_read_idx_plain_file_equals_gzip(tmp_path):
    plain = tmp_path / "labels"
    plain.write_bytes(gzip.decompress(real_bytes(TEST_LABELS)))
    expected = data.read_idx(os.path.join(IDX_DIR, TEST_LABELS))
    np.testing.assert_array_equal(data.read_idx(str(plain)), expected)


def test_truncated_label_gzip_names_the_file(tmp_path):
    truncated = real_bytes(TRAIN_LABELS)[:-5000]
    folder = idx_copy(tmp_path / "idx", train_labels_idx1_ubyte_gz=truncated)
    with pytest.raises(ValueError, match="truncated") as error:
        data.load_examples(DataConfig(idx_dir=folder), "train")
    assert os.path.join(folder, TRAIN_LABELS) in str(error.value)
    assert "apt-get install --reinstall dataset-fashion-mnist" in str(error.value)


def test_truncated_image_payload_names_the_file(tmp_path):
    header = (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (10000, 28, 28))
    short = gzip.compress(header + bytes(28 * 28 * 100))  # 100 images where the header says 10000
    folder = idx_copy(tmp_path / "idx", t10k_images_idx3_ubyte_gz=short)
    with pytest.raises(ValueError, match="truncated") as error:
        data.load_examples(DataConfig(idx_dir=folder), "test")
    assert os.path.join(folder, TEST_IMAGES) in str(error.value)


def test_oversized_file_is_rejected(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(gzip.decompress(real_bytes(TEST_LABELS)) + b"\x00")
    with pytest.raises(ValueError, match="longer than its header") as error:
        data.read_idx(str(path))
    assert str(path) in str(error.value)


def test_corrupt_magic_names_the_file(tmp_path):
    broken = bytearray(gzip.decompress(real_bytes(TEST_LABELS)))
    broken[2] = 0x0D  # float instead of unsigned byte
    folder = idx_copy(tmp_path / "idx", t10k_labels_idx1_ubyte_gz=gzip.compress(bytes(broken)))
    with pytest.raises(ValueError, match="magic") as error:
        data.load_examples(DataConfig(idx_dir=folder), "test")
    assert os.path.join(folder, TEST_LABELS) in str(error.value)


def test_bad_gzip_crc_names_the_file(tmp_path):
    broken = bytearray(real_bytes(TEST_LABELS))
    broken[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path = tmp_path / TEST_LABELS
    path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match="corrupt gzip") as error:
        data.read_idx(str(path))
    assert str(path) in str(error.value)


def test_image_and_label_counts_must_match(tmp_path):
    labels = gzip.decompress(real_bytes(TEST_LABELS))
    fewer = labels[:4] + (9999).to_bytes(4, "big") + labels[8:-1]
    folder = idx_copy(tmp_path / "idx", t10k_labels_idx1_ubyte_gz=gzip.compress(fewer))
    with pytest.raises(ValueError, match="9999 labels for 10000 images"):
        data.load_examples(DataConfig(idx_dir=folder), "test")


def test_missing_files_in_explicit_idx_dir(tmp_path, monkeypatch):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        data.load_examples(DataConfig(idx_dir=str(folder)), "train")
    assert str(folder / TRAIN_IMAGES) in str(error.value)
    # The environment variable is an explicit choice too ...
    monkeypatch.setenv(data.IDX_DIR_ENV, str(folder))
    with pytest.raises(FileNotFoundError, match=data.IDX_DIR_ENV):
        data.num_examples(DataConfig(), "test")
    # ... but DataConfig.idx_dir wins over it.
    assert data.num_examples(DataConfig(idx_dir=IDX_DIR), "test") == 10000


def test_idx_files_are_read_once_per_folder(tmp_path, monkeypatch):
    folder = idx_copy(tmp_path / "idx")
    calls = []
    real_read_idx = data.read_idx
    monkeypatch.setattr(data, "read_idx", lambda path: calls.append(path) or real_read_idx(path))
    config = DataConfig(idx_dir=folder, train_examples=10)
    for split in data.SPLITS:
        data.load_examples(config, split)
        data.num_examples(config, split)
    data.image_shape(config)
    assert len(calls) == 4


# --- splits --------------------------------------------------------------------------------------

def test_element_structure_matches_tfds(tmp_path):
    expected = tfds.builder("fashion_mnist", data_dir=str(tmp_path)).info.features.get_tensor_spec()
    actual = data.load_examples(DataConfig(), "test").element_spec
    assert actual == expected
    assert data.image_shape(DataConfig()) == (28, 28, 1)


def test_split_sizes_and_cap():
    config = DataConfig()
    sizes = {split: data.num_examples(config, split) for split in data.SPLITS}
    assert sizes == {"train": 50000, "validation": 10000, "test": 10000}
    for split, size in sizes.items():
        assert int(data.load_examples(config, split).cardinality()) == size
    capped = DataConfig(train_examples=123, validation_examples=500)
    assert data.num_examples(capped, "train") == 123
    assert data.num_examples(capped, "validation") == 500
    assert data.num_examples(DataConfig(validation_examples=0), "train") == 60000


def test_validation_is_the_end_of_train_and_disjoint_from_it():
    raw = raw_train()
    train = collect(data.load_examples(DataConfig(), "train").batch(25000))
    validation = collect(data.load_examples(DataConfig(), "validation").batch(25000))
    np.testing.assert_array_equal(validation["image"][..., 0], raw[50000:])
    np.testing.assert_array_equal(train["image"][..., 0], raw[:50000])
    train_hashes = {hashlib.sha1(image.tobytes()).digest() for image in train["image"]}
    assert not any(hashlib.sha1(image.tobytes()).digest() in train_hashes for image in validation["image"])


def test_bad_split_and_validation_size():
    with pytest.raises(ValueError, match="train, validation, test"):
        data.load_examples(DataConfig(), "valid")
    with pytest.raises(ValueError, match="train, validation, test"):
        data.input_pipeline(DataConfig(), "training", 8)
    with pytest.raises(ValueError, match="only 60000"):
        data.num_examples(DataConfig(validation_examples=60000), "train")
    with pytest.raises(ValueError, match="no validation split"):
        data.load_examples(DataConfig(validation_examples=0), "validation")


# --- binarization and the input pipeline ---------------------------------------------------------

def test_dynamic_binarization_resamples_each_epoch_reproducibly():
    config = DataConfig(train_examples=200)
    pipeline = data.input_pipeline(config, "train", 64, seed=3, shuffle=False)
    first, second = collect(pipeline), collect(pipeline)
    assert first.shape == (200, 28, 28, 1) and first.dtype == np.float32
    assert set(np.unique(first)) == {0.0, 1.0}
    assert (first != second).mean() > 0.05  # a fresh sample, not static binarization
    again = data.input_pipeline(config, "train", 64, seed=3, shuffle=False)
    np.testing.assert_array_equal(collect(again), first)
    other_seed = data.input_pipeline(config, "train", 64, seed=4, shuffle=False)
    assert (collect(other_seed) != first).mean() > 0.05


def test_a_resumed_run_draws_fresh_training_epochs_reproducibly():
    config = Config().replace(data={"train_examples": 200, "validation_examples": 100},
                              training={"batch_size": 50, "seed": 3})
    fresh = data.make_datasets(config).train
    first_epochs = [collect(fresh) for _ in range(3)]  # each pass over one pipeline is the next epoch
    # A fresh run keeps the config's seed: runs that never resume are unchanged by first_epoch.
    np.testing.assert_array_equal(first_epochs[0], collect(data.input_pipeline(config.data, "train", 50, seed=3)))
    resumed = collect(data.make_datasets(config, first_epoch=2).train)
    # Resuming at epoch 2 must not replay epoch 0's order and binarization noise (a new iterator
    # would, with the config's seed), nor any other epoch already trained.
    for epoch in first_epochs:
        assert (resumed != epoch).mean() > 0.05
    np.testing.assert_array_equal(collect(data.make_datasets(config, first_epoch=2).train), resumed)
    # A new pipeline starts its stream afresh, whatever was drawn before it in the process.
    np.testing.assert_array_equal(collect(data.train_pipeline(config, first_epoch=2)), resumed)
    assert data.train_seed(3, 0) == 3 and data.train_seed(3, 2) != data.train_seed(3, 5)
    with pytest.raises(ValueError, match="first_epoch must be a non-negative integer"):
        data.make_datasets(config, first_epoch=-1)


def test_binarized_mean_matches_grayscale_mean():
    config = DataConfig(train_examples=2000)
    binary = collect(data.input_pipeline(config, "train", 500, shuffle=False))
    grayscale = raw_train()[:2000].astype(np.float64) / 255
    # 1.6M independent Bernoulli pixels: the standard error of the mean is below 0.0004.
    assert abs(binary.mean() - grayscale.mean()) < 0.003


def test_test_split_is_binarized_once_for_any_batch_size():
    config = DataConfig()
    small = collect(data.input_pipeline(config, "test", 7))
    large = collect(data.input_pipeline(config, "test", 64))
    np.testing.assert_array_equal(small, large)
    np.testing.assert_array_equal(collect(data.input_pipeline(config, "test", 64)), large)
    assert large.shape == (10000, 28, 28, 1) and set(np.unique(large)) == {0.0, 1.0}
    changed_seed = DataConfig(test_binarization_seed=99)
    assert (collect(data.input_pipeline(changed_seed, "test", 64)) != large).mean() > 0.05


def test_static_binarization_is_the_same_every_epoch():
    config = DataConfig(binarization="static", train_examples=100)
    pipeline = data.input_pipeline(config, "train", 32, shuffle=False)
    first = collect(pipeline)
    np.testing.assert_array_equal(collect(pipeline), first)
    shuffled = collect(data.input_pipeline(config, "train", 32, shuffle=True))
    assert sorted(map(bytes, shuffled)) == sorted(map(bytes, first))  # same images, other order


def test_no_binarization_is_image_over_255():
    config = DataConfig(binarization="none", train_examples=50)
    x = collect(data.input_pipeline(config, "train", 16, shuffle=False))
    np.testing.assert_array_equal(x[..., 0], raw_train()[:50].astype(np.float32) / 255)


def test_train_is_shuffled_each_epoch_and_labels_follow_images():
    config = DataConfig(binarization="none", train_examples=300)
    pipeline = data.input_pipeline(config, "train", 50, with_labels=True, seed=1)
    (x1, y1), (x2, y2) = collect(pipeline), collect(pipeline)
    assert y1.dtype == np.int64 and not np.array_equal(y1, y2)
    raw_labels = data.read_idx(os.path.join(IDX_DIR, TRAIN_LABELS))[:300]
    raw = raw_train()[:300]
    lookup = {raw[i].tobytes(): raw_labels[i] for i in range(300)}
    for images, labels in ((x1, y1), (x2, y2)):  # both epochs keep each label with its image
        assert all(lookup[np.uint8(np.round(x[..., 0] * 255)).tobytes()] == y for x, y in zip(images, labels))


def test_repeated_training_pipeline_passes_once_per_epoch_reshuffled_and_rebinarized():
    # training.fit iterates train.repeat() with steps_per_epoch = ceil(examples / batch): each
    # run of that many batches must be one whole pass, in a new order, with new binary pixels.
    examples, batch = 250, 64  # 4 batches an epoch, the last one short
    steps = -(-examples // batch)
    raw = raw_train()[:examples]
    grey = DataConfig(binarization="none", train_examples=examples)
    batches = list(data.input_pipeline(grey, "train", batch, seed=1).repeat().take(2 * steps))
    assert [len(b) for b in batches] == [64, 64, 64, 58] * 2
    first, second = (np.concatenate(batches[:steps]), np.concatenate(batches[steps:]))
    expected = sorted(image.tobytes() for image in raw)
    for epoch in (first, second):
        assert sorted(np.uint8(np.round(epoch[..., 0] * 255)).tobytes() for epoch in epoch) == expected
    assert not np.array_equal(first, second)  # reshuffled

    binary = DataConfig(train_examples=examples)
    repeated = list(data.input_pipeline(binary, "train", batch, seed=1, shuffle=False).repeat().take(2 * steps))
    first, second = np.concatenate(repeated[:steps]), np.concatenate(repeated[steps:])
    assert set(np.unique(first)) == {0.0, 1.0}
    assert (first != second).mean() > 0.05  # binarized anew, not replayed


def test_shuffle_buffer_holds_the_uint8_images_not_the_binarized_ones():
    # The buffer is filled at every epoch's start: filling it must not binarize the whole set,
    # so no map may run upstream of the shuffle (walked through the pipeline's own graph).
    pipeline = data.input_pipeline(DataConfig(train_examples=100), "train", 10)
    graph = tf.compat.v1.GraphDef.FromString(pipeline._as_serialized_graph().numpy())
    nodes = {node.name: node for node in graph.node}
    shuffles = [node for node in graph.node if node.op.startswith("ShuffleDataset")]
    assert len(shuffles) == 1

    def upstream_ops(node):
        for name in node.input:
            parent = nodes[name.lstrip("^").split(":")[0]]
            yield parent.op
            yield from upstream_ops(parent)

    upstream = set(upstream_ops(shuffles[0]))
    assert "CacheDatasetV2" in upstream and not any("Map" in op for op in upstream), upstream


def test_make_datasets():
    config = Config(data=DataConfig(train_examples=64, validation_examples=0),
                    training=TrainingConfig(batch_size=32))
    datasets = data.make_datasets(config)
    assert datasets.validation is None and datasets.validation_examples == 0
    assert (datasets.train_examples, datasets.test_examples, datasets.image_shape) == (64, 10000, (28, 28, 1))
    assert next(iter(datasets.train)).shape == (32, 28, 28, 1)
    with_validation = data.make_datasets(config.replace(data={"validation_examples": 100}), with_labels=True)
    x, labels = next(iter(with_validation.validation))
    assert x.shape == (32, 28, 28, 1) and labels.dtype == tf.int64
    assert with_validation.validation_examples == 100


# --- TFDS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_datasets_through_mock_data(tmp_path, name, shape):
    config = DataConfig(dataset=name, tfds_data_dir=str(tmp_path), train_examples=10, validation_examples=5)
    with tfds.testing.mock_data(num_examples=24):
        examples = data.load_examples(config, "test")
        assert examples.element_spec == {"image": tf.TensorSpec(shape, tf.uint8),
                                         "label": tf.TensorSpec((), tf.int64)}
        assert data.image_shape(config) == shape
        assert data.num_examples(config, "train") == 10
        x, labels = collect(data.input_pipeline(config, "train", 4, with_labels=True))
    assert x.shape == (10,) + shape and x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    assert labels.dtype == np.int64 and ((labels >= 0) & (labels < 10)).all()


def test_tfds_dataset_without_labels_gets_minus_one(tmp_path):
    config = DataConfig(dataset="binarized_mnist", binarization="none", tfds_data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=6):
        labels = collect(data.load_examples(config, "test").batch(6))["label"]
    np.testing.assert_array_equal(labels, [-1] * 6)


def test_unavailable_tfds_dataset_raises_with_advice(tmp_path, offline):
    with pytest.raises(RuntimeError, match="kmnist") as error:
        data.load_examples(DataConfig(dataset="kmnist", tfds_data_dir=str(tmp_path)), "train")
    assert "network" in str(error.value) and error.value.__cause__ is not None


def test_fashion_mnist_without_idx_files_falls_back_to_tfds(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(data, "DEFAULT_IDX_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(RuntimeError, match="apt-get install dataset-fashion-mnist"):
        data.load_examples(DataConfig(tfds_data_dir=str(tmp_path / "tfds")), "test")


def test_unknown_tfds_dataset(tmp_path):
    with pytest.raises(ValueError, match="no_such_dataset"):
        data.image_shape(DataConfig(dataset="no_such_dataset", tfds_data_dir=str(tmp_path)))
