"""CLI commands of latent reasoning (LatentR3, and FLR through the same head interface).

  latent-sft     warm-up SFT of backbone + fresh latent head (stage 1)
  latent-rl      LR-GRPO on a warm-up model, LLM frozen (stage 2), one grid point
  select-latent  pick the RL grid point with the best validation -PPL; writes a pointer file
  select-sft     pick the SFT grid point (backbone SFT or warm-up) with the lowest validation loss; a pointer file
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from latentrec.cli_args import DATA_HELP, DOMAIN_HELP, cfg_help
from latentrec.cli_args import json_arg as _json
from latentrec.errors import InputError
from latentrec.llm.backbone import SELECTION_FILE, resolve_model

log = logging.getLogger("latentrec")


def _encode(ds, split, tok, domain, cfg, limit, sample_seed=None):
    from latentrec.llm.recommender import encode_split

    return encode_split(ds, split, tok, domain, style=cfg.prompt_style, max_len=cfg.max_len, limit=limit,
                        sample_seed=sample_seed)


def cmd_latent_sft(a) -> None:
    from latentrec.data.processed_io import load_dataset
    from latentrec.io_utils import is_main_process, write_json, write_yaml
    from latentrec.llm.backbone import load_backbone
    from latentrec.llm.latent import LatentSFTTask, new_reasoner
    from latentrec.llm.sft import SFTConfig, train_sft
    from latentrec.runs import seed_everything

    recipe = a.cfg
    cfg = SFTConfig.from_dict(dict(recipe.get("sft", {}), seed=a.seed))
    seed_everything(a.seed)
    ds = load_dataset(a.data)
    llm, tok = load_backbone(resolve_model(a.model))
    model = new_reasoner(llm, tok, head=recipe.get("head", "latentratt"), n_latents=int(recipe.get("n_latents", 1)),
                         head_options=recipe.get("head_options"), seed=a.seed,
                         refine_steps=int(recipe.get("refine_steps", 1)))
    sample_seed = cfg.seed if getattr(cfg, "train_sample", "first") == "random" else None
    train = _encode(ds, "train", tok, a.domain, cfg, cfg.train_limit, sample_seed)
    valid = _encode(ds, "valid", tok, a.domain, cfg, cfg.valid_limit)
    out = Path(a.out)
    log = train_sft(model, tok, train, valid, cfg, out, task=LatentSFTTask())
    if not is_main_process():  # under `accelerate launch`: the model and logs are the main process's to write
        return
    write_json(log, out / "train_log.json")
    write_yaml({"stage": "latent warm-up SFT", "data": a.data, "base_model": a.model, "domain": a.domain,
                "seed": a.seed, "recipe": recipe}, out / "config.yaml")


def cmd_latent_rl(a) -> None:
    import torch

    from latentrec.data.processed_io import load_dataset
    from latentrec.io_utils import is_main_process, write_json, write_yaml
    from latentrec.llm.grpo import LRGRPOConfig, train_lr_grpo
    from latentrec.llm.latent import LatentReasoner
    from latentrec.runs import seed_everything

    cfg = LRGRPOConfig.from_dict(dict(a.cfg, seed=a.seed))
    seed_everything(a.seed)
    ds = load_dataset(a.data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = LatentReasoner.load(resolve_model(a.model), device=device)
    train = _encode(ds, "train", tok, a.domain, cfg, cfg.train_limit, cfg.seed)
    valid = _encode(ds, "valid", tok, a.domain, cfg, cfg.valid_limit)
    catalog = None
    if cfg.needs_catalog:  # the original GRPO and FLR-GRPO's exact-match reward decode catalog titles
        from latentrec.llm.recommender import catalog_sequences

        catalog = catalog_sequences(ds, tok)
    log = train_lr_grpo(model, tok, train, valid, cfg, catalog=catalog)
    if not is_main_process():  # every process holds the same weights; two writers would race (REFERENCE §5.4)
        return
    out = Path(a.out)
    model.save(out / "model", tok)
    write_json(log, out / "rl_log.json")
    write_yaml({"stage": "LR-GRPO", "data": a.data, "warmup_model": a.model, "seed": a.seed, "rl": a.cfg},
               out / "config.yaml")
    _plot_rewards(log, out / "rl_rewards.png")


def _plot_rewards(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in log["history"]]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, [h["reward_clean"] for h in log["history"]], label="noise-free latent")
    ax.plot(steps, [h["reward"] for h in log["history"]], label="all draws", alpha=0.7)
    ax.set_xlabel("optimiser step")
    decoded = log["config"].get("rollout", "noise") != "noise"  # the original GRPO: 0/1 exact match
    ax.set_ylabel("reward (decoded title = target)" if decoded else "reward (-perplexity of the target)")
    ax.set_title(f"{'original GRPO' if decoded else 'LR-GRPO'}, lr {log['config']['lr']:g}: valid -PPL "
                 f"{log['valid_neg_ppl_before']:.3f} -> {log['valid_neg_ppl']:.3f}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _point_logs(points: list[str], name: str, stage: str) -> dict[str, dict]:
    """{grid point folder: its log `name`}, in the listed order; a missing log is a clear error."""
    from latentrec.io_utils import read_json

    logs = {}
    for point in points:
        f = Path(point) / name
        if not f.exists():
            raise InputError(f"{f}: missing; the {stage} grid point did not finish")
        logs[point] = read_json(f)
    return logs


def cmd_select_latent(a) -> None:
    from latentrec.io_utils import write_json

    logs = _point_logs(a.points, "rl_log.json", "RL")
    best = max(logs, key=lambda p: logs[p]["valid_neg_ppl"])
    write_json({"model": str(Path(best) / "model"), "selected_by": "validation -perplexity of the target",
                "candidates": {p: {"lr": v["config"]["lr"], "valid_neg_ppl": v["valid_neg_ppl"],
                                   "valid_neg_ppl_before": v["valid_neg_ppl_before"], "seconds": v["seconds"]}
                               for p, v in logs.items()}}, a.out)


def lowest_valid_loss(logs: dict[str, dict]) -> str:
    """The key of `logs` (SFT train logs, in the grid's listed order) with the lowest `best_valid_loss`;
    a tie goes to the first listed. A point that never reached a finite validation loss is never chosen."""
    best, best_loss = None, math.inf
    for point, entry in logs.items():
        loss = entry.get("best_valid_loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss) and loss < best_loss:
            best, best_loss = point, loss
    if best is None:
        raise InputError(f"no SFT grid point reached a finite validation loss ({', '.join(map(str, logs))}); "
                         "see their train_log.json")
    return best


def cmd_select_sft(a) -> None:
    from latentrec.io_utils import write_json

    logs = _point_logs(a.points, "train_log.json", "SFT")
    best = lowest_valid_loss(logs)
    model = Path(best) / "model"
    if not model.is_dir():
        raise InputError(f"{model}: missing; the SFT grid point wrote no model")
    write_json({"model": str(model), "point": Path(best).name,
                "selected_by": "lowest validation loss of the SFT (best_valid_loss; ties: the grid's order)",
                "candidates": {p: {k: v.get(k) for k in ("best_valid_loss", "epochs", "steps", "seconds")}
                               for p, v in logs.items()}}, a.out)
    log.info("selected %s (best validation loss %.4f)", best, logs[best]["best_valid_loss"])


def cmd_report_latentr3(a) -> None:
    from latentrec.io_utils import read_yaml
    from latentrec.report.latentr3 import build

    data_dirs = dict(x.split("=", 1) for x in a.data)
    build(a.metrics, data_dirs, a.rl_logs, a.cfg, read_yaml(a.paper), Path(a.out_dir))


def add_cli(sub) -> None:
    for name, func, what, description, model_help, cfg_text, out_help in (
        ("latent-sft", cmd_latent_sft, "warm-up SFT of a backbone with a latent reasoning head (stage 1)",
         "Stage 1 of latent reasoning: SFT of a backbone together with a freshly initialised latent head "
         "(LatentR3's LatentRATT, or FLR's factor head).",
         "backbone folder (as written by `fetch-model`), or an SFT'd model folder (OUT/model of `sft`; "
         "recipe `init: sft`) or the selection file of `select-sft` naming one",
         cfg_help("latent recipe: an llm.latent.<recipe> block of config.yaml, resolved (sft = llm.sft "
                  "overlaid by the recipe's sft; per_dataset overrides applied); keys head, n_latents, "
                  "head_options, refine_steps, sft", '{"head": "latentratt", "n_latents": 1, "sft": {"lr": 3e-4}}'),
         "folder to write: model/ (backbone + head, best by validation loss), checkpoint/, train_log.json, "
         "config.yaml"),
        ("latent-rl", cmd_latent_rl, "LR-GRPO on a warm-up model (stage 2; only the head trains)",
         "Stage 2 of latent reasoning: LR-GRPO on a warm-up model, the LLM frozen; one grid point of the "
         "recipe's RL config.",
         "warm-up model folder (OUT/model of `latent-sft`), or a selection file (`select-sft` over warm-up "
         "grid points) naming one",
         cfg_help("RL config of one grid point: the llm.latent.<recipe>.rl block of config.yaml with the "
                  "point's rl_grid values (keys of latentrec.llm.grpo.LRGRPOConfig)", '{"lr": 1e-4, "max_steps": 4}',
                  "unset keys take the paper's defaults"),
         "grid point folder to write: model/, rl_log.json, rl_rewards.png, config.yaml"),
    ):
        s = sub.add_parser(name, help=what, description=description)
        s.add_argument("--data", required=True, help=DATA_HELP)
        s.add_argument("--model", required=True, help=model_help)
        s.add_argument("--domain", required=True, help=DOMAIN_HELP)
        s.add_argument("--cfg", type=_json, required=True, help=cfg_text)
        s.add_argument("--seed", type=int, default=0,
                       help="random seed (head initialisation, data sample, noise); replaces any seed in --cfg "
                            "(default %(default)s)")
        s.add_argument("--out", required=True, help=out_help)
        s.set_defaults(func=func)

    s = sub.add_parser(
        "select-latent", help="choose the RL grid point with the best validation -PPL",
        description="Pick the LR-GRPO grid point with the best validation -perplexity of the target and write "
                    "a selection file naming its model folder.")
    s.add_argument("--points", nargs="+", required=True,
                   help="RL grid point folders (each written by `latent-rl`, with rl_log.json and model/)")
    s.add_argument("--out", required=True,
                   help=f"selection file to write (.json, e.g. {SELECTION_FILE}); `decode`, `latent-rl`, "
                        "`flr-factors` and `time-decode` take it as --model")
    s.set_defaults(func=cmd_select_latent)

    s = sub.add_parser(
        "select-sft", help="choose the SFT grid point with the lowest validation loss",
        description="Pick the SFT grid point (of `sft`, the BIGRec/D3 backbone SFT, or of `latent-sft`, a "
                    "latent warm-up) with the lowest best validation loss (ties: the first listed) and write a "
                    "selection file naming its model folder.")
    s.add_argument("--points", nargs="+", required=True,
                   help="SFT grid point folders in the grid's listed order (each written by `sft` or `latent-sft`, "
                        "with train_log.json and model/)")
    s.add_argument("--out", required=True,
                   help=f"selection file to write (.json, e.g. {SELECTION_FILE}); `decode`, `latent-sft`, "
                        "`latent-rl`, `flr-factors` and `time-decode` take it as --model")
    s.set_defaults(func=cmd_select_sft)

    s = sub.add_parser(
        "report-latentr3", help="LatentR3 gains, ablation table and analysis figures",
        description="LatentR3's gains over each backbone method, the ablation table and Figures 2-4, beside "
                    "the published values.")
    s.add_argument("--metrics", nargs="+", required=True,
                   help="metrics.json of the runs (from `evaluate`; rows.parquet beside each)")
    s.add_argument("--data", nargs="+", default=[],
                   help="DATASET=processed-data folder pairs, e.g. CDs_and_Vinyl=results/CDs_and_Vinyl/data "
                        "(for item popularity)")
    s.add_argument("--rl-logs", nargs="*", default=[],
                   help="rl_log.json files of the RL grid points (from `latent-rl`; training cost; Figure 4 "
                        "takes each seed's selected point)")
    s.add_argument("--cfg", type=_json, required=True,
                   help=cfg_help("the `report.latentr3` block of config.yaml, plus test_limit and recipes "
                                 "({latent method: recipe}); keys pairs, ablation, lengths, popularity_methods, "
                                 "popular_fraction, cost_methods, grpo_compare",
                                 '{"pairs": {"BIGRec+LatentR3": "BIGRec"}}'))
    s.add_argument("--paper", required=True, help="the published values, e.g. config/paper_results.yaml")
    s.add_argument("--out-dir", required=True, help="folder for the tables and figures (e.g. results/tables)")
    s.set_defaults(func=cmd_report_latentr3)
