"""Problems: a dataset, how to prepare it and how to feed it, as in Tensor2Tensor.

Two folders, as in T2T: `raw_dir` holds a dataset's raw files, downloaded or
placed there by hand (T2T's tmp_dir); `data_dir` holds what is prepared from
them (vocabulary, caches, tensorflow-datasets builds). `prepare` (bin/datagen)
makes everything; `dataset` prepares what is missing, then builds the pipeline.
"""

import gzip
import json
import pathlib
import time
import urllib.error
import urllib.request

import numpy as np
import sentencepiece
import tensorflow as tf

from vqkeras import files
from vqkeras import input_pipeline
from vqkeras.tokenizer import Tokenizer, train_sentencepiece

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
  """Data that is missing, truncated or inconsistent, with what to do about it."""


class DataNotFound(DataError):
  """A dataset that is neither in --raw_dir or --data_dir nor downloadable from here."""


def check_split(split):
  """Raises DataError unless `split` is one of SPLITS."""
  if split not in SPLITS:
    raise DataError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")


def log_progress(message):
  """The default progress log of data preparation: a line on stdout."""
  print(message, flush=True)


def download(url, path, log=log_progress):
  """Downloads `url` to `path` (atomically). Raises DataError when offline."""
  log(f"Downloading {url} to {path}")
  try:
    with files.atomic_write(path) as partial, \
        urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
      while chunk := response.read(1 << 20):
        out.write(chunk)
  except (urllib.error.URLError, OSError) as error:
    raise DataError(f"Could not download {url}: {error}") from error
  return pathlib.Path(path)


def reachable(url, timeout=10):
  """Whether `url`'s server answers at all: a quick check before a download with long retries."""
  try:
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
      return True
  except urllib.error.HTTPError:
    return True   # the server answered, if only with an error page
  except (urllib.error.URLError, OSError):
    return False


def prepare_tfds(builder, url, raw_dir, missing_message, log=log_progress):
  """Prepares a tensorflow-datasets builder, failing at once with `missing_message` offline.

  Args:
    builder: a `tfds.core.DatasetBuilder` whose data_dir is our --data_dir.
    url: one of the dataset's download addresses, probed first: tfds itself
      retries for minutes before it gives up.
    raw_dir: downloads go to raw_dir/downloads.
    missing_message: function of the error, the message for the user.
  """
  if builder.is_prepared():
    return builder
  log(f"Preparing tensorflow-datasets' {builder.name} in {builder.data_dir}")
  try:
    if not reachable(url):
      raise DataError(f"{url} cannot be reached (offline?)")
    builder.download_and_prepare(
        download_dir=None if raw_dir is None else str(pathlib.Path(raw_dir) / "downloads"))
  except Exception as error:  # tfds raises many kinds when it cannot download.
    raise DataNotFound(missing_message(error)) from error
  return builder


class Problem:
  """A named dataset. Subclasses set `name` and implement `prepare` and `dataset`."""

  name = None
  # Whether preparing needs hyper-parameters (a translation problem's vocabulary size).
  prepares_with_hparams = False

  def prepare(self, data_dir, raw_dir, hparams, log=log_progress):
    """Prepares and caches everything the pipelines need in `data_dir`."""
    raise NotImplementedError

  def dataset(self, split, data_dir, raw_dir, hparams, training, seed=None,
              input_context=None):
    """The batched tf.data pipeline of `split`."""
    raise NotImplementedError


class ImageProblem(Problem):
  """Images held in memory as uint8 arrays, cached in `data_dir` as one .npz per problem.

  Subclasses implement `read_raw(data_dir, raw_dir, log)`, returning
  {split: (images, labels)} for the splits they have.
  """

  image_shape = None   # (H, W, channels) of every image

  def cache_path(self, data_dir):
    """The prepared images of every split, one `.npz` file in `data_dir`."""
    return pathlib.Path(data_dir) / f"{self.name}.npz"

  def read_raw(self, data_dir, raw_dir, log):
    """{split: (uint8 images `[n, H, W, 3]`, int labels `[n]`)} from the raw files in
    `raw_dir` or a download; a subclass defines it."""
    raise NotImplementedError

  def prepare(self, data_dir, raw_dir, hparams=None, log=log_progress):
    splits = self.read_raw(data_dir, raw_dir, log)
    path = self.cache_path(data_dir)
    arrays = {}
    for split, (images, labels) in splits.items():
      arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
      log(f"{self.name}: {split}: {len(images)} images")
    with files.atomic_write(path) as partial, open(partial, "wb") as f:
      np.savez(f, **arrays)
    log(f"{self.name}: wrote {path}")

  def arrays(self, split, data_dir, raw_dir, log=log_progress):
    """uint8 images `[n, H, W, C]` and int64 labels `[n]` of `split`."""
    check_split(split)
    path = self.cache_path(data_dir)
    if not path.is_file():
      self.prepare(data_dir, raw_dir, log=log)
    with np.load(path) as cache:
      if f"{split}_images" not in cache:
        have = sorted(key[:-len("_images")] for key in cache if key.endswith("_images"))
        raise DataError(f"{self.name} has no {split!r} split in {path} (it has "
                        f"{', '.join(have)}): the raw data had none.")
      return cache[f"{split}_images"], cache[f"{split}_labels"]

  def dataset(self, split, data_dir, raw_dir, hparams, training, seed=None,
              input_context=None):
    images, labels = self.arrays(split, data_dir, raw_dir)
    return input_pipeline.image_batches(images, labels, hparams.batch_size, training, seed,
                                        input_context)


def line_count(path):
  """Lines in a plain or gzip text file, counted without holding the file."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    return sum(1 for _ in f)


def text_line_dataset(path):
  """The lines of a text file (plain or .gz) read lazily, as `files.read_lines` reads them."""
  path = str(path)
  lines = tf.data.TextLineDataset(path, compression_type="GZIP" if path.endswith(".gz") else "")
  return lines.map(lambda line: tf.strings.regex_replace(line, "\r$", ""))


class TranslationProblem(Problem):
  """Sentence pairs, a shared SentencePiece vocabulary and token-budget batches.

  Subclasses implement `text_pairs(split, data_dir, raw_dir, log)`, returning a
  dataset of (source, target) strings, and `training_text(data_dir, raw_dir,
  log)`, returning the training (source, target) lines for the vocabulary and
  the statistics.
  """

  prepares_with_hparams = True   # the vocabulary's size

  source_language = "en"
  target_language = "de"
  # Split name -> file stem of the local parallel files, e.g. "train" -> train.en, train.de.
  split_stems = {}

  def local_files(self, split, raw_dir):
    """The split's `ParallelTextFiles` in raw_dir (their `paths()` is None when absent)."""
    check_split(split)
    return ParallelTextFiles(raw_dir or ".", self.split_stems[split],
                             (self.source_language, self.target_language))

  def text_pairs(self, split, data_dir, raw_dir, log):
    """The (source, target) string pairs of a split, read from `raw_dir` or downloaded."""
    raise NotImplementedError

  def training_text(self, data_dir, raw_dir, log):
    """The lines the SentencePiece vocabulary is trained on (sources and targets)."""
    raise NotImplementedError

  def text_lines(self, split, data_dir, raw_dir, log=log_progress):
    """(source lines, target lines) of a split, as str."""
    sources, targets = [], []
    for source, target in self.text_pairs(split, data_dir, raw_dir, log).as_numpy_iterator():
      sources.append(source.decode("utf-8", errors="replace"))
      targets.append(target.decode("utf-8", errors="replace"))
    return sources, targets

  def vocab_path(self, data_dir, hparams):
    """The SentencePiece model of this problem and vocabulary size in `data_dir`."""
    return pathlib.Path(data_dir) / f"{self.name}.sentencepiece{hparams.vocab_size}.model"

  def prepare(self, data_dir, raw_dir, hparams, log=log_progress):
    """Trains the vocabulary and reports what the pipeline will drop."""
    start = time.time()
    sources, targets = self.training_text(data_dir, raw_dir, log)
    path = self.vocab_path(data_dir, hparams)
    if not path.is_file():
      log(f"{self.name}: training a {hparams.vocab_size}-piece SentencePiece vocabulary "
          f"on {len(sources)} sentence pairs")
      train_sentencepiece(
          (line for pair in zip(sources, targets) for line in pair if line.strip()),
          hparams.vocab_size, path)
      log(f"{self.name}: wrote {path}")
    stats = self.statistics(sources, targets, path, hparams.max_length)
    stats_path = path.with_suffix(".stats.json")
    stats_path.write_text(json.dumps(stats, indent=2))
    log(f"{self.name}: training pairs {stats['pairs']}, kept {stats['kept']}; dropped "
        f"{stats['empty']} with an empty side and {stats['too_long']} longer than "
        f"max_length={hparams.max_length} tokens ({time.time() - start:.0f}s)")
    return stats

  @staticmethod
  def statistics(sources, targets, vocab_path, max_length):
    """Counts the pairs the pipeline keeps and drops (empty, over-long), as it does."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(vocab_path))
    empty = too_long = 0
    for start in range(0, len(sources), 10000):
      source, target = sources[start:start + 10000], targets[start:start + 10000]
      nonempty = [(s, t) for s, t in zip(source, target) if s.strip() and t.strip()]
      empty += len(source) - len(nonempty)
      if nonempty:
        lengths = [[len(ids) + 1 for ids in processor.encode(list(side))]   # + EOS
                   for side in zip(*nonempty)]
        too_long += sum(max(a, b) > max_length for a, b in zip(*lengths))
    pairs = len(sources)
    return {"pairs": pairs, "empty": empty, "too_long": too_long,
            "kept": pairs - empty - too_long}

  def tokenizer(self, data_dir, raw_dir, hparams, log=log_progress):
    """The shared tokenizer, training the vocabulary first if it is not in `data_dir`."""
    path = self.vocab_path(data_dir, hparams)
    if not path.is_file():
      self.prepare(data_dir, raw_dir, hparams, log)
    return Tokenizer(path)

  def dataset(self, split, data_dir, raw_dir, hparams, training, seed=None,
              input_context=None):
    check_split(split)
    tokenizer = self.tokenizer(data_dir, raw_dir, hparams)
    pairs = self.text_pairs(split, data_dir, raw_dir, log_progress)
    return input_pipeline.translation_batches(
        pairs, tokenizer, hparams.batch_size, hparams.max_length, training, seed,
        input_context)


class DistilledTranslationProblem(TranslationProblem):
  """A translation problem whose training targets are a teacher's translations.

  Knowledge distillation (docs/papers.md section 2): an autoregressive teacher
  translates the training sources with beam search (bin/decode); the
  non-autoregressive model trains on those outputs. Everything else - the
  sources, the validation and test splits, the vocabulary - is the parent
  problem's, so the BLEU of both models is measured on the same references.

  The teacher's translations are one line per training pair, in
  `{data_dir}/{parent name}.distilled.train.{target language}`.
  """

  parent_class = None   # the TranslationProblem distilled

  def __init__(self):
    self.parent = self.parent_class()
    self.source_language = self.parent.source_language
    self.target_language = self.parent.target_language
    self.split_stems = self.parent.split_stems

  def distilled_path(self, data_dir):
    """The teacher's translations of the training sources, one line per source."""
    return pathlib.Path(data_dir) / (f"{self.parent.name}.distilled.train."
                                     f"{self.target_language}")

  def text_pairs(self, split, data_dir, raw_dir, log):
    """The (source, target) string pairs of a split, read from `raw_dir` or downloaded."""
    pairs = self.parent.text_pairs(split, data_dir, raw_dir, log)
    if split != "train":
      return pairs
    path = self.distilled_path(data_dir)
    if not path.is_file():
      source = self.parent.local_files("train", raw_dir).path(self.source_language)
      raise DataError(
          f"The teacher's translations of the training sources are not in {path}. Make them "
          f"with a trained autoregressive model, e.g.:\n  bin/decode --problem={self.parent.name} "
          f"--hparams=transformer_small --model_dir=TEACHER --data_dir={data_dir} "
          f"--decode_from_file={source or 'TRAIN_SOURCES'} --decode_to_file={path} "
          f"--decode_hparams=beam_size=4")
    teacher = text_line_dataset(path)
    return tf.data.Dataset.zip((pairs.map(lambda source, _: source), teacher))

  def training_text(self, data_dir, raw_dir, log):
    """The lines the SentencePiece vocabulary is trained on (sources and targets)."""
    return self.parent.training_text(data_dir, raw_dir, log)

  def vocab_path(self, data_dir, hparams):
    """The SentencePiece model of this problem and vocabulary size in `data_dir`."""
    return self.parent.vocab_path(data_dir, hparams)


class ParallelTextFiles:
  """Line-aligned source and target files of one split in a folder, plain or gzip.

  Args:
    folder: the folder.
    stem: the file name before the language suffix, e.g. "train" for train.en(.gz).
    languages: (source, target) suffixes.
  """

  def __init__(self, folder, stem, languages):
    self.folder, self.stem, self.languages = pathlib.Path(folder), stem, languages

  def expected(self):
    """The file names looked for, for messages: `stem.lang[.gz]` per language."""
    return [f"{self.stem}.{language}[.gz]" for language in self.languages]

  def path(self, language):
    """The file of one language, plain or gzip, or None."""
    for ending in ("", ".gz"):
      path = self.folder / f"{self.stem}.{language}{ending}"
      if path.is_file():
        return path
    return None

  def paths(self):
    """The two files, or None when either is missing."""
    found = [self.path(language) for language in self.languages]
    return None if None in found else found

  def lines(self):
    """(source lines, target lines); refuses files of different line counts."""
    source_path, target_path = self.paths()
    source, target = files.read_lines(source_path), files.read_lines(target_path)
    if len(source) != len(target):
      raise DataError(f"Parallel files of different lengths: {source_path} has {len(source)} "
                      f"lines, {target_path} has {len(target)}; line i of one must translate "
                      f"line i of the other.")
    return source, target

  def dataset(self):
    """(source, target) string pairs, read lazily; line counts are checked first."""
    source_path, target_path = self.paths()
    counts = [line_count(source_path), line_count(target_path)]
    if counts[0] != counts[1]:
      raise DataError(f"Parallel files of different lengths: {source_path} has {counts[0]} "
                      f"lines, {target_path} has {counts[1]}; line i of one must translate "
                      f"line i of the other.")
    return tf.data.Dataset.zip((text_line_dataset(source_path),
                                text_line_dataset(target_path)))
