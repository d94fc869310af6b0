"""WMT'14 English-German: the translation task of Roy et al. 2018.

Train on WMT'14, validate on newstest2013, test on newstest2014. Sources, tried
in this order:
1. line-aligned parallel text files in --raw_dir, plain or gzip:
   train.en/train.de, newstest2013.en/.de, newstest2014.en/.de;
2. tensorflow-datasets' `wmt14_translate/de-en`, prepared in --data_dir or
   downloaded there.
"""

from vqkeras import problem
from vqkeras import registry

TFDS_NAME = "wmt14_translate/de-en"
TFDS_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
PROBE_URL = "https://www.statmt.org/wmt14/"   # where tensorflow-datasets downloads WMT'14 from


@registry.register_problem
class TranslateEnde(problem.TranslationProblem):
  """English to German on WMT'14."""

  name = "translate_ende"
  split_stems = {"train": "train", "validation": "newstest2013", "test": "newstest2014"}

  def text_pairs(self, split, data_dir, raw_dir, log):
    local = self.local_files(split, raw_dir)
    if local.paths() is not None:
      return local.dataset()
    dataset = self.tfds_builder(split, data_dir, raw_dir, log).as_dataset(
        split=TFDS_SPLITS[split])
    return dataset.map(lambda example: (example[self.source_language],
                                        example[self.target_language]))

  def training_text(self, data_dir, raw_dir, log):
    local = self.local_files("train", raw_dir)
    if local.paths() is not None:
      return local.lines()
    sources, targets = [], []
    for source, target in self.text_pairs("train", data_dir, raw_dir, log).as_numpy_iterator():
      sources.append(source.decode("utf-8"))
      targets.append(target.decode("utf-8"))
      if len(sources) % 500000 == 0:
        log(f"translate_ende: read {len(sources)} training pairs")
    return sources, targets

  def tfds_builder(self, split, data_dir, raw_dir, log):
    """tensorflow-datasets' `wmt14_translate/de-en` builder, prepared from the files
    in `raw_dir` when they are there; a DataError naming them when offline."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    local = self.local_files(split, raw_dir)

    def missing_message(error):
      return (f"WMT'14 English-German {split} data not found and not downloadable "
              f"({type(error).__name__}: {error}).\nPut line-aligned files "
              f"{' and '.join(local.expected())} in --raw_dir={raw_dir}, or, with internet, "
              f"prepare tensorflow-datasets' copy in --data_dir:\n"
              f"  python -m tensorflow_datasets.scripts.download_and_prepare "
              f"--datasets={TFDS_NAME} --data_dir={data_dir}")
    log(f"translate_ende: no parallel text files in --raw_dir={raw_dir}; trying "
        f"tensorflow-datasets' {TFDS_NAME} (a long download the first time)")
    return problem.prepare_tfds(tfds.builder(TFDS_NAME, data_dir=data_dir), PROBE_URL,
                                raw_dir, missing_message, log)


@registry.register_problem
class TranslateEndeDistilled(problem.DistilledTranslationProblem):
  """WMT'14 with the training targets translated by a teacher (knowledge distillation)."""

  name = "translate_ende_distilled"
  parent_class = TranslateEnde
