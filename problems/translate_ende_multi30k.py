"""Multi30k task 1: English-German image descriptions (29k training pairs).

Raw files, gzip, one sentence per line: train, val and test_2016_flickr, .en and
.de, read from --raw_dir, downloaded there from the dataset's upstream
repository when they are missing.
"""

from vqkeras import problem
from vqkeras import registry

URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{name}"


@registry.register_problem
class TranslateEndeMulti30k(problem.TranslationProblem):
  """English to German on Multi30k."""

  name = "translate_ende_multi30k"
  split_stems = {"train": "train", "validation": "val", "test": "test_2016_flickr"}

  def files(self, split, raw_dir, log):
    """The split's files in raw_dir, downloading the missing ones."""
    local = self.local_files(split, raw_dir)
    names = [f"{local.stem}.{language}.gz" for language in local.languages]
    try:
      for language, name in zip(local.languages, names):
        if local.path(language) is None:
          problem.download(URL.format(name=name), local.folder / name, log)
    except problem.DataError as error:
      raise problem.DataError(
          f"Multi30k {split} data not found in --raw_dir={local.folder} and not "
          f"downloadable ({error}).\nPut {' and '.join(names)} there (the raw files of "
          f"task 1, from {URL.format(name='')}).") from error
    return local

  def text_pairs(self, split, data_dir, raw_dir, log):
    return self.files(split, raw_dir, log).dataset()

  def training_text(self, data_dir, raw_dir, log):
    return self.files("train", raw_dir, log).lines()


@registry.register_problem
class TranslateEndeMulti30kDistilled(problem.DistilledTranslationProblem):
  """Multi30k with the training targets translated by a teacher (knowledge distillation)."""

  name = "translate_ende_multi30k_distilled"
  parent_class = TranslateEndeMulti30k
