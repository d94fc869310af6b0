"""From the raw Multi30k files to the translation benchmark table, resumably.

The paper's translation experiment (Roy et al. 2018; docs/translation.md) at CPU
size, each stage one of the documented commands:
  1. datagen:  the shared SentencePiece vocabulary (bin/datagen);
  2. teacher:  the autoregressive Transformer, baseline and teacher (bin/train);
  3. distill:  the teacher translates the training sources with beam 4 (bin/decode), the
               targets of the `translate_ende_multi30k_distilled` problem;
  4. latent:   the non-autoregressive latent model (soft EM, n_c = 3) on the distilled
               pairs (bin/train; with --predictor_steps its last steps train the latent
               predictor alone, `predictor_only_steps`, and with --decoder_steps then the
               parallel decoder alone on the predictor's codes, `decoder_only_steps`);
  5. average:  its last --average_last checkpoints averaged into the run
               <latent_name>_averaged (bin/average_checkpoints);
  6. bench:    bench/bench_translation.py, the speed/quality table on Multi30k validation.

  python examples/translate_multi30k.py --work_dir=$HOME/vqkeras_multi30k
  python examples/translate_multi30k.py --work_dir=$HOME/vqkeras_multi30k --stages=latent,bench \
      --latent_name=latent_dec1 --latent_overrides=decoder_layers=1   # a variant beside it
  python examples/translate_multi30k.py --work_dir=$HOME/vqkeras_multi30k --stages=latent,bench \
      --latent_hparams=vq_glat_small --latent_name=latent_glat --joint_steps=3600   # latent-GLAT

Re-running the same command resumes: a finished training or translation is not redone,
an interrupted training continues from its latest checkpoint. `--stages=bench` reruns
only the benchmark. Measured on two CPU cores: teacher 23 minutes, distillation 5.5,
the paper's latent model at its set's 6000 steps about 100, latent-GLAT at 3600 steps 149,
benchmark about 10 per latent run (docs/results.md).
"""

import argparse
import os
import pathlib
import subprocess
import sys
import time

from vqkeras import averaging
from vqkeras import registry

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("datagen", "teacher", "distill", "latent", "average", "bench")


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", default=str(REPO / "runs" / "multi30k"),
                      help="Holds data/ (vocabulary, distilled targets), the runs and the table.")
  parser.add_argument("--raw_dir", default=str(REPO.parent / "shared" / "data" / "multi30k"),
                      help="The Multi30k raw files (downloaded there when missing).")
  parser.add_argument("--stages", default=",".join(STAGES),
                      help=f"Comma-separated stages to run, of {','.join(STAGES)}.")
  parser.add_argument("--teacher_hparams", default="transformer_small")
  parser.add_argument("--latent_hparams", default="vq_em_small")
  parser.add_argument("--latent_overrides", default="",
                      help="More hparams_overrides of the latent model, e.g. decoder_layers=1.")
  parser.add_argument("--latent_name", default="latent_distilled",
                      help="The latent run's directory in --work_dir: another name trains a "
                      "variant beside it (e.g. --latent_name=latent_dec1 "
                      "--latent_overrides=decoder_layers=1); the benchmark measures them all.")
  parser.add_argument("--joint_steps", type=int, default=None,
                      help="Steps of the latent model trained jointly (the paper's model); "
                      "latent-GLAT: all its steps (default: the set's).")
  parser.add_argument("--predictor_steps", type=int, default=None,
                      help="Steps after them that train the latent predictor alone (the "
                      "paper's model; default: the set's predictor_only_steps).")
  parser.add_argument("--decoder_steps", type=int, default=None,
                      help="Steps after those that train the parallel decoder alone on the "
                      "latent predictor's codes (the paper's model; default: the set's "
                      "decoder_only_steps).")
  parser.add_argument("--average_last", type=int, default=3,
                      help="Checkpoints of the latent run averaged into <latent_name>_averaged "
                      "(written every 500 steps: 3 spans its last 1000 steps; 0: none).")
  parser.add_argument("--bench_args", default="",
                      help="More arguments for bench/bench_translation.py.")
  args = parser.parse_args()
  unknown = set(args.stages.split(",")) - set(STAGES)
  if unknown:
    parser.error(f"unknown --stages {','.join(sorted(unknown))}: choose from {','.join(STAGES)}")
  return args


def latent_budget(args):
  """The latent run's step overrides: the paper's model trains in stages (joint, then the
  latent predictor alone, then the decoder alone); latent-GLAT in one."""
  hparams = registry.hparams(args.latent_hparams)   # the set's budget by default
  if "predictor_only_steps" not in hparams.field_names():
    if args.predictor_steps or args.decoder_steps:
      sys.exit(f"--latent_hparams={args.latent_hparams} trains in one stage: drop "
               f"--predictor_steps and --decoder_steps (--joint_steps counts all its steps).")
    return "" if args.joint_steps is None else f"train_steps={args.joint_steps}"
  predictor = (hparams.predictor_only_steps if args.predictor_steps is None else
               args.predictor_steps)
  decoder = hparams.decoder_only_steps if args.decoder_steps is None else args.decoder_steps
  joint = (hparams.train_steps - hparams.predictor_only_steps - hparams.decoder_only_steps
           if args.joint_steps is None else args.joint_steps)
  return (f"train_steps={joint + predictor + decoder},"
          f"predictor_only_steps={predictor},decoder_only_steps={decoder}")


def run(command, log_path=None):
  """Runs a command of the repository, echoing it; its output also goes to `log_path`."""
  print("+ " + " ".join(command), flush=True)
  start = time.time()
  if log_path:
    pathlib.Path(log_path).parent.mkdir(parents=True, exist_ok=True)
  with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as process:
    with open(log_path, "a", encoding="utf-8") if log_path else open(os.devnull, "w") as log:
      for line in process.stdout:
        sys.stdout.write(line)
        log.write(line)
  if process.returncode:
    sys.exit(f"stopped: `{command[0]}` exited with {process.returncode}; fix the cause and rerun "
             f"the same command to resume.")
  print(f"  ({(time.time() - start) / 60:.1f} min)", flush=True)


def average(latent, averaged, args, overrides, common):
  """The latent run's last --average_last checkpoints averaged into the run `averaged`,
  unless it holds the average of the latent run's latest step already (or
  --average_last is 0)."""
  if not args.average_last:
    return
  try:
    latest = pathlib.Path(averaging.checkpoint_paths(latent, last=1)[0]).name
  except FileNotFoundError as error:
    sys.exit(f"stopped: {error}")
  if (averaged / "checkpoints" / f"{latest}.index").exists():
    print(f"average: {averaged} is there")
    return
  if averaged.exists():
    sys.exit(f"stopped: {averaged} holds the average of an earlier step of {latent}; remove it "
             f"and rerun to average the latest checkpoints.")
  run(["bin/average_checkpoints", "--problem=translate_ende_multi30k_distilled",
       f"--hparams={args.latent_hparams}", f"--hparams_overrides={overrides}",
       f"--model_dir={latent}", f"--output_dir={averaged}", f"--last={args.average_last}"]
      + common)


def main():
  args = parse_args()
  stages = args.stages.split(",")
  work = pathlib.Path(args.work_dir).resolve()
  data = work / "data"
  teacher, latent = work / "teacher", work / args.latent_name
  work.mkdir(parents=True, exist_ok=True)
  common = [f"--data_dir={data}", f"--raw_dir={args.raw_dir}"]
  problem = "--problem=translate_ende_multi30k"
  distilled_targets = data / "translate_ende_multi30k.distilled.train.de"

  if "datagen" in stages:
    run(["bin/datagen", problem, f"--hparams={args.teacher_hparams}"] + common)
  if "teacher" in stages:
    run(["bin/train", problem, f"--hparams={args.teacher_hparams}", f"--model_dir={teacher}"]
        + common, teacher / "train.log")
  if "distill" in stages:
    if distilled_targets.exists():   # bin/decode writes it whole or not at all
      print(f"distillation: {distilled_targets} is there")
    else:
      run(["bin/decode", problem, f"--hparams={args.teacher_hparams}", f"--model_dir={teacher}",
           "--decode_hparams=beam_size=4,batch_size=64",
           f"--decode_from_file={pathlib.Path(args.raw_dir) / 'train.en.gz'}",
           f"--decode_to_file={distilled_targets}"] + common)
  overrides = ",".join(filter(None, [latent_budget(args), args.latent_overrides]))
  if "latent" in stages:
    run(["bin/train", "--problem=translate_ende_multi30k_distilled",
         f"--hparams={args.latent_hparams}", f"--hparams_overrides={overrides}",
         f"--model_dir={latent}"] + common, latent / "train.log")
  if "average" in stages:
    average(latent, latent.with_name(latent.name + "_averaged"), args, overrides, common)
  if "bench" in stages:
    latent_runs = sorted(str(path.parent) for path in work.glob("latent_*/config.json"))
    run([sys.executable, "bench/bench_translation.py", f"--data_dir={data}",
         f"--raw_dir={args.raw_dir}", f"--ar={teacher}", f"--nat={','.join(latent_runs)}",
         f"--json={work / 'bench.json'}"] + args.bench_args.split(), work / "bench.log")


if __name__ == "__main__":
  main()
