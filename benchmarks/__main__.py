"""The benchmarks' one command line: ``python -m benchmarks <benchmark> [options]``.

Each benchmark takes the common flags its ``DEFAULTS`` name and its own (``--help``).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

BENCHMARKS = (
    "holdout cross_donor tune_defaults integration query_mapping large_data throughput images "
    "peer_data calibration_cost"
).split()
COMMON = {
    "datasets": {"nargs": "+", "help": "datasets of the registry (benchmarks.data)"},
    "seeds": {"nargs": "+", "type": int, "help": "seeds of training and prediction"},
    "max_epochs": {"type": int, "help": "training epochs (default: each model's)"},
    "out": {"type": Path, "help": "folder of the results"},
    "n_boot": {"type": int, "help": "bootstrap resamples"},
    "merge": {"nargs": "+", "metavar": "CSV", "help": "only rebuild the table from these runs"},
}
RAW = argparse.RawDescriptionHelpFormatter  # the docstrings' line breaks kept in --help


def parser() -> argparse.ArgumentParser:
    """The parser with one subcommand per benchmark module."""
    main = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    commands = main.add_subparsers(dest="benchmark", required=True)
    for name in BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        doc = module.__doc__
        sub = commands.add_parser(
            name, help=doc.split("\n")[0], description=doc, formatter_class=RAW
        )
        for key, default in module.DEFAULTS.items():
            sub.add_argument("--" + key.replace("_", "-"), default=default, **COMMON[key])
        getattr(module, "add_arguments", lambda _: None)(sub)
        sub.set_defaults(run=module.run)
    return main


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the benchmark it names."""
    args = parser().parse_args(argv)
    if getattr(args, "out", None) is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    args.run(args)


if __name__ == "__main__":
    main()
