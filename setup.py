"""vqkeras: vector-quantized autoencoders with hard and soft EM, in Keras 3."""

import setuptools

# Versions seen working together on Python 3.11 (see README). The full
# `tensorflow` package, not `tensorflow-cpu`: tensorflow-text requires it.
INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",   # tensorflow-datasets needs it to download, undeclared
    "tensorflow-probability==0.25.0",
    "tf-keras==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorboard==2.21.0",
    "sentencepiece==0.2.3",
    "sacrebleu==2.6.0",
    "absl-py==2.5.1",
    "numpy>=1.26,<3",
]

EXTRAS_REQUIRE = {
    "test": ["pytest==9.0.3", "scipy==1.17.1"],
    # Sonnet is the peer the bottleneck benchmark measures against.
    "bench": ["dm-sonnet==2.0.2", "dm-tree==0.1.10"],
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
    ]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
