"""Progress for people and for TensorBoard: the training line, the train/ and eval/ events."""

import time

import tensorflow as tf


def format_seconds(seconds):
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def event_writer(model_dir, folder, chief=True):
  """The TensorBoard writer of model_dir/folder (train or eval); a no-op off the chief."""
  return (tf.summary.create_file_writer(str(model_dir / folder)) if chief
          else tf.summary.create_noop_writer())


class TrainingReport:
  """Every log interval of training: one console line and the train/ TensorBoard scalars.

  `add` takes each step's parts (loss, auxiliary, examples, weight, gradient_norm);
  `report` turns the interval since the last report into rates and writes them.
  """

  def __init__(self, model_dir, optimizer, quantizers, loss_unit, start_step, chief=True,
               log=print):
    self.optimizer, self.quantizers, self.loss_unit, self.log = (optimizer, quantizers,
                                                                  loss_unit, log)
    self.writer = event_writer(model_dir, "train", chief)
    self._restart(start_step)

  def _restart(self, step):
    self._clock, self._clock_step, self._totals = time.perf_counter(), step, {}

  def add(self, parts):
    for name in ("examples", "weight"):
      self._totals[name] = self._totals.get(name, 0.0) + float(parts[name])
    if "gradient_norm" in parts:   # the largest of the interval shows the spikes
      self._totals["gradient_norm"] = max(self._totals.get("gradient_norm", 0.0),
                                          float(parts["gradient_norm"]))

  def learning_rate(self, step):
    schedule = self.optimizer.learning_rate
    return float(tf.convert_to_tensor(schedule(step) if callable(schedule) else schedule))

  def report(self, step, train_steps, parts):
    """Logs and writes the interval ending at `step`; returns its row of metrics."""
    elapsed = time.perf_counter() - self._clock
    row = {"step": step, "loss": float(parts["loss"]), "auxiliary": float(parts["auxiliary"]),
           "learning_rate": self.learning_rate(step),
           "steps_per_second": (step - self._clock_step) / elapsed,
           "examples_per_second": self._totals["examples"] / elapsed,
           f"{self.loss_unit}_per_second": self._totals["weight"] / elapsed}
    if "gradient_norm" in self._totals:
      row["gradient_norm_max"] = self._totals["gradient_norm"]
    health = {quantizer.name: {k: float(v) for k, v in quantizer.health().items()}
              for quantizer in self.quantizers}
    for name, values in health.items():
      row.update({f"codebook/{name}/{k}": v for k, v in values.items()})
    remaining = (train_steps - step) / max(row["steps_per_second"], 1e-9)
    codebook = "  ".join(f"perplexity {h['perplexity']:.1f} codes {h['codes_used']:.0f}"
                         for h in health.values())
    gradient = (f"  gradient norm <= {row['gradient_norm_max']:.2f}"
                if "gradient_norm_max" in row else "")
    self.log(f"step {step}/{train_steps}  loss {row['loss']:.4f}  aux {row['auxiliary']:.4f}"
             f"  {codebook}{gradient}  {row['steps_per_second']:.2f} steps/s  ETA "
             f"{format_seconds(remaining)}")
    with self.writer.as_default(step=step):
      tf.summary.scalar("loss", row["loss"])
      tf.summary.scalar("auxiliary_loss", row["auxiliary"])
      for name, value in row.items():
        if name not in ("step", "loss", "auxiliary"):
          tf.summary.scalar(name, value)
      for quantizer in self.quantizers:
        usage = quantizer.usage_histogram()
        if usage is not None:
          tf.summary.histogram(f"codebook/{quantizer.name}/code_usage", usage)
    self._restart(step)
    return row

  def flush(self):
    self.writer.flush()


def write_evaluation(model_dir, step, split, metrics, summaries=None):
  """An evaluation's scalars (the numbers of `metrics`), and a model's pictures and texts
  ({"images": {name: uint8 [n, H, W, C]}, "text": {name: [n] strings}}) in eval/."""
  with event_writer(model_dir, "eval").as_default(step=step):
    for name, value in metrics.items():
      if isinstance(value, (int, float)) and name != "step":
        tf.summary.scalar(name, value)
    for name, value in (summaries or {}).get("images", {}).items():
      tf.summary.image(f"{split}/{name}", value, max_outputs=8)
    for name, value in (summaries or {}).get("text", {}).items():
      tf.summary.text(f"{split}/{name}", value)


def evaluation_line(split, step, metrics):
  return f"eval {split} at step {step}: " + "  ".join(
      f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
      for k, v in metrics.items() if k not in ("step", "split"))
