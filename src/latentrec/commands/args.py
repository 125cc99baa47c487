"""What the command modules share: the inline-JSON `--cfg` type and help texts used by several commands."""

from __future__ import annotations

import argparse
import json


def json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {text[:80]!r}") from None


# Help texts shared by several commands.
DATA_HELP = "processed-data folder (e.g. results/{dataset}/data, written by `process` or `import-csv`)"
DOMAIN_HELP = "the prompt's category noun, e.g. musics (datasets.<name>.domain in config.yaml)"
THREADS_HELP = "torch intra-op CPU threads (0: torch's default) (default %(default)s)"
SEED_HELP = "random seed (default %(default)s)"


def cfg_help(what: str, example: str, extra: str = "") -> str:
    """Help of a `--cfg` option: a config slice given inline as a JSON string, never a file path."""
    return f"{what}; inline JSON (not a file), e.g. '{example}'{'; ' + extra if extra else ''}"


DECODE_CFG_HELP = cfg_help(
    "decode options: the `decode` block of a method (methods.<name>.decode in config.yaml); keys num_beams, "
    "num_return, length_penalty, max_new_tokens, batch_size, prompt_style, cot",
    '{"length_penalty": 0.0}',
    "unset keys take the defaults of latentrec.llm.decoding.DecodeConfig (default {})",
)
