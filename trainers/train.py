"""Train a VAE and evaluate it on the test split.

    python trainers/train.py --workdir runs/default

writes runs/default/{config.json, metrics.json, samples.png, reconstructions.png, weights/, logs/}.
Run it again with the same --workdir to resume after a kill (or with a larger --epochs to train
longer). TensorBoard: tensorboard --logdir runs/default/logs

Several devices or machines (README: "Several machines"): --strategy mirrored (all local GPUs) or
--strategy multi_worker with TF_CONFIG set on each worker; --batch-size is the global batch.
"""
import argparse
import json
import sys

from tfp_vae import cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run folder: outputs, checkpoints, logs")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    parser.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                        help="stop at the last epoch boundary within this many minutes; rerun to continue")
    cli.add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = cli.config_from_flags(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.time_budget is not None and not args.time_budget > 0:
        parser.error(f"--time-budget must be a number of minutes > 0, got {args.time_budget}.")

    from tfp_vae import distribute, training  # after flag parsing: --help stays fast
    from tfp_vae.callbacks import TrainingDivergedError
    import tensorflow as tf
    try:
        metrics = training.train(config, args.workdir, verbose=args.verbose,
                                 time_budget=None if args.time_budget is None else 60 * args.time_budget)
    except (TrainingDivergedError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except tf.errors.OpError as error:
        lost = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError)
        if config.training.strategy != "multi_worker" or not (
                isinstance(error, lost) or "Collective ops is aborted" in str(error)):
            raise
        # A collective op failed: another worker died or was unreachable (its heartbeats stopped).
        print(f"error: the multi-worker cluster lost a worker ({type(error).__name__}: "
              f"{str(error).strip().splitlines()[0][:300]}). Restart every worker with the same "
              "command: training resumes from the last epoch the chief backed up in "
              f"{args.workdir}/backup (the workdir must be on storage all workers see).", file=sys.stderr)
        return 1
    print(json.dumps({name: metrics[name] for name in (
        "train", "validation", "test", "epochs", "epochs_planned", "finished", "best_epoch",
        "optimizer_steps", "examples_per_second", "replicas")},
        indent=2))
    if distribute.is_chief_process(config.training):
        print(f"outputs in {args.workdir}: metrics.json, samples.png, reconstructions.png, weights/, logs/")
    else:
        print("this worker is not the chief: the chief wrote the outputs to its --workdir; this "
              "worker's copies went to a temporary folder, now removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
