"""Running the pipeline itself: a GPU lease around a job on a workstation, the cost plan of a config, and the
note that tells a job killed for memory."""

from __future__ import annotations

import sys
from pathlib import Path

from latentrec.failures import oom_kill_note
from latentrec.gpu_lease import run_with_gpus
from latentrec.plan import GPU_PEAK_FLOPS, as_dict, make_plan, markdown


def cmd_lease_gpus(a) -> None:
    sys.exit(run_with_gpus(a.n, a.command))


def cmd_plan(a) -> None:
    """FLOPs, GPU-hours and SLURM runtimes per rule for a config, before anything runs."""
    import json

    plan = make_plan(
        a.configfile,
        a.gpu,
        a.mfu_train,
        a.mfu_decode,
        peak=a.peak_tflops * 1e12 if a.peak_tflops else None,
        params=a.params,
        memory=not a.no_memory,
        measured=a.measured,
        estimates_file=a.estimates_file,
    )
    text = markdown(plan, a.safety)
    print(text)
    if a.out_md:
        Path(a.out_md).write_text(text)
    if a.out_json:
        Path(a.out_json).write_text(json.dumps(as_dict(plan, a.safety), indent=2))


def cmd_killed_note(a) -> None:
    """Called by the rules' shell when a job ended: says when it was killed for memory (a SIGKILL leaves the
    job itself no chance to)."""
    note = oom_kill_note(a.status, a.oom_kills_before, a.oom_kills_after)
    if note:
        print(f"[latentrec] {a.rule}: {note}", file=sys.stderr)


def _count(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "lease-gpus",
        help="run a command on N GPUs no other local job holds",
        description="Lock N free GPU ids (file locks under LATENTREC_GPU_LOCK_DIR), run the command with "
        "CUDA_VISIBLE_DEVICES set to them, release them when it exits. Where CUDA_VISIBLE_DEVICES "
        "is already set, or N is 0, the command runs as it is. Exits with the command's status.",
    )
    s.add_argument("n", type=int, help="number of GPUs to lock (0: run the command as it is)")
    s.add_argument("command", nargs="+", help="the command to run, after --, e.g. -- python -m latentrec decode ...")
    s.set_defaults(func=cmd_lease_gpus)

    s = sub.add_parser(
        "plan",
        help="cost plan: FLOPs, GPU-hours and SLURM runtimes per rule of a config",
        description=cmd_plan.__doc__ + " Jobs are those of a forced Snakemake dry run.",
    )
    s.add_argument(
        "--configfile",
        nargs="*",
        action="extend",
        default=[],
        help="config files laid over config/config.yaml and over each other in order, as for snakemake "
        "(e.g. --configfile config/paper.yaml my.yaml)",
    )
    s.add_argument(
        "--gpu",
        default="h100",
        help=f"accelerator whose bf16 dense peak and memory are used: {', '.join(sorted(GPU_PEAK_FLOPS))} "
        "(default %(default)s)",
    )
    s.add_argument(
        "--measured",
        default=None,
        metavar="GPU_CHECK_JSON",
        help="MFUs measured by bench/gpu_check.sh (results/gpu_check/gpu_check.json) instead of "
        "--mfu-train/--mfu-decode",
    )
    s.add_argument(
        "--no-memory",
        action="store_true",
        help="leave out the peak-memory column (estimates of shapes the backbone's shipped "
        "memory_estimates.json lacks take minutes on a CPU at 1.5B scale; results/plan/memory_estimates.json "
        "caches them)",
    )
    s.add_argument(
        "--estimates-file",
        default=None,
        metavar="JSON",
        help="keep the memory estimates in this file only, computed afresh (neither the shipped ones nor "
        "results/plan's cache): how `make estimates` rewrites the shipped file",
    )
    s.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s instead of --gpu's (e.g. a measured CPU matmul rate)",
    )
    s.add_argument(
        "--mfu-train",
        type=float,
        default=0.35,
        help="fraction of peak reached by SFT, warm-up and RL (default %(default)s)",
    )
    s.add_argument(
        "--mfu-decode",
        type=float,
        default=0.10,
        help="fraction of peak reached by constrained beam search (default %(default)s)",
    )
    s.add_argument(
        "--safety", type=float, default=2.0, help="SLURM runtime = safety x estimate + 10 min (default %(default)s)"
    )
    s.add_argument(
        "--params",
        type=float,
        default=None,
        help="backbone parameter count (default: from its folder or the known sizes)",
    )
    s.add_argument("--out-md", default=None, help="also write the table here")
    s.add_argument("--out-json", default=None, help="also write the numbers here")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser(
        "killed-note",
        help="say whether a finished job was killed for memory (the rules call it)",
        description=cmd_killed_note.__doc__,
    )
    s.add_argument("status", type=int, help="the job's exit status (137: SIGKILL)")
    s.add_argument("--rule", default="job", help="the rule, for the message")
    s.add_argument(
        "--oom-kills-before",
        type=_count,
        default=None,
        help="the cgroup's oom_kill count before the job (empty: unknown)",
    )
    s.add_argument(
        "--oom-kills-after",
        type=_count,
        default=None,
        help="the cgroup's oom_kill count after the job (empty: unknown)",
    )
    s.set_defaults(func=cmd_killed_note)
