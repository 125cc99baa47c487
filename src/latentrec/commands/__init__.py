"""The command layer: every `python -m latentrec <command>`, one module per stage, each with its `cmd_*` functions
and an `add_parsers(sub)` that registers its commands. `main.py` builds the top-level parser from them.

Commands import what they run inside their function: building the parser (and `--help`) then loads no torch, pandas
or transformers.
"""
