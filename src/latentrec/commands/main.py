"""`python -m latentrec <command>`: every pipeline stage, usable without Snakemake.

Rules in workflow/rules/*.smk call these commands and only wire files together. Config slices arrive
as JSON strings (`--cfg`), so Snakemake re-runs a stage exactly when its slice of the config changes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from latentrec.commands import baselines, data, evaluate, flr, latent, llm, pipeline, report
from latentrec.errors import InputError
from latentrec.failures import explain, output_paths

# In pipeline order: `--help` lists the commands stage by stage.
STAGES = (data, baselines, llm, latent, flr, evaluate, report, pipeline)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latentrec", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level (default: INFO)")
    sub = p.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        stage.add_parsers(sub)
    return p


def main(argv=None) -> None:
    from latentrec.io_utils import is_main_process

    args = make_parser().parse_args(argv)
    is_main = is_main_process()
    if not is_main:  # other processes of `accelerate launch`: warnings only, no progress bars (each line once)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    logging.basicConfig(
        level=(logging.DEBUG if args.verbose else logging.INFO) if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (OSError, MemoryError, RuntimeError) as err:  # a full disk, a failed allocation: say which knob
        message = explain(err, args.command, output_paths(args))
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
