"""Evaluation of a run on a split: the model's metrics, codebook health and BLEU."""

import tensorflow as tf

from vqkeras import decoding
from vqkeras import bleu
from vqkeras import reporting
from vqkeras import translate
from vqkeras.models import TranslationModel


class Evaluator:
  """Evaluates a `vqkeras.run.Run` (bin/eval, and bin/train with --eval_every).

  Keeps one translator per decoding setting, so that evaluating again during
  training reuses its traced functions.
  """

  def __init__(self, run):
    self.run = run
    self._translators = {}

  def metric_sums(self, split):
    """The model's `metric_sums` ({name: (sum, weight)}) summed over all of `split`, on
    every replica."""
    run = self.run
    dataset = run.strategy.distribute_datasets_from_function(
        lambda context: run.dataset(split, False, context))

    @tf.function(input_signature=[dataset.element_spec])
    def eval_step(features):
      sums = run.strategy.run(run.model.metric_sums, args=(features,))
      return tf.nest.map_structure(lambda v: run.strategy.reduce("sum", v, axis=None), sums)

    totals = {}
    for features in dataset:
      for name, (total, weight) in eval_step(features).items():
        previous = totals.get(name, (0.0, 0.0))
        totals[name] = (previous[0] + float(total), previous[1] + float(weight))
    return totals

  def evaluate(self, split="validation", decode_options=None, bleu_sentences=None,
               teacher=None):
    """Metrics over all of `split`, and codebook health; written to TensorBoard on the chief.

    Each metric of the model's `metric_sums` is reported as sum / weight over the
    split. A TranslationModel is also scored with BLEU on the split's text (chief only).

    Args:
      decode_options: `decoding.DecodeHParams` of the BLEU translations (default:
        the model's hyper-parameters').
      bleu_sentences: score the first N sentences of the split only (default: all).
      teacher: the Transformer that scores the latent model's candidates (num_candidates
        of decode_options > 1); None: the model scores them.
    """
    run = self.run
    for quantizer in run.quantizers:
      quantizer.perplexity_metric.reset_state()
    metrics = {"step": run.step, "split": split}
    metrics.update({name: total / max(weight, 1.0)
                    for name, (total, weight) in self.metric_sums(split).items()})
    for quantizer in run.quantizers:
      metrics[f"{quantizer.name}/perplexity"] = float(quantizer.perplexity_metric.result())
      metrics[f"{quantizer.name}/codes_used"] = int(quantizer.codes_used())
    if run.chief:
      summaries = run.model.summaries(next(iter(run.dataset(split, training=False))))
      if isinstance(run.model, TranslationModel):
        scores, translations = self.bleu(split, decode_options, bleu_sentences, teacher)
        metrics.update(scores)
        summaries.setdefault("text", {}).update(translations)
      reporting.write_evaluation(run.model_dir, run.step, split, metrics, summaries)
    run.log(reporting.evaluation_line(split, run.step, metrics))
    return metrics

  def translator(self, options, teacher=None):
    """The `translate.Translator` of a decoding setting, built once."""
    search = translate.Search.of(options, teacher)
    key = (search, options.batch_size)
    if key not in self._translators:
      self._translators[key] = translate.Translator(self.run.model, self.run.tokenizer(),
                                                    search, options.batch_size)
    return self._translators[key]

  def bleu(self, split, decode_options=None, sentences=None, teacher=None):
    """BLEU of the split's translations (sacrebleu, detokenized), and examples of them.

    Returns:
      (scores, texts): the BLEU metrics; {name: [n] strings} of translations beside
      their sources and references, and the BLEU signature, for TensorBoard.
    """
    run = self.run
    options = decode_options or decoding.decode_hparams(run.hparams)
    sources, references = run.problem.text_lines(split, run.config.data_dir,
                                                 run.config.raw_dir or None)
    sources, references = sources[:sentences], references[:sentences]
    result = bleu.evaluate_bleu(self.translator(options, teacher), sources, references)
    shown = range(min(8, len(sources)))
    texts = {"translations": tf.constant(
                 [f"{sources[i]}  \n→ {result['translations'][i]}  \n(reference: "
                  f"{references[i]})" for i in shown]),
             "bleu_signature": tf.constant(result["bleu_signature"])}
    scores = {"bleu": result["bleu"], "bleu_signature": result["bleu_signature"],
              "bleu_sentences": len(sources), "beam_size": options.beam_size,
              "decode_seconds_per_sentence": result["decode_seconds"] / max(len(sources), 1)}
    return scores, texts
