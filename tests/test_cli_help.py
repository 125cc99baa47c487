"""`python -m latentrec <command> --help`: every option of every command says what it takes."""

import argparse
import subprocess
import sys

import pytest

from latentrec.commands.main import make_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    return make_parser()._subparsers._group_actions[0].choices


def _options(parser: argparse.ArgumentParser):
    """(flag, action) of every option but -h/--help."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        yield (action.option_strings[-1] if action.option_strings else action.dest), action


def test_every_expected_command_is_there():
    # the commands the workflow's rules and the README call, registered by the stage modules of latentrec.commands
    assert set(_subcommands()) == {
        "synthesize",
        "download",
        "process",
        "import-csv",
        "export-csv",
        "fit-predict",
        "item-embeddings",
        "select-grid",
        "fetch-model",
        "sft",
        "select-sft",
        "decode",
        "gather",
        "latent-sft",
        "latent-rl",
        "select-latent",
        "flr-factors",
        "time-decode",
        "evaluate",
        "significance",
        "llm-vs-strongest",
        "report",
        "report-latentr3",
        "report-flr",
        "lease-gpus",
        "plan",
        "killed-note",
    }


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_has_help(name):
    parser = _subcommands()[name]
    assert parser.description, f"{name}: no description"
    for flag, action in _options(parser):
        assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, f"{name} {flag}: no help"
        if flag == "--cfg":
            assert "JSON" in action.help, f"{name} --cfg: help does not say it is inline JSON"
        if flag == "--data":
            assert "processed" in action.help, f"{name} --data: help does not say it is the processed-data folder"
    parser.format_help()  # every help string formats (%(default)s, no stray %)


def test_every_command_has_one_line_help():
    sub = make_parser()._subparsers._group_actions[0]
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert set(helps) == set(sub.choices)
    for name, text in helps.items():
        assert text and "\n" not in text, name


def test_decode_help_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "latentrec", "decode", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "--num-shards" in proc.stdout and "inline JSON" in proc.stdout
