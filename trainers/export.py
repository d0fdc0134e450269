"""Export a trained run as a versioned SavedModel for TF Serving.

    python trainers/export.py --workdir runs/default --export-base saved_models/fashion_vae

writes saved_models/fashion_vae/N/ (N = one more than the highest existing version, or --version)
with the signatures encode (= serving_default), decode, reconstruct, score and sample, plus
assets.extra/ (warmup requests, config.json, metrics.json, export_metadata.json) and
saved_models/fashion_vae/models.config. Serve it: README section "Serving with TF Serving".
"""
import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="trained run folder (config.json + weights/)")
    parser.add_argument("--export-base", required=True, help="model folder, e.g. saved_models/NAME; "
                        "its basename is the served model's name")
    parser.add_argument("--version", type=int, default=None, help="version folder (default: highest + 1)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="importance samples per example in the score signature (default 64)")
    parser.add_argument("--seed", type=int, default=None, help="stateless seed of the score signature's noise")
    parser.add_argument("--overwrite", action="store_true", help="replace --version if it exists")
    parser.add_argument("--serving-base-path", default=None,
                        help="base_path written in models.config (default /models/NAME, the docker image's)")
    args = parser.parse_args(argv)

    from tfp_vae import export as export_lib  # after flag parsing: --help stays fast
    options = {"overwrite": args.overwrite, "serving_base_path": args.serving_base_path}
    if args.num_samples is not None:
        options["num_samples"] = args.num_samples
    if args.seed is not None:
        options["seed"] = args.seed
    try:
        path = export_lib.export(args.workdir, args.export_base, args.version, **options)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"export": path, "signatures": list(export_lib.SIGNATURES)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
