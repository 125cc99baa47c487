"""Latent reasoning (LatentR3, and FLR through the same head interface): warm-up SFT with a fresh latent head
(stage 1), LR-GRPO with the LLM frozen (stage 2, one grid point), and the choice of the RL grid point."""

from __future__ import annotations

import logging
from pathlib import Path

from latentrec.commands.args import DATA_HELP, DOMAIN_HELP, cfg_help, json_arg
from latentrec.llm.backbone import SELECTION_FILE, resolve_model

log = logging.getLogger("latentrec")


def _encode(ds, split, tok, domain, cfg, limit, sample_seed=None):
    from latentrec.llm.recommender import encode_split

    return encode_split(
        ds, split, tok, domain, style=cfg.prompt_style, max_len=cfg.max_len, limit=limit, sample_seed=sample_seed
    )


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
    model = new_reasoner(
        llm,
        tok,
        head=recipe.get("head", "latentratt"),
        n_latents=int(recipe.get("n_latents", 1)),
        head_options=recipe.get("head_options"),
        seed=a.seed,
        refine_steps=int(recipe.get("refine_steps", 1)),
    )
    sample_seed = cfg.seed if getattr(cfg, "train_sample", "first") == "random" else None
    train = _encode(ds, "train", tok, a.domain, cfg, cfg.train_limit, sample_seed)
    valid = _encode(ds, "valid", tok, a.domain, cfg, cfg.valid_limit)
    out = Path(a.out)
    log = train_sft(model, tok, train, valid, cfg, out, task=LatentSFTTask())
    if not is_main_process():  # under `accelerate launch`: the model and logs are the main process's to write
        return
    write_json(log, out / "train_log.json")
    write_yaml(
        {
            "stage": "latent warm-up SFT",
            "data": a.data,
            "base_model": a.model,
            "domain": a.domain,
            "seed": a.seed,
            "recipe": recipe,
        },
        out / "config.yaml",
    )


def cmd_latent_rl(a) -> None:
    import torch

    from latentrec.data.processed_io import load_dataset
    from latentrec.io_utils import is_main_process, write_json, write_yaml
    from latentrec.llm.grpo import LRGRPOConfig, train_lr_grpo
    from latentrec.llm.latent import LatentReasoner
    from latentrec.report.figures import plot_rl_rewards
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
    write_yaml(
        {"stage": "LR-GRPO", "data": a.data, "warmup_model": a.model, "seed": a.seed, "rl": a.cfg}, out / "config.yaml"
    )
    plot_rl_rewards(log, out / "rl_rewards.png")


def cmd_select_latent(a) -> None:
    from latentrec.io_utils import write_json
    from latentrec.llm.selection import best_valid_neg_ppl, grid_point_logs

    logs = grid_point_logs(a.points, "rl_log.json", "RL")
    best = best_valid_neg_ppl(logs)
    write_json(
        {
            "model": str(Path(best) / "model"),
            "selected_by": "validation -perplexity of the target",
            "candidates": {
                p: {
                    "lr": v["config"]["lr"],
                    "valid_neg_ppl": v["valid_neg_ppl"],
                    "valid_neg_ppl_before": v["valid_neg_ppl_before"],
                    "seconds": v["seconds"],
                }
                for p, v in logs.items()
            },
        },
        a.out,
    )


def add_parsers(sub) -> None:
    for name, func, what, description, model_help, cfg_text, out_help in (
        (
            "latent-sft",
            cmd_latent_sft,
            "warm-up SFT of a backbone with a latent reasoning head (stage 1)",
            "Stage 1 of latent reasoning: SFT of a backbone together with a freshly initialised latent head "
            "(LatentR3's LatentRATT, or FLR's factor head).",
            "backbone folder (as written by `fetch-model`), or an SFT'd model folder (OUT/model of `sft`; "
            "recipe `init: sft`) or the selection file of `select-sft` naming one",
            cfg_help(
                "latent recipe: an llm.latent.<recipe> block of config.yaml, resolved (sft = llm.sft "
                "overlaid by the recipe's sft; per_dataset overrides applied); keys head, n_latents, "
                "head_options, refine_steps, sft",
                '{"head": "latentratt", "n_latents": 1, "sft": {"lr": 3e-4}}',
            ),
            "folder to write: model/ (backbone + head, best by validation loss), checkpoint/, train_log.json, "
            "config.yaml",
        ),
        (
            "latent-rl",
            cmd_latent_rl,
            "LR-GRPO on a warm-up model (stage 2; only the head trains)",
            "Stage 2 of latent reasoning: LR-GRPO on a warm-up model, the LLM frozen; one grid point of the "
            "recipe's RL config.",
            "warm-up model folder (OUT/model of `latent-sft`), or a selection file (`select-sft` over warm-up "
            "grid points) naming one",
            cfg_help(
                "RL config of one grid point: the llm.latent.<recipe>.rl block of config.yaml with the "
                "point's rl_grid values (keys of latentrec.llm.grpo.LRGRPOConfig)",
                '{"lr": 1e-4, "max_steps": 4}',
                "unset keys take the paper's defaults",
            ),
            "grid point folder to write: model/, rl_log.json, rl_rewards.png, config.yaml",
        ),
    ):
        s = sub.add_parser(name, help=what, description=description)
        s.add_argument("--data", required=True, help=DATA_HELP)
        s.add_argument("--model", required=True, help=model_help)
        s.add_argument("--domain", required=True, help=DOMAIN_HELP)
        s.add_argument("--cfg", type=json_arg, required=True, help=cfg_text)
        s.add_argument(
            "--seed",
            type=int,
            default=0,
            help="random seed (head initialisation, data sample, noise); replaces any seed in --cfg "
            "(default %(default)s)",
        )
        s.add_argument("--out", required=True, help=out_help)
        s.set_defaults(func=func)

    s = sub.add_parser(
        "select-latent",
        help="choose the RL grid point with the best validation -PPL",
        description="Pick the LR-GRPO grid point with the best validation -perplexity of the target and write "
        "a selection file naming its model folder.",
    )
    s.add_argument(
        "--points",
        nargs="+",
        required=True,
        help="RL grid point folders (each written by `latent-rl`, with rl_log.json and model/)",
    )
    s.add_argument(
        "--out",
        required=True,
        help=f"selection file to write (.json, e.g. {SELECTION_FILE}); `decode`, `latent-rl`, "
        "`flr-factors` and `time-decode` take it as --model",
    )
    s.set_defaults(func=cmd_select_latent)
