"""Datasets, one module per problem; installed as `vqkeras.problems`.

Importing this package registers every problem (see `vqkeras.registry`).
"""

from vqkeras.problems import image_cifar10
from vqkeras.problems import translate_ende
from vqkeras.problems import translate_ende_multi30k
