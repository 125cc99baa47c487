"""Supervised fine-tuning of the generative recommenders (BIGRec/D3 recipe, docs/reference_code.md §4).

Full fine-tuning with accelerate: AdamW, linear schedule with warm-up, an effective batch reached by
gradient accumulation over micro-batches (and GPUs), the loss averaged over all target tokens of the
effective batch (as transformers' Trainer does with num_items_in_batch), early stopping on validation
loss, mixed precision with fp32 master weights on GPU (autocast), length-grouped micro-batches.
Checkpoints every `checkpoint_every` optimiser steps and at each epoch end; a killed run resumes from
the last one. Checkpoints hold safetensors and JSON only: nothing is unpickled on resume.

The forward pass is pluggable (`SFTTask.loss_sum`), so a latent-reasoning head (LatentR3, FLR) trains
with the same loop.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from latentrec.checks import check_options
from latentrec.errors import InputError
from latentrec.io_utils import progress, read_json, write_json
from latentrec.llm import tracking
from latentrec.llm.precision import resolve_mixed_precision, upcast
from latentrec.llm.prompts import IGNORE_INDEX, STYLES, EncodedSample
from latentrec.runs import peak_memory_mb


@dataclass
class SFTConfig:
    """Training hyperparameters; defaults are the papers' (BIGRec/D3/LatentR3 warm-up)."""

    lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(
        default=20,
        metadata={"help": "linear warm-up over this many optimiser steps, then linear decay to 0 at the last one"},
    )
    effective_batch: int = field(
        default=128,
        metadata={"help": "samples per optimiser step over all GPUs (gradient accumulation over `micro_batch`)"},
    )
    micro_batch: int = field(default=8, metadata={"help": "samples per forward on one device"})
    max_epochs: int = field(
        default=3, metadata={"help": "at most this many epochs; early stopping on validation loss keeps the best model"}
    )
    patience: int = field(default=1, metadata={"help": "epochs without validation improvement before stopping"})
    max_len: int = field(
        default=512, metadata={"help": "samples keep their last `max_len` tokens (the reference's left truncation)"}
    )
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "`auto`: bf16 autocast with fp32 master weights on a GPU that has bf16, else fp32; "
            "or `no`, `bf16`, `fp16`"
        },
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "micro-batches of similar length (shuffled across the epoch)"}
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "padding-free micro-batches: a micro-batch's samples concatenated in one row, position ids "
            "restarting per sample, attention within a sample only (the same samples, loss and gradients "
            "as padded rows); plain SFT only, a latent warm-up refuses it"
        },
    )
    checkpoint_every: int = field(
        default=50,
        metadata={"help": "optimiser steps between resumable checkpoints (0 = epoch ends only); a killed run resumes"},
    )
    keep_checkpoint: bool = field(
        default=False,
        metadata={"help": "keep `checkpoint/` (the optimizer state: twice the model's size) after the run finished"},
    )
    train_limit: int | None = field(
        default=None, metadata={"help": "train on N rows only (CPU-sized runs); null = all"}
    )
    train_sample: str = field(
        default="random",
        metadata={
            "help": "how `train_limit` picks its rows: `random`, a sample seeded by the run seed (kept in split "
            "order), or `first`, the N earliest rows"
        },
    )
    valid_limit: int | None = field(
        default=2000,
        metadata={
            "help": "validation loss on the first N valid rows (a fixed subset keeps evaluation cheap); null = all"
        },
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimiser steps (small runs); null = no limit"}
    )
    prompt_style: str = field(
        default="reference", metadata={"help": "`reference` (the published text, typos included) or `clean`"}
    )
    seed: int = field(default=0, metadata={"help": "set by each job from the run's `seeds`; a value here is replaced"})

    @classmethod
    def from_dict(cls, d: dict | None) -> "SFTConfig":
        """Checked before anything trains: known fields, each of its annotated type (ints where ints), in range.
        Raises ValueError "<field>: must be <allowed>, got <value>" (validate_config prefixes the key path)."""
        d = check_options(
            cls,
            d,
            "SFT",
            above={"lr": 0},
            at_least={
                "weight_decay": 0,
                "warmup_steps": 0,
                "effective_batch": 1,
                "micro_batch": 1,
                "max_epochs": 1,
                "patience": 1,
                "max_len": 1,
                "checkpoint_every": 0,
                "train_limit": 1,
                "valid_limit": 1,
                "max_steps": 1,
                "seed": 0,
            },
            choices={
                "mixed_precision": ("auto", "no", "bf16", "fp16"),
                "train_sample": ("random", "first"),
                "prompt_style": tuple(STYLES),
            },
        )
        cfg = cls(**d)
        if cfg.effective_batch % cfg.micro_batch:
            raise ValueError(
                f"effective_batch: must be a multiple of micro_batch ({cfg.micro_batch}), got {cfg.effective_batch}"
            )
        return cfg


def collate(samples: list[EncodedSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are IGNORE_INDEX on the prompt and on padding."""
    n = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), n), dtype=torch.long)
    for i, s in enumerate(samples):
        L = len(s.input_ids)
        ids[i, :L] = torch.tensor(s.input_ids)
        labels[i, :L] = torch.tensor(s.labels)
        mask[i, :L] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def collate_packed(samples: list[EncodedSample], pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """One row of the samples end to end, no padding: position ids restart at 0 per sample, which keeps
    attention within a sample (transformers builds a block-diagonal causal mask from them on sdpa and
    eager, and varlen boundaries on flash attention). No attention_mask: with one, transformers would
    ignore the sample boundaries. `pad_id` is unused (the padded collate's signature)."""
    ids = torch.tensor([t for s in samples for t in s.input_ids], dtype=torch.long)[None]
    labels = torch.tensor([t for s in samples for t in s.labels], dtype=torch.long)[None]
    positions = torch.cat([torch.arange(len(s.input_ids)) for s in samples])[None]
    # A sample's first token is never a target: the previous sample's last position must not predict it.
    labels[positions == 0] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def length_grouped_batches(
    lengths: list[int], micro_batch: int, rng: np.random.Generator, group: int = 64
) -> list[list[int]]:
    """Shuffle, sort within mega-groups of `group` micro-batches by length, shuffle the micro-batches.

    Similar lengths share a batch (little padding) while the order stays random across the epoch.
    """
    order = rng.permutation(len(lengths))
    mega = micro_batch * group
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [list(chunk[j : j + micro_batch]) for j in range(0, len(chunk), micro_batch)]
    rng.shuffle(batches)
    return batches


class SFTTask:
    """The plain causal-LM objective: summed cross-entropy over target tokens. ``packing``: micro-batches
    are one padding-free row each (`collate_packed`)."""

    supports_packing = True

    def __init__(self, packing: bool = False):
        self.packing = packing

    def collate(self, samples: list[EncodedSample], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_packed(samples) if self.packing else collate(samples, pad_id)

    def count_tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()

    def loss_sum(self, model, batch) -> tuple[torch.Tensor, int]:
        # Vocabulary logits only where a target token is predicted (position t predicts label t+1): the
        # prompt is most of each row, and [B, L, V] fp32 logits were most of SFT's memory.
        labels = batch["labels"][:, 1:]
        keep = torch.zeros_like(batch["labels"], dtype=torch.bool)
        keep[:, :-1] = labels != IGNORE_INDEX
        if "position_ids" in batch:  # packed: no mask, no cache, so the restarting positions bound attention
            inputs = {"position_ids": batch["position_ids"], "use_cache": False}
        else:
            inputs = {"attention_mask": batch["attention_mask"]}
        out = model(input_ids=batch["input_ids"], logits_to_keep=keep, **inputs)
        logits = upcast(out.logits).reshape(-1, out.logits.shape[-1])  # [targets, V], row-major like `keep`
        loss = torch.nn.functional.cross_entropy(logits, labels[labels != IGNORE_INDEX], reduction="sum")
        return loss, int(keep.sum())

    def trainable_parameters(self, model):
        return [p for p in model.parameters() if p.requires_grad]

    def save(self, model, tokenizer, out_dir: Path) -> None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


@dataclass
class TrainState:
    epoch: int = 0
    step: int = 0  # optimiser steps done
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    best_valid_loss: float = math.inf
    bad_epochs: int = 0
    done: bool = False
    history: list = field(default_factory=list)  # one entry per epoch: validation loss
    step_history: list = field(default_factory=list)  # one entry per optimiser step: loss, lr, grad norm, tokens/s
    fingerprint: str = ""  # the config and data the checkpoint belongs to


def train_sft(
    model,
    tokenizer,
    train: list[EncodedSample],
    valid: list[EncodedSample],
    cfg: SFTConfig,
    out_dir: str | Path,
    task: SFTTask | None = None,
    tracking_kind: str = "none",
    run_name: str = "sft",
) -> dict:
    """Train, keep the best model (by validation loss) in out_dir/model, return a log dict. `tracking_kind`
    (llm.tracking) logs every step's scalars to out_dir/tracking/`run_name` as they come."""
    from accelerate import Accelerator

    task = _packing_task(task or SFTTask(), cfg)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        **tracking.accelerator_options(tracking_kind, out_dir),
    )
    world = accelerator.num_processes
    window, per_epoch, accum, total_steps = _step_layout(cfg, len(train), world)
    params, opt, sched = _optimiser(model, task, cfg, total_steps)
    # The scheduler stays unprepared: accelerate would step it once per process per optimiser step. It is
    # not registered for accelerate's checkpointing either (that pickles it): save_checkpoint keeps it.
    model, opt = accelerator.prepare(model, opt)
    # Not the world size: a checkpoint of 2 processes resumes in 1 and vice versa (same steps, same order).
    fingerprint = json.dumps([asdict(cfg), len(train), len(valid)], sort_keys=True)
    state = _resume(accelerator, ckpt_dir, out_dir, fingerprint, model, opt, sched)
    tracking.start(accelerator, tracking_kind, out_dir, run_name, asdict(cfg), resume_step=state.step)

    def checkpoint():
        save_checkpoint(accelerator, ckpt_dir, asdict(state), model, opt, sched)

    lengths = [len(s.input_ids) for s in train]
    n_targets = [sum(1 for x in s.labels if x != IGNORE_INDEX) for s in train]
    pad = tokenizer.pad_token_id
    t0, tokens_seen, train_seconds = time.time(), 0, 0.0
    bar = progress(
        total=total_steps, initial=state.step, desc="sft", unit="step", disable=not accelerator.is_main_process
    )
    while not state.done and state.epoch < cfg.max_epochs:
        batches = _epoch_batches(cfg, lengths, per_epoch, window, state.epoch)
        model.train()
        for w_start in range(state.batch_in_epoch, len(batches), window):
            t_step = time.time()
            group = batches[w_start : w_start + window]
            # Normalise by the target tokens of the whole effective batch, on all ranks.
            n_tokens = sum(n_targets[i] for b in group for i in b)
            # rank r takes micro-batches r, r+world, ... of each window
            mine = [[train[i] for i in idx] for idx in group[accelerator.process_index :: world]]
            step_loss, step_tokens, grad_norm = _optimiser_step(
                accelerator, model, opt, sched, params, task, mine, n_tokens, pad
            )
            state.step += 1
            state.batch_in_epoch = w_start + window
            tokens_seen += step_tokens
            train_seconds += _log_step(accelerator, state, sched, step_loss, step_tokens, n_tokens, grad_norm, t_step)
            bar.update(1)
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                checkpoint()
            if cfg.max_steps and state.step >= cfg.max_steps:
                break
        valid_loss = evaluate_loss(model, valid, cfg, pad, accelerator, task)
        if _end_epoch(accelerator, state, cfg, valid_loss, sched.get_last_lr()[0]):
            _save_model(accelerator, model, tokenizer, task, out_dir)
        if not state.done or cfg.keep_checkpoint:  # a finished run's outputs are complete: nothing to resume
            checkpoint()
    bar.close()
    tracking.finish(accelerator)
    diverged = not math.isfinite(state.best_valid_loss)
    if diverged:  # no epoch had a finite validation loss: keep the last weights so the run has an output,
        #           and say so (a grid's selection skips it; a single run's user sees it in the log)
        accelerator.print(
            f"warning: validation loss was never finite (lr {cfg.lr}); the last weights are saved "
            "and the run is marked diverged"
        )
        _save_model(accelerator, model, tokenizer, task, out_dir)
    if not cfg.keep_checkpoint:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            remove_checkpoints(ckpt_dir)
    return _train_log(accelerator, state, diverged, time.time() - t0, train_seconds, tokens_seen, accum)


def _packing_task(task: SFTTask, cfg: SFTConfig) -> SFTTask:
    """`task`, or with `cfg.packing` a copy of it that packs (the caller's task object is left as it was)."""
    if not cfg.packing:
        return task
    if not task.supports_packing:
        raise InputError(
            f"sft packing: {type(task).__name__} cannot pack samples into one row (its forward reads each "
            "sample's prompt as a padded row); set its sft `packing: false`"
        )
    task = copy.copy(task)
    task.packing = True
    return task


def _step_layout(cfg: SFTConfig, n_train: int, world: int) -> tuple[int, int, int, int]:
    """(micro-batches per optimiser step over all processes, micro-batches per epoch, micro-batches per
    process per step, optimiser steps of the whole run)."""
    # Micro-batches per optimiser step over all processes: fixed by the config, not by the process count,
    # so the data order, the steps and a checkpoint are the same for any world size (ranks take turns;
    # when `window` is not a multiple of `world` some take one micro-batch more, the sum is the same).
    window = cfg.effective_batch // cfg.micro_batch
    per_epoch = math.ceil(n_train / cfg.micro_batch)
    if world > 1 and min(window, per_epoch) < world:  # a rank without a micro-batch would hang the all-reduce
        raise InputError(
            f"{world} processes need at least {world} micro-batches per optimiser step: sft "
            f"effective_batch {cfg.effective_batch} / micro_batch {cfg.micro_batch} = {window}, "
            f"{n_train} train rows = {per_epoch} micro-batches; lower micro_batch or use fewer "
            "processes"
        )
    accum = math.ceil(window / world)
    steps_per_epoch = per_epoch // window or 1  # whole optimiser steps: the loop drops a partial one
    total_steps = cfg.max_steps or steps_per_epoch * cfg.max_epochs
    return window, per_epoch, accum, total_steps


def _optimiser(model, task: SFTTask, cfg: SFTConfig, total_steps: int):
    """(trainable parameters, AdamW, linear schedule with warm-up to 0 at `total_steps`)."""
    from transformers import get_linear_schedule_with_warmup

    params = task.trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, cfg.warmup_steps, total_steps)
    return params, opt, sched


def _resume(accelerator, ckpt_dir: Path, out_dir: Path, fingerprint: str, model, opt, sched) -> TrainState:
    """The state of the run's latest usable checkpoint, loaded into model, opt and sched; else a fresh one."""
    state = TrainState(fingerprint=fingerprint)
    found = latest_checkpoint(ckpt_dir, accelerator.print)
    if found is None:
        return state
    saved = TrainState(**read_json(found / "trainer_state.json"))
    ours = saved.fingerprint == fingerprint and (saved.step == 0 or (out_dir / "model").exists() or not saved.history)
    if not ours:
        # another config or data: resuming would silently mix two runs
        accelerator.print(f"ignoring {found}: it belongs to a different run; starting afresh")
    elif missing := checkpoint_missing(found):
        accelerator.print(
            f"ignoring {found}: it lacks {', '.join(missing)} (written by an older version, whose "
            "pickled optimizer and RNG files are never loaded); starting afresh"
        )
    else:
        load_checkpoint(accelerator, found, model, opt, sched)
        state = saved
        accelerator.print(f"resumed from {found}: epoch {state.epoch}, step {state.step}")
    return state


def _epoch_batches(cfg: SFTConfig, lengths: list[int], per_epoch: int, window: int, epoch: int) -> list[list[int]]:
    """The epoch's micro-batches (sample indices), cut to whole optimiser steps."""
    rng = np.random.default_rng(cfg.seed + epoch)  # same order on every rank and on resume
    batches = (
        length_grouped_batches(lengths, cfg.micro_batch, rng)
        if cfg.group_by_length
        else [list(b) for b in np.array_split(rng.permutation(len(lengths)), per_epoch)]
    )
    # Whole optimiser steps (all micro-batches when they do not fill one)
    n_full = (len(batches) // window) * window or len(batches)
    return batches[:n_full]


def _optimiser_step(accelerator, model, opt, sched, params, task: SFTTask, micro_batches, n_tokens: int, pad: int):
    """Forward and backward over this rank's micro-batches (lists of samples) of one effective batch of
    `n_tokens` target tokens, then one optimiser and scheduler step. Returns this rank's summed loss
    (float64 tensor), its tokens and the gradient norm before clipping."""
    world = accelerator.num_processes
    step_loss = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    step_tokens = 0
    for k, samples in enumerate(micro_batches):
        batch = {key: v.to(accelerator.device) for key, v in task.collate(samples, pad).items()}
        sync = k == len(micro_batches) - 1
        ctx = accelerator.no_sync(model) if not sync and world > 1 else contextlib.nullcontext()
        with ctx, accelerator.autocast():
            loss_sum, _ = task.loss_sum(model, batch)
            # DDP averages gradients over ranks; scale back up by world to sum them.
            accelerator.backward(loss_sum * world / max(1, n_tokens))
        step_loss += loss_sum.detach().double()
        step_tokens += task.count_tokens(batch)
    grad_norm = accelerator.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return step_loss, step_tokens, grad_norm


def _log_step(
    accelerator, state: TrainState, sched, step_loss, step_tokens: int, n_tokens: int, grad_norm, t_step: float
) -> float:
    """Add the step just taken to state.step_history and the tracker; returns its seconds since `t_step`."""
    # One reduce per step: the effective batch's summed loss and tokens over all processes.
    step_tokens_t = torch.tensor(float(step_tokens), device=accelerator.device, dtype=torch.float64)
    loss_all, tokens_all = accelerator.reduce(torch.stack([step_loss, step_tokens_t]), reduction="sum").tolist()
    step_seconds = time.time() - t_step
    entry = {
        "step": state.step,
        "loss": loss_all / max(1, n_tokens),
        "lr": sched.get_last_lr()[0],
        "grad_norm": _norm(grad_norm),
        "tokens_per_second": tokens_all / max(step_seconds, 1e-9),
    }
    state.step_history.append(entry)
    tracking.log(accelerator, "train", entry, state.step)
    return step_seconds


def _end_epoch(accelerator, state: TrainState, cfg: SFTConfig, valid_loss: float, lr: float) -> bool:
    """Record the epoch's validation loss, count epochs without improvement, move state to the next
    epoch and decide whether the run is done. True: a new best (the caller saves the model)."""
    state.history.append({"epoch": state.epoch, "step": state.step, "valid_loss": valid_loss, "lr": lr})
    tracking.log(accelerator, "valid", {"loss": valid_loss}, state.step)
    accelerator.print(f"epoch {state.epoch}: valid loss {valid_loss:.4f}")
    improved = valid_loss < state.best_valid_loss
    if improved:
        state.best_valid_loss, state.bad_epochs = valid_loss, 0
    else:
        state.bad_epochs += 1
    state.epoch += 1
    state.batch_in_epoch = 0
    state.done = state.bad_epochs >= cfg.patience or bool(cfg.max_steps and state.step >= cfg.max_steps)
    return improved


def _save_model(accelerator, model, tokenizer, task: SFTTask, out_dir: Path) -> None:
    """The run's output, out_dir/model, written by the main process once every rank got here."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        task.save(accelerator.unwrap_model(model), tokenizer, out_dir / "model")


def _train_log(
    accelerator, state: TrainState, diverged: bool, seconds: float, train_seconds: float, tokens_seen: int, accum: int
) -> dict:
    """train_sft's returned log."""
    tokens_seen = int(accelerator.reduce(torch.tensor(tokens_seen, device=accelerator.device), reduction="sum"))
    # tokens_per_second counts the training loop only (forward, backward, optimiser); validation,
    # checkpoints and saving are in `seconds`.
    return {
        "steps": state.step,
        "epochs": state.epoch,
        "best_valid_loss": state.best_valid_loss,
        "diverged": diverged,
        "history": state.history,
        "step_history": state.step_history,
        "seconds": seconds,
        "train_seconds": train_seconds,
        "tokens": tokens_seen,
        "tokens_per_second": tokens_seen / max(train_seconds, 1e-9),
        "world_size": accelerator.num_processes,
        "grad_accum": accum,
        "mixed_precision": accelerator.mixed_precision,
        "peak_memory_mb": peak_memory_mb(accelerator.device),
    }


def _norm(grad_norm) -> float:
    """The gradient norm clip_grad_norm_ returned (before clipping); NaN where the backend returns none."""
    return math.nan if grad_norm is None else float(grad_norm)


# ----------------------------------------------------------------------------------- checkpoints
# A checkpoint is a folder of safetensors and JSON files; nothing in it is ever unpickled, so a file
# planted in results/ cannot run code on resume (accelerate's save_state/load_state pickle the RNG
# states and registered objects, and load the latter with weights_only=False):
#   model.safetensors                    the (unwrapped) model's weights
#   optimizer.safetensors, optimizer.json  the optimizer's tensors; its param groups and other values
#   scheduler.json                       the LR scheduler's state_dict (and the fp16 GradScaler's)
#   rng_state_<rank>.json                Python, NumPy and torch (CPU, this rank's GPU) RNG states
#   trainer_state.json                   the counters it belongs to; written last, marks it complete
# It is written whole under <name>.tmp, then swapped in by renames; the previous one survives as
# <name>.prev until the swap is done, so a kill at any point leaves one complete checkpoint.

MODEL_FILE, SCHED_JSON = "model.safetensors", "scheduler.json"
OPT_TENSORS, OPT_JSON = "optimizer.safetensors", "optimizer.json"


def _rng_file(rank: int) -> str:
    return f"rng_state_{rank}.json"


def _dump_json(obj, path: Path) -> None:
    path.write_text(json.dumps(obj))  # plain write: the folder is only used once trainer_state.json exists


def save_checkpoint(accelerator, ckpt_dir: Path, state: dict, model, opt, sched) -> None:
    from safetensors.torch import save_file, save_model

    tmp, prev = ckpt_dir.with_name(ckpt_dir.name + ".tmp"), ckpt_dir.with_name(ckpt_dir.name + ".prev")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    tmp.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(tmp / MODEL_FILE))
        tensors, rest = _split_optimizer_state(opt.state_dict())
        save_file(tensors, str(tmp / OPT_TENSORS))
        _dump_json(rest, tmp / OPT_JSON)
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        _dump_json({"scheduler": sched.state_dict(), "grad_scaler": scaler}, tmp / SCHED_JSON)
    _dump_json(_get_rng_state(accelerator.device), tmp / _rng_file(accelerator.process_index))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(state, tmp / "trainer_state.json")  # last file: its presence marks the folder complete
        if ckpt_dir.exists():
            if prev.exists():
                shutil.rmtree(prev)
            ckpt_dir.rename(prev)
        tmp.rename(ckpt_dir)
        if prev.exists():
            shutil.rmtree(prev)
    accelerator.wait_for_everyone()


def checkpoint_missing(folder: Path) -> list[str]:
    """The files of this format that `folder` lacks (all of them for a checkpoint of an older version)."""
    names = [MODEL_FILE, OPT_TENSORS, OPT_JSON, SCHED_JSON, _rng_file(0)]
    return [n for n in names if not (folder / n).is_file()]


def load_checkpoint(accelerator, folder: Path, model, opt, sched) -> None:
    """Restore model, optimizer, scheduler (and GradScaler) and this rank's RNG states from `folder`.
    Reads safetensors and JSON only; a damaged or foreign file raises InputError."""
    from safetensors.torch import load_file, load_model

    try:
        # safetensors takes "cpu" or "cuda:N", not the "cpu:0" of a multi-process CPU (gloo) run
        device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
        load_model(accelerator.unwrap_model(model), str(folder / MODEL_FILE), device=device)
        opt.load_state_dict(
            _join_optimizer_state(
                load_file(str(folder / OPT_TENSORS)), json.loads((folder / OPT_JSON).read_text()), opt.param_groups
            )
        )
        sched_state = json.loads((folder / SCHED_JSON).read_text())
        sched.load_state_dict(sched_state["scheduler"])
        if accelerator.scaler is not None and sched_state.get("grad_scaler"):
            accelerator.scaler.load_state_dict(sched_state["grad_scaler"])
        # A checkpoint of fewer processes has no file for this rank: it takes rank 0's (the training loop
        # draws no random numbers; the states matter only to a task that does, e.g. with dropout).
        rng = folder / _rng_file(accelerator.process_index)
        _set_rng_state(json.loads((rng if rng.is_file() else folder / _rng_file(0)).read_text()), accelerator.device)
    except Exception as e:  # noqa: BLE001 - any failure: the checkpoint is unusable, say which and how to go on
        raise InputError(
            f"{folder}: cannot resume from this checkpoint ({type(e).__name__}: {e}). It was damaged or not written "
            f"by this trainer; delete it (and any {folder.name}.prev / .tmp beside it) to start the run afresh."
        ) from e


def _split_optimizer_state(sd: dict) -> tuple[dict, dict]:
    """torch optimizer state_dict -> ({'<param id>/<name>': tensor}, JSON-able rest)."""
    tensors, other = {}, {}
    for pid, per_param in sd["state"].items():
        for name, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}/{name}"] = v.detach().cpu().contiguous()
            else:
                other.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "state": other}


def _join_optimizer_state(tensors: dict, rest: dict, current_groups: list) -> dict:
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = t
    for pid, values in rest["state"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = rest["param_groups"]
    for saved, cur in zip(groups, current_groups):  # JSON made tuples (AdamW's betas) lists: restore the type
        for k, v in saved.items():
            if isinstance(cur.get(k), tuple) and isinstance(v, list):
                saved[k] = tuple(v)
    return {"state": state, "param_groups": groups}


def _get_rng_state(device: torch.device) -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    out = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return out


def _set_rng_state(s: dict, device: torch.device) -> None:
    version, internal, gauss = s["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(torch.tensor(s["cuda"], dtype=torch.uint8), device)


def latest_checkpoint(ckpt_dir: Path, say=print) -> Path | None:
    """The newest complete checkpoint: <name>, else <name>.prev (a kill during the swap); a folder
    without trainer_state.json (a kill during the write) is never used."""
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    for cand in (ckpt_dir, ckpt_dir.with_name(ckpt_dir.name + ".prev")):
        if (cand / "trainer_state.json").exists():
            if cand != ckpt_dir:
                say(f"warning: {ckpt_dir} is incomplete (a run was killed while saving); using {cand}")
            elif tmp.exists():
                say(
                    f"warning: {tmp} is an interrupted save (a run was killed while writing it); resuming from "
                    f"the previous complete checkpoint {cand}"
                )
            return cand
    return None


def remove_checkpoints(ckpt_dir: Path) -> None:
    for suffix in ("", ".tmp", ".prev"):
        shutil.rmtree(ckpt_dir.with_name(ckpt_dir.name + suffix), ignore_errors=True)


@torch.no_grad()
def evaluate_loss(model, samples: list[EncodedSample], cfg: SFTConfig, pad: int, accelerator, task: SFTTask) -> float:
    """Mean target-token cross-entropy over `samples`, split across ranks and summed."""
    model.eval()
    # By length: the same sum over the same samples (to rounding), with next to no padding (split order
    # padded CDs validation batches by 35 %, length order by 0.2 %).
    idx = sorted(
        range(accelerator.process_index, len(samples), accelerator.num_processes),
        key=lambda i: len(samples[i].input_ids),
    )
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    for start in range(0, len(idx), cfg.micro_batch * 2):
        batch = task.collate([samples[i] for i in idx[start : start + cfg.micro_batch * 2]], pad)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            loss_sum, n = task.loss_sum(model, batch)
        total += torch.tensor([float(loss_sum), n], device=accelerator.device, dtype=torch.float64)
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / max(total[1], 1))
