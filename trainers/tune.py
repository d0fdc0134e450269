"""Search VAE hyperparameters with keras-tuner, then train the best configuration.

    python trainers/tune.py --tuner random --max-trials 10 --epochs 5 \\
        --directory tuning --project-name fmnist --train-examples 5000

searches architecture, latent_dim, widths/depth, learning rate, beta and warm-up (objective:
validation ELBO, maximised) and writes, in DIR/PROJECT/:
  trial_ID/        one folder per trial: a run folder (config.json, weights/, metrics.json) that
                   trainers/evaluate.py and trainers/export.py accept, plus keras-tuner's trial.json
  results.json     every trial (id, status, score, hyperparameters), best first
  best_config.json the best trial's Config, with --final-epochs (default --epochs) epochs
  best/            that Config trained by trainers/train.py's code: a normal run folder

Config flags pin what they name (--latent-dim 4 fixes latent_dim; --hidden-units 32 fixes the
MLP widths); --search limits the searched fields; --range NAME=SPEC changes a range:
  --range latent_dim=8,16,32      a choice          --range learning_rate=1e-4:1e-2  a range
  --range "hidden_units=64|128,64" a choice of tuples (| between choices)
Run the same command again to resume an interrupted search (finished trials are kept).
Distributed: the same command on every machine with KERASTUNER_TUNER_ID (chief, tuner0, tuner1,
...), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set; see the README section "Distributed tuning".
"""
import argparse
import json
import os
import sys

from _flags import at_least_one
from tfp_vae import cli

TUNERS = ("random", "bayesian", "hyperband")
TUPLE_FIELDS = ("hidden_units", "conv_filters")


def _scalar(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_range(text: str):
    """NAME=a,b,c (choice), NAME=low:high (range), NAME=64,32|128 (choice of tuples)."""
    name, separator, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not separator or not name or not spec:
        raise argparse.ArgumentTypeError(f"expected NAME=SPEC such as latent_dim=8,16 or learning_rate=1e-4:1e-2; got {text!r}")
    try:
        if name in TUPLE_FIELDS:
            return name, [tuple(int(v) for v in choice.split(",") if v.strip()) for choice in spec.split("|")]
        if ":" in spec:
            low, high = spec.split(":")
            return name, (_scalar(low.strip()), _scalar(high.strip()))
        return name, [_scalar(part.strip()) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot parse range {text!r}") from None


def _role() -> str:
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tuner", choices=TUNERS, default="random", help="search algorithm (default random)")
    parser.add_argument("--max-trials", type=at_least_one("--max-trials"), default=None,
                        help="trials to run (default 10; Hyperband: its full schedule)")
    parser.add_argument("--directory", default="tuning", help="folder of tuning projects (default tuning)")
    parser.add_argument("--project-name", default="vae", help="project folder inside --directory (default vae)")
    parser.add_argument("--search", default=None,
                        help="comma-separated config fields to search (default: all of architecture, "
                             "latent_dim, hidden_units, conv_filters, learning_rate, beta, warmup_epochs "
                             "that no flag pins)")
    parser.add_argument("--range", dest="ranges", action="append", type=parse_range, default=[],
                        metavar="NAME=SPEC", help="search range of one hyperparameter (repeatable)")
    parser.add_argument("--objective", default="val_elbo",
                        help="metric to optimise (default val_elbo, maximised; val_loss, val_kl minimised)")
    parser.add_argument("--factor", type=at_least_one("--factor"), default=3, help="Hyperband reduction factor (default 3)")
    parser.add_argument("--hyperband-iterations", type=at_least_one("--hyperband-iterations"), default=1, help="Hyperband iterations (default 1)")
    parser.add_argument("--num-initial-points", type=at_least_one("--num-initial-points"), default=None,
                        help="Bayesian: random trials before the Gaussian process (default 3 x hyperparameters)")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming the project")
    parser.add_argument("--final-epochs", type=at_least_one("--final-epochs"), default=None,
                        help="epochs to train the best config in DIR/PROJECT/best (default --epochs)")
    parser.add_argument("--skip-final", action="store_true", help="do not train the best config at the end")
    parser.add_argument("--summary-trials", type=at_least_one("--summary-trials"), default=10, help="trials in the results summary")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output per trial")
    cli.add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        base = cli.config_from_flags(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))

    from tfp_vae import checkpoint, training, tuning  # after flag parsing: bad flags fail before keras-tuner loads
    from tfp_vae.callbacks import TrainingDivergedError
    from tfp_vae.config import save_config

    # Config flags given on the command line pin the searchable fields they name.
    fixed = {}
    for flag, (_, field, _, _) in cli.FLAGS.items():
        if field in tuning.SEARCHABLE and getattr(args, flag[2:].replace("-", "_")) is not None:
            fixed[field] = getattr(args, flag[2:].replace("-", "_"))
    if args.search is not None:
        search = [name.strip() for name in args.search.split(",") if name.strip()]
        clash = sorted(set(search) & set(fixed))
        if clash:
            parser.error(f"{', '.join(clash)} is both pinned by a flag and listed in --search: drop one.")
    else:
        search = [name for name in tuning.SEARCHABLE if name not in fixed]
    role = _role()
    try:
        hypermodel = tuning.VAEHyperModel(base, search=search, fixed=fixed, ranges=dict(args.ranges))
        objective = tuning.make_objective(args.objective)
        options = dict(objective=objective, directory=args.directory, project_name=args.project_name,
                       overwrite=args.overwrite)
        if args.tuner == "hyperband":
            tuner = tuning.Hyperband(hypermodel, max_epochs=base.training.epochs, factor=args.factor,
                                     hyperband_iterations=args.hyperband_iterations,
                                     max_trials=args.max_trials, **options)
        elif args.tuner == "bayesian":
            tuner = tuning.BayesianOptimization(hypermodel, max_trials=args.max_trials or 10,
                                                num_initial_points=args.num_initial_points, **options)
        else:
            tuner = tuning.RandomSearch(hypermodel, max_trials=args.max_trials or 10, **options)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))

    project = os.path.join(args.directory, args.project_name)
    print(f"{args.tuner} search in {project} ({role}"
          f"{', ' + os.environ.get('KERASTUNER_TUNER_ID', '') if role != 'single' else ''}); "
          f"objective {objective.name} ({objective.direction})", flush=True)
    if role != "worker":
        remaining = tuner.remaining_trials
        done = sum(1 for t in tuner.oracle.trials.values() if t.status == "COMPLETED")
        if done:
            print(f"resuming: {done} finished trial(s) kept"
                  + (f", {remaining} to go" if remaining is not None else ""), flush=True)
        tuner.search_space_summary()
    try:
        tuner.search(verbose=args.verbose)
    except (RuntimeError, ValueError, TrainingDivergedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if role == "worker":
        print(f"worker {tuner.tuner_id}: no trials left; the chief writes the results", flush=True)
        return 0

    results = tuner.trial_results()
    checkpoint.write_json({"objective": {"name": objective.name, "direction": objective.direction},
                         "trials": results}, os.path.join(project, "results.json"))
    tuner.results_summary(num_trials=args.summary_trials)
    if not any(result["status"] == "COMPLETED" for result in results):
        print("error: no trial completed; see the messages in the trial.json files", file=sys.stderr)
        return 1
    best_config = tuner.get_best_configs(1, epochs=args.final_epochs)[0]
    best_config_path = os.path.join(project, "best_config.json")
    save_config(best_config, best_config_path)
    best = results[0]
    print(f"best trial {best['trial_id']}: {objective.name} {best['score']:.4f}; its model: "
          f"{best['trial_dir']}; config: {best_config_path}", flush=True)
    if args.skip_final:
        return 0
    workdir, replaced = tuning.best_workdir(project, best_config)
    if replaced:
        print(f"{workdir} held a run of another config (or more epochs) that this one cannot "
              f"resume; moved it to {replaced}", flush=True)
    print(f"training the best config for {best_config.training.epochs} epoch(s) in {workdir}", flush=True)
    try:
        metrics = training.train(best_config, workdir, verbose=args.verbose)
    except (TrainingDivergedError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"test": metrics["test"], "epochs": metrics["epochs"]}, indent=2))
    print(f"best model in {workdir}: config.json, metrics.json, weights/ (trainers/evaluate.py, "
          "trainers/export.py accept it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
