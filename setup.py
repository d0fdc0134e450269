"""tfp_vae: variational autoencoders built from tfp.layers, trained with tf_keras `model.fit`."""
from setuptools import find_packages, setup

setup(
    name="tfp_vae",
    version="0.1.0",
    description="Variational autoencoders with TensorFlow Probability layers, model.fit, "
                "keras-tuner, tf.distribute and TF Serving export.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tfp_vae", "tfp_vae.*"]),
    python_requires=">=3.10",
    install_requires=[
        # `tensorflow`, not `tensorflow-cpu`: tf-keras and tensorflow-serving-api require it;
        # the Linux wheel also runs on GPUs when CUDA libraries are present.
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-probability>=0.25,<0.26",
        "tensorflow-datasets==4.9.10",
        # tensorflow-datasets imports it lazily when preparing datasets without declaring it.
        "importlib_resources",
        # keras-tuner binding to tf_keras is version-specific; see tfp_vae/tuning.py.
        "keras-tuner[bayesian]==1.4.8",  # [bayesian]: scipy and scikit-learn for BayesianOptimization
        # TF 2.21 no longer pulls it in; TensorBoard callbacks and keras-tuner import it.
        "tensorboard>=2.20",
        "tensorflow-serving-api>=2.21,<2.22",
        "matplotlib",
        "numpy",
    ],
    extras_require={"test": ["pytest", "pytest-xdist"]},
)
