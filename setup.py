"""vqkeras: vector-quantized autoencoders with hard and soft EM, in Keras 3."""

import setuptools

# Ranges, so that vqkeras installs into an environment that holds other versions: the lowest
# version of each that the test suite passed with (README.md, Versions), no upper
# bound unless a newer release is known to break. TensorFlow, tf-keras, TensorFlow Text and
# TensorFlow Probability move together: tf-keras and TF Text of a minor version require
# TensorFlow of the same minor version (pip picks matching ones), and TFP supports the
# TensorFlow of its release and the next. The exact set CI tests is constraints.txt.
# The full `tensorflow` package, not `tensorflow-cpu`: tensorflow-text requires it.
INSTALL_REQUIRES = [
    "tensorflow>=2.21",
    "tf-keras>=2.21",
    "tensorflow-text>=2.21",
    "tensorflow-probability>=0.25",
    "keras>=3.15",
    "tensorboard>=2.21",
    "tensorflow-datasets>=4.9.4",
    "importlib_resources>=6",   # tensorflow-datasets needs it to download, undeclared
    "sentencepiece>=0.2.0",
    "sacrebleu>=2.0",
    "absl-py>=1.4",
    "numpy>=1.26",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8", "pytest-xdist>=3", "scipy>=1.11"],
    # The peers the bottleneck benchmark measures against: Sonnet, and
    # vector-quantize-pytorch (install a CPU build of torch first: PyPI's default torch
    # for Linux is a CUDA build of several GB).
    # matplotlib draws the benchmarks' figures.
    "bench": ["dm-sonnet>=2.0.2", "dm-tree>=0.1.8", "vector-quantize-pytorch>=1.20",
              "matplotlib>=3.8"],
    # The documentation site: `mkdocs build --strict` (mkdocs.yml), the API reference from
    # the docstrings.
    "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings-python>=1.10"],
}

setuptools.setup(
    name="vqkeras",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.14",
    # problems/ and hparams/ live at the top of the repository but install under
    # the vqkeras namespace, so no generic top-level module reaches site-packages.
    packages=["vqkeras", "vqkeras.cli", "vqkeras.layers", "vqkeras.models",
              "vqkeras.problems", "vqkeras.hparams"],
    package_dir={"vqkeras.problems": "problems", "vqkeras.hparams": "hparams"},
    entry_points={"console_scripts": [
        "vqkeras-datagen = vqkeras.cli.datagen:run",
        "vqkeras-train = vqkeras.cli.train:run",
        "vqkeras-eval = vqkeras.cli.eval:run",
        "vqkeras-decode = vqkeras.cli.decode:run",
        "vqkeras-export = vqkeras.cli.export:run",
        "vqkeras-average-checkpoints = vqkeras.cli.average_checkpoints:run",
    ]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
