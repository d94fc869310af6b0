"""Speed and quality of translation: the paper's table (docs/papers.md section 2) on Multi30k.

In one run, on the same sentences (Multi30k validation; each latent run measured in a
process of its own, so that no process holds every run's XLA programs): latency per
sentence at batch 1 and batch 64, and BLEU (sacrebleu, detokenized, from the
batch-64 outputs), for
  - the autoregressive Transformer with beam 4 and greedy,
  - the non-autoregressive latent Transformer, for every run given (n_c = 3
    and 4, with and without distillation, decoder depths), decoding its codes
    greedily; its BLEU from the references' own codes (what a perfect latent
    predictor would give: it separates the predictor's errors from the
    autoencoder's) and its latent predictor's accuracy and NLL on them,
  - latent-GLAT (vq_glat_*, also given in --nat): the length, the codes and the tokens
    each in one parallel pass; its candidates are its likeliest lengths,
and the wall time each model trained for (from its TensorBoard events). A second
table shows where the batch-1 time goes: the source encoder, the sequential search
(steps and milliseconds per step) and the latent model's parallel decoding.

The latent predictor is also measured against the codes it learns under distillation:
those of the teacher's translations (the --ar run's beam-4 outputs) of the validation
sources, and those of a sample of the distilled training pairs (generalization or
capacity?). An oracle curve shows how much BLEU each point of code accuracy buys: the
translations when a fraction p of the predictor's greedy codes (random latents, fixed
seed; as many latents as the teacher's translation has) are replaced by the codes of the
teacher's translation.

  python bench/bench_translation.py --data_dir=D --ar=runs/ar \\
      --nat=runs/vq_em_nc3,runs/vq_em_nc3_distilled,runs/vq_em_nc4,runs/vq_em_nc4_distilled

Each latent run is also measured with k candidates (--candidates): the k best code
sequences of its latent beam decoded in one batch, the translation kept by the
model's own score or by the teacher's log-likelihood (--teacher, default --ar).
Every setting is measured as a graph and with XLA buckets (translate.Search's xla: every
parallel pass compiled, the searches graph loops), and its speed-ups are against the
Transformer's with the same setting. The table ends with the targets: (a) some latent
setting within 1 BLEU of greedy decoding and at least 2x faster at batch 1; (b) within 4
BLEU and at least 4x faster.
"""

import argparse
import itertools
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

import figures
from vqkeras import startup

startup.quiet()   # before TensorFlow loads

import tensorflow as tf

from vqkeras import bleu
from vqkeras import registry
from vqkeras import translate
from vqkeras.files import read_lines
from vqkeras.models import LatentGlat, LatentTransformer
from vqkeras.reporting import format_seconds
from vqkeras.run import Run

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def training_seconds(model_dir):
  """Wall time a run trained (None without events): the span of the training events of
  each process (each start or resume writes its own file), summed, so that the time a
  stopped run waited before it resumed is not counted."""
  total, found = 0.0, False
  for path in sorted((pathlib.Path(model_dir) / "train").glob("events.out.tfevents.*")):
    times = [event.wall_time for event in tf.compat.v1.train.summary_iterator(str(path))
             if event.step > 0]
    if len(times) > 1:
      total, found = total + max(times) - min(times), True
  return total if found else None


def seconds_per_sentence(translator, sources, warm_up=2):
  """Latency per sentence, after a warm-up on the first `warm_up` sentences that traces
  the decoding function (under XLA: all of them, so that every bucket is compiled)."""
  translator.translate(sources[:warm_up])
  start = time.perf_counter()
  translations, _ = translator.translate(sources)
  return (time.perf_counter() - start) / len(sources), translations


def measure(run, label, beam_size, sources, references, batch1_sentences,
            num_candidates=1, teacher=None, predictor=None, candidate_codes="beam", xla=False,
            length_penalty=None):
  """The translations of one decoding setting of a run, and its row of the table: BLEU
  and latency (under XLA, after every shape was compiled). `length_penalty`: alpha of the
  search (None: the run's)."""
  tokenizer = run.tokenizer()
  if length_penalty is None:
    length_penalty = run.hparams.length_penalty
  search = translate.Search(beam_size, length_penalty, num_candidates, teacher,
                            candidate_codes, xla)
  single, batched = (translate.Translator(run.model, tokenizer, search, batch_size)
                     for batch_size in (1, 64))
  latency_1, _ = seconds_per_sentence(single, sources[:batch1_sentences],
                                      batch1_sentences if xla else 2)
  latency_64, translations = seconds_per_sentence(batched, sources,
                                                  len(sources) if xla else 2)
  score, signature = bleu.corpus_bleu(translations, references)
  hparams = run.hparams
  return translations, {"model": label, "latent": run.model.decodes_candidates,
          "n_c": getattr(hparams, "compression_steps", None),
          "n_s": hparams.num_samples if getattr(hparams, "bottleneck", "") == "soft_em" else None,
          "decoder_layers": getattr(hparams, "decoder_layers", 0) or hparams.num_layers,
          "num_candidates": num_candidates, "candidate_codes": candidate_codes, "xla": xla,
          "score": "teacher" if teacher else "own", "length_penalty": length_penalty,
          "bleu": score, "latency_batch1_ms": 1000 * latency_1,
          "latency_batch64_ms": 1000 * latency_64, "signature": signature,
          **(predictor or {}),
          "train_seconds": training_seconds(run.model_dir), "steps": run.step}


def id_batches(model, tokenizer, *texts, batch_size=64):
  """Batches of ids `[batch, length]` of parallel lists of lines, one tuple per batch."""
  for i in range(0, len(texts[0]), batch_size):
    yield tuple(translate.source_ids(tokenizer, tf.constant(lines[i:i + batch_size]),
                                     model.hparams.max_length)[0] for lines in texts)


def detokenized(tokenizer, ids):
  return [t.decode() for t in tokenizer.detokenize(ids).numpy()]


class PredictorMetrics:
  """The latent predictor's accuracy and NLL per latent on the nearest codes of given
  targets (teacher forcing), and the BLEU of the translations decoded from those codes.
  The model's functions are traced once per run and serve every call."""

  def __init__(self, run, tokenizer):
    self.model = run.model
    self.tokenizer = tokenizer
    self.metric_sums = tf.function(self.model.metric_sums)
    self.reconstruct = tf.function(self.model.reconstruct)

  def __call__(self, sources, targets, references=None):
    """Metrics of the `targets` of `sources`; with `references`, also the BLEU from the
    targets' own codes (from the references' codes: what a perfect latent predictor
    would give)."""
    totals = {}
    for inputs, target_ids in id_batches(self.model, self.tokenizer, sources, targets):
      sums = self.metric_sums({"inputs": inputs, "targets": target_ids})
      for name, (total, weight) in sums.items():
        totals[name] = [a + float(b)
                        for a, b in zip(totals.get(name, (0.0, 0.0)), (total, weight))]
    metrics = {"code_accuracy": totals["latent_accuracy"][0] / totals["latent_accuracy"][1],
               "code_nll": (totals["latent_nll_per_latent"][0] /
                            totals["latent_nll_per_latent"][1])}
    if references is not None:
      texts = []
      for inputs, target_ids in id_batches(self.model, self.tokenizer, sources, targets):
        texts += detokenized(self.tokenizer, self.reconstruct(inputs, target_ids))
      metrics["bleu_own_codes"] = bleu.corpus_bleu(texts, references)[0]
    return metrics


def all_predictor_metrics(run, tokenizer, sources, references, teacher_translations,
                          train_pairs):
  """PredictorMetrics on the references' codes, on the teacher translations' codes
  (prefix teacher_) and on the distilled training pairs' (prefix train_)."""
  predictor_metrics = PredictorMetrics(run, tokenizer)
  metrics = predictor_metrics(sources, references, references)
  if teacher_translations:
    metrics.update({f"teacher_{name}": value for name, value in predictor_metrics(
        sources, teacher_translations, references).items()})
  if train_pairs:
    metrics.update({f"train_{name}": value
                    for name, value in predictor_metrics(*train_pairs).items()})
  return metrics


def oracle_curve(run, tokenizer, sources, teacher_translations, references,
                 fractions=(0.0, 0.25, 0.5, 0.75, 1.0), seed=0):
  """BLEU when a fraction p of the latent predictor's greedy codes is replaced by the codes
  of the teacher's translation, {p: BLEU}. Every point decodes as many latents as the
  teacher's translation has (the predictor's codes are searched for that length), so
  p = 1 is the BLEU from the teacher translations' own codes."""
  model = run.model
  max_length = model.hparams.max_length

  @tf.function
  def codes_of(inputs, teacher_ids):
    memory, memory_mask = model.encode(inputs)
    teacher = model.quantize_targets(teacher_ids)
    predicted = model.latent_predictor.predict_of_lengths(memory, memory_mask, teacher.lengths)
    predicted = tf.pad(predicted, [[0, 0], [0, tf.shape(teacher.codes)[1] -
                                            tf.shape(predicted)[1]]])
    return predicted, teacher.codes, teacher.lengths, memory, memory_mask

  decode = tf.function(lambda *args: model.decode_codes(*args, max_length))
  rng = np.random.default_rng(seed)
  texts = {p: [] for p in fractions}
  for inputs, teacher_ids in id_batches(model, tokenizer, sources, teacher_translations):
    predicted, teacher, lengths, memory, memory_mask = codes_of(inputs, teacher_ids)
    draws = rng.random(predicted.shape)
    for p in fractions:
      codes = tf.where(draws < p, teacher, predicted)
      texts[p] += detokenized(tokenizer, decode(codes, lengths, memory, memory_mask))
  return {p: bleu.corpus_bleu(texts[p], references)[0] for p in fractions}


def training_sample(data_dir, raw_dir, count):
  """The first `count` distilled training pairs (sources, teacher translations), or None
  when the run has no distilled targets."""
  problem = registry.problem("translate_ende_multi30k_distilled")
  path = problem.distilled_path(data_dir)
  if not pathlib.Path(path).exists():
    return None
  from vqkeras.files import read_lines as read   # pylint: disable=import-outside-toplevel
  return read(raw_dir / "train.en.gz")[:count], read(path)[:count]


def mean_ms(function, items):
  """Milliseconds per call of `function` over `items`, after two warm-up calls."""
  function(items[0])
  function(items[-1])
  start = time.perf_counter()
  results = [function(item) for item in items]
  return 1000 * (time.perf_counter() - start) / len(items), results


def stages(run, label, sources):
  """Where a greedy batch-1 translation spends its time (the model only, no tokenization):
  the source encoder, the sequential search (steps and ms per step) and, for the latent
  model, the parallel decoding of all tokens from the codes."""
  model, hparams = run.model, run.hparams
  tokenizer = run.tokenizer()
  ids = [translate.source_ids(tokenizer, tf.constant([line]), hparams.max_length)[0]
         for line in sources]
  spec = [tf.TensorSpec([1, None], tf.int32)]
  encode_ms, _ = mean_ms(tf.function(model.encode, input_signature=spec), ids)
  total_ms, outputs = mean_ms(tf.function(lambda x: model.translate(x, 1, 0.0),
                                          input_signature=spec), ids)
  xla = translation_with_xla(model, ids, outputs)
  if isinstance(model, LatentTransformer):
    predict = tf.function(lambda x: model.predict_codes(x, 1, hparams.max_length),
                          input_signature=spec)
    sequential_ms, predicted = mean_ms(predict, ids)
    searched = [codes for codes, *_ in predicted]
  elif isinstance(model, LatentGlat):   # nothing sequential after the encoder
    sequential_ms, searched = encode_ms, []
    codes_ms, _ = mean_ms(tf.function(lambda x: model.predict_codes(x, 1, hparams.max_length)
                                      .codes, input_signature=spec), ids)
    xla.update(length_and_codes_ms=codes_ms - encode_ms, decoder_ms=total_ms - codes_ms)
  else:
    sequential_ms, searched = total_ms, outputs
  # At batch 1 a search emits one symbol per step, the last one EOS or STOP.
  steps = sum(int(row.shape[1]) for row in searched) / len(ids)
  search_ms = sequential_ms - encode_ms
  return {"model": label, "encode_ms": encode_ms, "search_steps": steps,
          "search_ms": search_ms, "step_ms": search_ms / steps if steps else 0.0,
          "parallel_decode_ms": total_ms - sequential_ms, "total_ms": total_ms, **xla}


def translation_with_xla(model, ids, graph_outputs):
  """A model's translation at batch 1 with XLA buckets (translate.Search's xla): the
  first request of each bucket (a padded source length and decoding length: its
  compilation), the steady-state time and whether the tokens equal the graph's."""
  compiled = tf.function(lambda x: translate.translate_ids(model, x, translate.Search(xla=True)),
                         input_signature=[tf.TensorSpec([1, None], tf.int32)])
  first_ms = {}
  for x in ids:
    start = time.perf_counter()
    translated = compiled(x)
    bucket = (-(-int(x.shape[1]) // translate.XLA_BUCKET), int(translated.shape[1]))
    first_ms.setdefault(bucket, 1000 * (time.perf_counter() - start))
  xla_ms, outputs = mean_ms(compiled, ids)
  same = all(np.array_equal(a.numpy()[a.numpy() != 0], b.numpy()[b.numpy() != 0])
             for a, b in zip(graph_outputs, outputs))   # padded to other lengths
  return {"xla_total_ms": xla_ms, "xla_first_request_ms": float(np.mean(list(first_ms.values()))),
          "xla_programs": len(first_ms), "xla_same_tokens": same}


def plot_curve(rows, path):
  """BLEU against milliseconds per sentence at batch 1, a point per row (the
  Transformer's greedy and beam points marked), written as a PNG to `path`."""
  pyplot = figures.pyplot()
  if pyplot is None:
    return
  figure, axes = pyplot.subplots(figsize=(8, 5), dpi=120)
  models = sorted({r["model"] for r in rows if is_latent(r)})
  for index, model in enumerate(models):
    points = [r for r in rows if r["model"] == model]
    axes.scatter([r["latency_batch1_ms"] for r in points], [r["bleu"] for r in points],
                 color=f"C{index}", label=model)
    for r in points:
      plain = "greedy codes" if r["n_c"] else "one pass"   # latent-GLAT searches nothing
      axes.annotate(setting(r) if setting(r) != "-" else plain,
                    (r["latency_batch1_ms"], r["bleu"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
  for r in rows:
    if not is_latent(r):
      axes.scatter([r["latency_batch1_ms"]], [r["bleu"]], color="black", marker="*", s=120)
      xla = bool(r.get("xla"))   # its label above the point, the graph's below
      axes.annotate(r["model"].replace("autoregressive ", "") + (" xla" if xla else ""),
                    (r["latency_batch1_ms"], r["bleu"]), fontsize=8, ha="right",
                    xytext=(-4, 6 if xla else -12), textcoords="offset points")
  axes.set_xlabel("ms per sentence, batch 1 (2 CPU cores)")
  axes.set_ylabel("BLEU, Multi30k validation")
  axes.set_title("Speed and quality of translation")
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7, loc="best")
  figure.tight_layout()
  figure.savefig(path)
  print(f"wrote {path}")


def print_oracles(oracles):
  if not oracles:
    return
  fractions = next(iter(oracles.values()))
  print("\nBLEU when a fraction p of the predicted codes is the teacher translation's (as many "
        "latents as it has):\n" + f"{'model':60s} " +
        " ".join(f"{f'p={p:g}':>6s}" for p in fractions))
  for label, curve in oracles.items():
    print(f"{label:60s} " + " ".join(f"{score:6.1f}" for score in curve.values()))


def print_stages(rows):
  print(f"\nWhere the batch-1 time goes (greedy; the model only, without tokenization):\n"
        f"{'model':48s} {'encode':>6s} {'steps':>5s} {'ms/step':>7s} {'search':>6s} "
        f"{'parallel':>8s} {'total':>6s}")
  for r in rows:
    print(f"{r['model']:48s} {r['encode_ms']:6.1f} {r['search_steps']:5.1f} "
          f"{r['step_ms']:7.2f} {r['search_ms']:6.1f} {r['parallel_decode_ms']:8.1f} "
          f"{r['total_ms']:6.1f}")
  for r in rows:
    if "length_and_codes_ms" in r:
      print(f"  {r['model']}: the length and the codes (one predictor pass) "
            f"{r['length_and_codes_ms']:.1f} ms, the decoder pass {r['decoder_ms']:.1f} ms")
    if "xla_total_ms" in r:
      print(f"  {r['model']}: with XLA buckets {r['xla_total_ms']:.1f} ms in all; the first "
            f"request of a bucket {r['xla_first_request_ms']:.0f} ms (compilation; "
            f"{r['xla_programs']} buckets of source and decoding lengths, multiples of "
            f"{translate.XLA_BUCKET} tokens; same tokens: {r['xla_same_tokens']})")


def is_latent(row):
  """A row of a latent model (rows written before the field: those with an n_c)."""
  return row.get("latent", row["n_c"] is not None)


def nat_label(run):
  hparams = run.hparams
  glat = isinstance(run.model, LatentGlat)
  return (("latent-GLAT, " if glat else "") + hparams.bottleneck_kind.title +
          f", K={hparams.codebook_size}" +
          (" + distillation" if "distilled" in run.config.problem else "") +
          (", layer norm" if getattr(hparams, "latent_normalization", "") == "layer" else "") +
          (f", glancing {hparams.glancing_ratio:g}-{hparams.glancing_final_ratio:g}"
           if hparams.glancing_ratio and not glat else "") +
          (f", predictor gradient {hparams.predictor_gradient_weight:g}"
           if getattr(hparams, "predictor_gradient_weight", 0) else ""))


def setting(row):
  """How a row decodes: 'k=4 teacher' for candidates, ' xla' under XLA buckets, else '-'."""
  xla = " xla" if row.get("xla") else ""
  if row.get("num_candidates", 1) == 1:
    return xla.strip() or "-"
  first = " 1st" if row.get("candidate_codes") == "first_code" else ""
  return f"k={row['num_candidates']}{first} {row['score']}{xla}"


def transformer_row(rows, search, xla):
  """The Transformer's row of `search` ("greedy" or "beam 4") decoded with the same XLA
  setting (the rows of earlier runs: without), or None."""
  found = [r for r in rows if not is_latent(r) and r["model"].endswith(search)]
  return next((r for r in found if bool(r.get("xla")) == xla), found[0] if found else None)


def speed_up(rows, row, search):
  """How many times faster at batch 1 `row` translates than the Transformer's `search`
  with the same XLA setting (nan without that row)."""
  reference = transformer_row(rows, search, bool(row.get("xla")))
  return (reference["latency_batch1_ms"] / row["latency_batch1_ms"] if reference
          else float("nan"))


def print_table(rows):
  ar_greedy = transformer_row(rows, "greedy", False)
  print(f"\n{'model':60s} {'n_c':>3s} {'dec':>3s} {'candidates':>15s} {'BLEU':>5s} "
        f"{'own':>5s} {'own-t':>5s} {'acc':>5s} {'acc-t':>5s} {'acc-tr':>6s} {'nll':>5s} "
        f"{'ms b=1':>7s} {'ms b=64':>7s} {'vs beam':>7s} {'vs greedy':>9s} {'trained':>9s}")
  for r in rows:
    r["vs_beam"], r["vs_greedy"] = speed_up(rows, r, "beam 4"), speed_up(rows, r, "greedy")
    trained = (f"{format_seconds(r['train_seconds'])}/{r['steps']}" if r["train_seconds"]
               else "-")
    shown = {name: "-" if r.get(name) is None else f"{r[name]:.{digits}f}"
             for name, digits in (("bleu_own_codes", 1), ("teacher_bleu_own_codes", 1),
                                  ("code_accuracy", 3), ("teacher_code_accuracy", 3),
                                  ("train_code_accuracy", 3), ("code_nll", 2))}
    dec = r["decoder_layers"] if is_latent(r) else "-"
    print(f"{r['model']:60s} {r['n_c'] or '-':>3} {dec:>3} {setting(r):>15s} {r['bleu']:5.1f} "
          f"{shown['bleu_own_codes']:>5s} {shown['teacher_bleu_own_codes']:>5s} "
          f"{shown['code_accuracy']:>5s} {shown['teacher_code_accuracy']:>5s} "
          f"{shown['train_code_accuracy']:>6s} {shown['code_nll']:>5s} "
          f"{r['latency_batch1_ms']:7.1f} {r['latency_batch64_ms']:7.2f} {r['vs_beam']:6.2f}x "
          f"{r['vs_greedy']:8.2f}x {trained:>9s}")
  if rows:
    print(f"\nBLEU: sacrebleu {rows[0]['signature']}; latency per sentence; speed-ups at batch 1; "
          f"dec: layers of the parallel decoder; candidates: k code sequences of the latent "
          f"beam (1st: the k likeliest first codes, each finished greedily; latent-GLAT: its k "
          f"likeliest lengths) decoded at once, "
          f"the best by the model's own score or the teacher's; own: BLEU from the "
          f"references' own codes (a perfect latent predictor), own-t from the teacher "
          f"translations'; acc, nll: the latent predictor's accuracy and NLL per latent on "
          f"the references' codes, acc-t on the teacher translations', acc-tr on distilled "
          f"training pairs'; trained: wall time/steps; vs beam, vs greedy: against the "
          f"Transformer with the same XLA setting (xla: every parallel pass compiled, the "
          f"searches graph loops).")
  if ar_greedy:
    print_targets(rows, ar_greedy)


def print_targets(rows, greedy):
  """The issue's targets: (a) within 1 BLEU of greedy decoding and >= 2x faster at batch 1;
  (b) within 4 BLEU and >= 4x faster."""
  latent = [r for r in rows if is_latent(r)]
  for name, bleu_gap, speed_up in (("a", 1.0, 2.0), ("b", 4.0, 4.0)):
    met = [r for r in latent if r["bleu"] >= greedy["bleu"] - bleu_gap and
           r["vs_greedy"] >= speed_up]
    best = max(latent, key=lambda r, gap=bleu_gap: (r["bleu"] >= greedy["bleu"] - gap,
                                                    r["vs_greedy"]), default=None)
    print(f"target ({name}) within {bleu_gap:.0f} BLEU of greedy ({greedy['bleu']:.1f}) and "
          f">= {speed_up:.0f}x faster at batch 1: " +
          (", ".join(f"met by {r['model']} {setting(r)} ({r['bleu']:.1f}, "
                     f"{r['vs_greedy']:.2f}x)" for r in met) if met else
           "not met" + (f"; nearest {best['model']} {setting(best)} ({best['bleu']:.1f} BLEU, "
                        f"{best['vs_greedy']:.2f}x)" if best else "")))


def measure_latent_run(model_dir, args, sources, references, teacher, teacher_translations,
                       train_pairs):
  """Every decoding setting of one latent run (greedy, candidates, each under XLA too),
  its predictor metrics, oracle curve and stage timings: (rows,
  stage row, {label: oracle curve})."""
  run = Run.from_model_dir(model_dir, args.data_dir, pathlib.Path(args.raw_dir),
                           log=lambda _: None)
  tokenizer = run.tokenizer()
  predictor = all_predictor_metrics(run, tokenizer, sources, references, teacher_translations,
                                    train_pairs)
  oracles = {}
  if teacher_translations and isinstance(run.model, LatentTransformer):
    oracles[nat_label(run)] = oracle_curve(run, tokenizer, sources, teacher_translations,
                                           references)
    print(json.dumps({"oracle": nat_label(run), **oracles[nat_label(run)]}), flush=True)
  candidates = [int(k) for k in args.candidates.split(",") if k and int(k) > 1]
  first_code = [int(k) for k in args.first_code_candidates.split(",") if k and int(k) > 1]
  scorers = [None] + ([teacher] if teacher else [])
  # latent-GLAT's candidates are its likeliest lengths; it has no first code to branch on.
  # Each also under XLA buckets (translate.Search's xla).
  settings = ([(1, None, "beam")] +
              [(k, scorer, "beam") for k in candidates for scorer in scorers] +
              [(k, None, "first_code") for k in first_code
               if isinstance(run.model, LatentTransformer)])
  rows = []
  for (num_candidates, scorer, candidate_codes), xla in itertools.product(settings,
                                                                          (False, True)):
    beam_size = run.hparams.decoding_defaults()["beam_size"]
    _, row = measure(run, nat_label(run), beam_size, sources, references,
                     args.batch1_sentences, num_candidates, scorer, predictor,
                     candidate_codes, xla, args.candidate_length_penalty)
    rows.append(row)
    print(json.dumps(rows[-1]), flush=True)
  n_c = f", n_c={rows[-1]['n_c']}" if rows[-1]["n_c"] else ""
  return rows, stages(run, nat_label(run) + n_c, sources[:args.batch1_sentences]), oracles


def measure_in_own_process(model_dir, args, translations, scratch):
  """`measure_latent_run` in a process of its own (this script with --rows_only), so that
  no process holds the XLA programs of every run: the JSON it wrote. `translations`: the
  file of the teacher's translations, one per line."""
  rows_json = scratch / f"{pathlib.Path(model_dir).name}.json"
  command = [sys.executable, __file__, "--rows_only", f"--nat={model_dir}",
             f"--data_dir={args.data_dir}", f"--raw_dir={args.raw_dir}",
             f"--sentences={args.sentences}", f"--batch1_sentences={args.batch1_sentences}",
             f"--candidates={args.candidates}",
             f"--first_code_candidates={args.first_code_candidates}",
             f"--train_pairs={args.train_pairs}", f"--teacher_translations={translations}",
             f"--json={rows_json}"]
  if args.candidate_length_penalty is not None:
    command.append(f"--candidate_length_penalty={args.candidate_length_penalty}")
  if args.teacher or args.ar:
    command.append(f"--teacher={args.teacher or args.ar}")
  subprocess.run(command, check=True)
  measured = json.loads(rows_json.read_text())
  measured["oracle"] = {label: {float(p): score for p, score in curve.items()}
                        for label, curve in measured["oracle"].items()}   # JSON's keys are text
  return measured


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", help="The data_dir the runs trained with (required but "
                      "with --from_json).")
  parser.add_argument("--raw_dir", default=str(SHARED / "multi30k"))
  parser.add_argument("--ar", help="model_dir of the autoregressive Transformer.")
  parser.add_argument("--nat", default="", help="Comma-separated model_dirs of latent "
                      "Transformers.")
  parser.add_argument("--sentences", type=int, default=0,
                      help="Use the first N validation sentences (default: all 1014).")
  parser.add_argument("--batch1_sentences", type=int, default=200,
                      help="Sentences timed at batch 1 (the first N).")
  parser.add_argument("--teacher", help="model_dir of the Transformer that scores the latent "
                      "models' candidates (default: --ar).")
  parser.add_argument("--candidates", default="2,4,8",
                      help="Comma-separated numbers of candidates (k > 1) to measure for every "
                      "latent run, each scored by the model itself and by the teacher.")
  parser.add_argument("--first_code_candidates", default="2,4",
                      help="Comma-separated numbers of candidates (k > 1) that differ in their "
                      "first code (candidate_codes=first_code), scored by the model itself.")
  parser.add_argument("--candidate_length_penalty", type=float, default=None,
                      help="alpha of the latent runs' candidate scores, ((5 + tokens) / 6)^alpha "
                      "(default: each run's length_penalty).")
  parser.add_argument("--train_pairs", type=int, default=1000,
                      help="Distilled training pairs the predictor's accuracy is measured on.")
  parser.add_argument("--json", help="Also write the rows here.")
  parser.add_argument("--rows_only", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--teacher_translations", help=argparse.SUPPRESS)
  parser.add_argument("--plot", help="Also draw BLEU against batch-1 latency here (PNG; "
                      "default: beside --json).")
  parser.add_argument("--from_json", help="Only draw the curve of the rows of an earlier "
                      "--json (no measuring), to --plot or beside it.")
  args = parser.parse_args()
  if args.from_json:
    rows = json.loads(pathlib.Path(args.from_json).read_text())["table"]
    plot_curve(rows, args.plot or str(pathlib.Path(args.from_json).with_suffix(".png")))
    return
  if not args.data_dir:
    parser.error("--data_dir is required (the data_dir the runs trained with).")
  raw_dir = pathlib.Path(args.raw_dir)
  sources, references = read_lines(raw_dir / "val.en.gz"), read_lines(raw_dir / "val.de.gz")
  if args.sentences:
    sources, references = sources[:args.sentences], references[:args.sentences]
  quiet = lambda _: None  # pylint: disable=unnecessary-lambda-assignment
  rows, stage_rows = [], []
  batch1_sources = sources[:args.batch1_sentences]
  teacher, teacher_translations = None, None
  if args.ar:
    run = Run.from_model_dir(args.ar, args.data_dir, raw_dir, log=quiet)
    teacher = run.model   # the default teacher, loaded once
    for (beam_size, label), xla in itertools.product(
        ((4, "autoregressive Transformer, beam 4"), (1, "autoregressive Transformer, greedy")),
        (False, True)):
      translations, row = measure(run, label, beam_size, sources, references,
                                  args.batch1_sentences, xla=xla)
      teacher_translations = teacher_translations or translations   # beam 4, as distilled
      rows.append(row)
      print(json.dumps(rows[-1]), flush=True)
    stage_rows.append(stages(run, "autoregressive Transformer", batch1_sources))
  nat_dirs = list(filter(None, args.nat.split(",")))
  oracles = {}
  if args.rows_only:   # a child of the run below: one latent run, its rows to --json
    if args.teacher:
      teacher = Run.from_model_dir(args.teacher, args.data_dir, raw_dir, log=quiet).model
    teacher_translations = read_lines(args.teacher_translations) or None
    rows, stage_row, oracles = measure_latent_run(
        nat_dirs[0], args, sources, references, teacher, teacher_translations,
        training_sample(args.data_dir, raw_dir, args.train_pairs))
    pathlib.Path(args.json).write_text(json.dumps(
        {"table": rows, "stages": [stage_row], "oracle": oracles}))
    return
  with tempfile.TemporaryDirectory() as scratch:
    scratch = pathlib.Path(scratch)
    translations = scratch / "teacher_translations.txt"   # written once, read by every child
    translations.write_text("".join(line + "\n" for line in teacher_translations or []))
    for model_dir in nat_dirs:
      measured = measure_in_own_process(model_dir, args, translations, scratch)
      rows += measured["table"]
      stage_rows += measured["stages"]
      oracles.update(measured["oracle"])
  print_table(rows)
  print_oracles(oracles)
  print_stages(stage_rows)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {"table": rows, "stages": stage_rows, "oracle": oracles}, indent=2))
  plot = args.plot or (args.json and str(pathlib.Path(args.json).with_suffix(".png")))
  if plot and rows:
    plot_curve(rows, plot)


if __name__ == "__main__":
  main()
