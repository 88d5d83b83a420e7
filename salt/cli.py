"""The `salt` command: one subcommand per pipeline stage.

Each subcommand lives in the module that does the work; that module defines
``add_arguments(parser)`` and ``main(args) -> int``. Modules are imported only
when their subcommand runs, so `salt --help` and the light stages stay fast
(torch is never imported to write a ROOT file).

Errors a user can fix (a missing or unreadable file, a bad value; ValueError and
OSError, which the modules raise with the file, key or value in the message) end
the command with one line, ``salt <cmd>: error: ...``, and exit status 1; usage
errors exit 2, as argparse does. SALT_TRACEBACK=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("salt.data.pythia", "generate labelled jets with Pythia8 + FastJet into a JetClass-schema ROOT file"),
    "download": ("salt.data.download", "download a dataset's raw files (resumable, md5-checked)"),
    "extract": ("salt.data.archive", "safely extract a downloaded tar/zip archive"),
    "preprocess": ("salt.data.preprocess", "sort, cut and pad one raw file into HDF5 shards"),
    "manifest": ("salt.data.shards", "index shards and fit normalisation statistics on the train split"),
    "train": ("salt.train", "train one model on one dataset/sort/seed"),
    "evaluate": ("salt.evaluate", "evaluate a trained model on the test split"),
    "bench": ("salt.bench", "measure latency, throughput and memory of models"),
    "report": ("salt.report.build", "assemble tables and figures from metrics and benchmarks"),
    "model-info": ("salt.models.cost", "parameter and FLOP counts of a model"),
    "reference-check": ("salt.models.reference", "compare models with the authors' reference outputs"),
}


TRACEBACK_ENV = "SALT_TRACEBACK"


def describe(err: BaseException) -> str:
    """One line for a user error: an OSError as `file: what happened`, anything else as its message."""
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def json_value(text: str) -> Any:
    """argparse type of a JSON option: a parse error becomes a usage error naming the option."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg} at character {err.pos}): {text!r}") from None


class DeprecatedAlias(argparse.Action):
    """An option's old name, kept so that existing commands still run: it stores into the new
    option's dest and says once on stderr which name to use instead."""

    def __init__(self, option_strings: list[str], dest: str, *, use: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.use = use

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: note: {option_string} is deprecated; use {self.use}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        name = argv[0]
        module = importlib.import_module(SUBCOMMANDS[name][0])
        parser = argparse.ArgumentParser(prog=f"salt {name}", description=SUBCOMMANDS[name][1])
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        try:
            return int(module.main(args) or 0)
        except (ValueError, OSError) as err:
            if os.environ.get(TRACEBACK_ENV):
                raise
            print(f"salt {name}: error: {describe(err)}", file=sys.stderr)
            return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from salt import __version__

        print(__version__)
        return 0
    parser.print_help()
    return 0 if not argv else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
