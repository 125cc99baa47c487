"""Peak GPU memory and FLOPs of each LLM step at the paper's shapes, by running our own training and decoding
code on fake weights (llm/fake_run.py), before any GPU is booked.

Step kinds (what each LLM rule repeats; its peak is the rule's):
  sft          SFTTask: forward, backward, gradient accumulation, clipping, AdamW (sft_backbone)
  latent_sft   LatentSFTTask with LatentRATT, or FLR's head and T refinements (latent_warmup_*)
  lr_grpo      step_loss of LR-GRPO: prompt once without gradient, K latents, frozen LLM (latent_rl_point)
  flr_grpo     step_loss with FLR-GRPO's options: hybrid reward with the greedy-match logits, regularisers,
               a KL copy of the head
  decode       the tree KV layout of constrained beam search: one prefill of the prompts, then every beam
               alive for `max_new_tokens` steps (the worst case), the vocabulary scored slice by slice

The GPU path's number formats: training keeps fp32 master weights, gradients and AdamW states (two fp32
tensors per trainable weight) and runs under bf16 autocast, whose cached bf16 copy of each weight lives
through forward and backward; decoding loads bf16 weights. AdamW runs as on a GPU (foreach: one fp32
temporary per weight during the step). A first step of one micro-batch creates the optimiser states; the
second, of ``accum`` micro-batches, sees them and the accumulated gradients, as every later step does.

What the estimate bounds: ``peak_bytes`` is the high-water mark of live tensors (LiveBytes) plus
OVERHEAD_BYTES for what tensors do not show: the CUDA context, cuBLAS and attention workspaces and the
caching allocator's rounding. Autocast on the CPU casts the same operator families as on CUDA (matmuls
in bf16, losses and softmaxes in fp32); attention runs SDPA's CPU kernel, whose saved tensors (output and
log-sum-exp, not the score matrix) match CUDA's flash and memory-efficient kernels.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from latentrec.flops import GPU_MEMORY  # noqa: F401  (re-exported: the accelerators' memory sizes)
from latentrec.llm.fake_run import FakeRun, LiveBytes, fake_mode

REPO = Path(__file__).resolve().parents[2]
MODEL_CONFIGS = REPO / "config" / "models"
STEP_KINDS = ("sft", "latent_sft", "lr_grpo", "flr_grpo", "decode")
TRAIN_KINDS = STEP_KINDS[:4]
# CUDA context (~0.5 GB), cuBLAS/attention workspaces and allocator rounding: measured peaks of PyTorch
# training jobs sit about this far above their live tensors.
OVERHEAD_BYTES = 2 << 30


@dataclass(frozen=True)
class Shapes:
    """What one forward holds on one device. Training: `micro_batch` rows of `prompt_len` + `target_len`
    tokens (GRPO: `micro_batch` prompts, each with `group_size` latent draws); decode: `decode_batch`
    prompts x `num_beams` beams for `max_new_tokens` steps."""

    micro_batch: int = 8
    prompt_len: int = 126
    target_len: int = 11
    accum: int = 2
    n_latents: int = 1
    refine_steps: int = 1
    head: str = "latentratt"
    head_options: tuple = ()
    group_size: int = 8
    catalog_items: int = 5000
    decode_batch: int = 64
    num_beams: int = 10
    max_new_tokens: int = 32


@dataclass(frozen=True)
class DtypePolicy:
    """Number formats of the GPU path: fp32 master weights under bf16 autocast; bf16 weights to decode."""

    master: torch.dtype = torch.float32
    autocast: torch.dtype | None = torch.bfloat16
    decode: torch.dtype = torch.bfloat16


@dataclass
class Estimate:
    step_kind: str
    shapes: dict
    peak_bytes: int  # live tensors' high-water mark + OVERHEAD_BYTES
    live_peak_bytes: int  # the high-water mark of live tensors alone
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # held at the end of a micro-batch's forward beyond what was live before it
    flops_counted: float  # FlopCounterMode over one micro-batch (forward + backward), or one decode batch
    flops_analytic: float  # the plan's count for the same work (analytic_flops)
    batch_peak_bytes: int = 0  # live high-water mark during the micro-batches of a step (decode: the batch)
    optimizer_peak_bytes: int = 0  # ... during gradient clipping and the AdamW step

    @property
    def flops_ratio(self) -> float:
        return self.flops_counted / self.flops_analytic if self.flops_analytic else float("nan")

    def fits(self, gpu_bytes: float, margin: float = 0.1) -> bool:
        return self.peak_bytes <= (1 - margin) * gpu_bytes


# ---------------------------------------------------------------------------------------- the model
def model_config(name_or_path: str | Path = "Qwen2.5-1.5B"):
    """A transformers config from config/models/<name>/config.json (architecture only, no weights)."""
    from transformers import AutoConfig

    path = Path(name_or_path)
    folder = path if path.is_dir() else MODEL_CONFIGS / str(name_or_path)
    cfg = AutoConfig.from_pretrained(folder)
    cfg._attn_implementation = "sdpa"  # what the GPU path's from_pretrained picks
    return cfg


def fake_model(cfg, fm, dtype):
    """A causal LM of `cfg` whose weights are fake tensors of `dtype` (no memory, no initialisation cost)."""
    from transformers import AutoModelForCausalLM

    with fm:
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model


def _head_options(shapes: Shapes) -> dict:
    return dict(shapes.head_options)


# ------------------------------------------------------------------------------------- fake batches
def _samples(shapes: Shapes, vocab: int):
    from latentrec.llm.prompts import IGNORE_INDEX, EncodedSample

    ids = [(7 * i + 3) % vocab for i in range(shapes.prompt_len + shapes.target_len)]
    labels = [IGNORE_INDEX] * shapes.prompt_len + ids[shapes.prompt_len :]
    return [EncodedSample(list(ids), list(labels), shapes.prompt_len) for _ in range(shapes.micro_batch)]


def _catalog(shapes: Shapes, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (shapes.catalog_items, shapes.target_len), generator=g).tolist()


def _autocast(policy: DtypePolicy, device_type: str = "cpu"):
    if policy.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=policy.autocast)


def _adamw(params):
    # foreach=True: the implementation CUDA picks by default (a CPU tensor would get the per-weight loop).
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, foreach=True)


# ------------------------------------------------------------------------------------- the steps
class _Run:
    """One step kind's model, batch and micro-batch function, built on fake weights."""

    def __init__(self, kind: str, cfg, shapes: Shapes, policy: DtypePolicy, fm):
        from latentrec.llm.grpo import LRGRPOConfig
        from latentrec.llm.latent import LatentReasoner, LatentSFTTask, build_head
        from latentrec.llm.sft import SFTTask

        self.kind, self.shapes, self.policy, self.fm = kind, shapes, policy, fm
        vocab = cfg.vocab_size
        if kind == "decode":
            self.model = fake_model(cfg, fm, policy.decode).eval()
            return
        llm = fake_model(cfg, fm, policy.master)
        samples = _samples(shapes, vocab)
        if kind == "sft":
            self.model, self.task = llm, SFTTask()
            self.batch = self.task.collate(samples, 0)
            self.params = self.task.trainable_parameters(llm)
            return
        with fm:
            head = build_head(shapes.head, cfg.hidden_size, **_head_options(shapes))  # fp32, as trained
        self.model = LatentReasoner(llm, head, shapes.n_latents, shapes.refine_steps)
        self.task = LatentSFTTask()
        self.batch = self.task.collate(samples, 0)
        if kind == "latent_sft":
            self.params = self.task.trainable_parameters(self.model)
            return
        flr = kind == "flr_grpo"
        self.rl = LRGRPOConfig(
            group_size=shapes.group_size,
            groups_per_step=shapes.micro_batch,
            **(dict(reward="hybrid", advantage="base", regularisers=True, beta=0.04) if flr else {}),
        )
        llm.requires_grad_(False)
        for p in head.auxiliary_parameters():
            p.requires_grad_(self.rl.regularisers)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        with fm:
            # A second head of the same config, not a deepcopy: deepcopy reads a fake tensor's data pointer,
            # which corrupts the heap (torch 2.13 warns "undefined behavior").
            self.ref_head = build_head(head.kind, **head.config()).requires_grad_(False) if self.rl.beta else None
        self.trie = None
        if self.rl.exact_match:
            from latentrec.llm.trie import TitleTrie

            self.trie = TitleTrie.build(_catalog(shapes, vocab), vocab_size=vocab)
        self.noise_gen = torch.Generator().manual_seed(0)

    def static_tensors(self) -> list[torch.Tensor]:
        """What lives before the first step: the weights (and the KL copy of the head, the trie)."""
        out = list(self.model.parameters()) + list(self.model.buffers())
        if getattr(self, "ref_head", None) is not None:
            out += list(self.ref_head.parameters())
        if getattr(self, "trie", None) is not None:
            out += [t for t in vars(self.trie).values() if isinstance(t, torch.Tensor)]
        return out

    def micro_batch(self, on_forward=None) -> None:
        """One forward and backward as the trainer runs it (loss scaled by a constant)."""
        from latentrec.llm.grpo import draw_noise, step_loss

        self.model.train()
        device = next(self.model.parameters()).device  # fake weights: "cpu"; bench/gpu_check_real.py: a GPU
        with _autocast(self.policy, device.type):
            if self.kind in ("sft", "latent_sft"):
                loss, n = self.task.loss_sum(self.model, self.batch)
                loss = loss / max(n, 1)
            else:
                s = self.shapes
                noise = draw_noise(
                    s.micro_batch, self.rl, s.n_latents, self.model.llm.config.hidden_size, self.noise_gen, device
                )
                loss, _ = step_loss(self.model, self.batch, noise, self.rl, ref_head=self.ref_head, trie=self.trie)
                loss = loss / s.micro_batch
            if on_forward is not None:
                on_forward()
            loss.backward()

    def decode_batch(self) -> None:
        """The tree layout's prefill and `max_new_tokens` beam steps with every beam alive."""
        from latentrec.llm.decoding.layouts import TreeLayout, tree_supported

        s = self.shapes
        b, k = s.decode_batch, s.num_beams
        if not tree_supported(self.model):
            raise ValueError("the decode estimate needs the tree KV layout (sdpa or eager attention)")
        dev = next(self.model.parameters()).device
        mask = torch.ones((b, s.prompt_len), dtype=torch.long, device=dev)
        ids = torch.zeros((b, s.prompt_len), dtype=torch.long, device=dev)
        zeros = torch.zeros((b, k), dtype=torch.long, device=dev)
        with torch.inference_mode():
            layout = TreeLayout(
                self.model, prompt_mask=mask, num_beams=k, max_new_tokens=s.max_new_tokens, keep_one=True, shared=None
            )
            scores = layout.prefill(ids, None)
            scores.logprobs(torch.arange(b, device=dev), torch.zeros(b, dtype=torch.long, device=dev))
            for step in range(s.max_new_tokens):
                src = zeros if step == 0 else torch.arange(k, device=dev).expand(b, k)
                alive = torch.ones((b, k), dtype=torch.bool, device=dev)
                scores = layout.forward(src, zeros, alive, step)
                scores.logprobs(torch.arange(b * k, device=dev), torch.zeros(b * k, dtype=torch.long, device=dev))


def _bytes(tensors) -> int:
    """Bytes of the distinct storages under `tensors` (views counted once)."""
    storages = {}
    for t in tensors:
        st = t.untyped_storage()
        storages[id(st)] = st  # held, so no id is reused while counting
    return sum(st.nbytes() for st in storages.values())


def _flop_mode():
    """FlopCounterMode that also counts the CPU attention kernel, as the CUDA ones (full QK^T and AV)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }
    return FlopCounterMode(display=False, custom_mapping=mapping)


def measure_step(kind: str, cfg, shapes: Shapes, policy: DtypePolicy = DtypePolicy(), real: bool = False):
    """(live-bytes tracker, bytes per category, FLOPs of one micro-batch) of `kind`. ``real``: run on real
    weights instead of fake ones (the tiny-model check), with the same accounting."""
    if kind not in STEP_KINDS:
        raise ValueError(f"step kind must be one of {STEP_KINDS}, got {kind!r}")
    fm = fake_mode()
    run = _Run(kind, cfg, shapes, policy, contextlib.nullcontext() if real else fm)
    live = LiveBytes()
    static = run.static_tensors()
    for t in static:
        live.track(t)
    parts = {"params": _bytes(static), "grads": 0, "optimizer": 0, "activations": 0}
    tracker = FakeRun(fm, live) if not real else _TrackOnly(live)

    def phase(name: str) -> None:
        """The high-water mark since the last phase, kept under `name` (and in the overall peak)."""
        parts[name] = max(parts.get(name, 0), live.peak)
        parts["peak"] = max(parts.get("peak", 0), live.peak)
        live.reset_peak()

    with tracker:
        if kind == "decode":
            with _flop_mode() as fc:
                run.decode_batch()
            phase("batch_peak")
            return live, parts, fc.get_total_flops()
        opt = _adamw(run.params)
        flops = 0
        for step in range(2):
            for m in range(shapes.accum if step else 1):  # the first step only creates the AdamW states
                before = live.now

                def forward_done(before=before):
                    parts["activations"] = max(parts["activations"], live.now - before)

                if step == 1 and m == 0:
                    with _flop_mode() as fc:
                        run.micro_batch(forward_done)
                    flops = fc.get_total_flops()
                else:
                    run.micro_batch(forward_done)
            phase("batch_peak" if step else "first_step")
            parts["grads"] = _bytes([p.grad for p in run.params if p.grad is not None])
            torch.nn.utils.clip_grad_norm_(run.params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            phase("optimizer_peak" if step else "first_step")
        parts["optimizer"] = _bytes([v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)])
    return live, parts, flops


class _TrackOnly(FakeRun):
    """FakeRun's accounting on real tensors: every operator runs as is."""

    def __init__(self, live: LiveBytes):
        super().__init__(fake_mode=None, live=live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.live.track(t)
        return out


# ------------------------------------------------------------------------------------- analytic FLOPs
def analytic_flops(kind: str, cfg, shapes: Shapes) -> float:
    """The plan's count (latentrec/flops.py's row functions) for the work measure_step counts: one
    micro-batch of a training kind (forward + backward), one decode batch with every beam alive."""
    from latentrec import flops

    bb, s = flops.Backbone.from_config(cfg), shapes
    p, t, lat = s.prompt_len, s.target_len, s.n_latents * s.refine_steps
    if kind == "sft":
        return s.micro_batch * flops.train_row(bb, p, t)
    if kind == "latent_sft":
        return s.micro_batch * flops.train_row(bb, p, t, lat)
    if kind in ("lr_grpo", "flr_grpo"):
        again = flops.rl_head_again(s.micro_batch, s.group_size, t)
        return s.micro_batch * flops.rl_row(bb, p, t, s.group_size, lat, kl=kind == "flr_grpo", head_again=again)
    return s.decode_batch * flops.decode_user(bb, p, s.num_beams, s.max_new_tokens)


# ------------------------------------------------------------------------------------- the API
def estimate(
    step_kind: str,
    model_config_=None,
    shapes: Shapes = Shapes(),
    dtype_policy: DtypePolicy = DtypePolicy(),
    overhead_bytes: int = OVERHEAD_BYTES,
) -> Estimate:
    """Peak memory and FLOPs of one `step_kind` on one device at `shapes`, through our own code on fake
    weights (seconds on a CPU; no real memory for the weights). `model_config_`: a transformers config,
    a folder or a name under config/models/ (default Qwen2.5-1.5B)."""
    cfg = model_config_ if hasattr(model_config_, "vocab_size") else model_config(model_config_ or "Qwen2.5-1.5B")
    live, parts, flops = measure_step(step_kind, cfg, shapes, dtype_policy)
    return Estimate(
        step_kind,
        asdict(shapes),
        parts["peak"] + overhead_bytes,
        parts["peak"],
        parts["params"],
        parts["grads"],
        parts["optimizer"],
        parts["activations"],
        float(flops),
        analytic_flops(step_kind, cfg, shapes),
        parts["batch_peak"],
        parts.get("optimizer_peak", 0),
    )


def largest_fitting(
    step_kind: str,
    gpu_bytes: float,
    model_config_=None,
    shapes: Shapes = Shapes(),
    margin: float = 0.1,
    limit: int = 1024,
) -> tuple[int, Estimate | None]:
    """The largest micro-batch (decode: decode batch) of `step_kind` whose peak stays under (1 - margin) of
    `gpu_bytes`, by doubling then bisection on estimates (the peak grows with the batch); (0, None) when
    not even 1 fits."""
    field_ = "decode_batch" if step_kind == "decode" else "micro_batch"
    cfg = model_config_ if hasattr(model_config_, "vocab_size") else model_config(model_config_ or "Qwen2.5-1.5B")
    cache: dict[int, Estimate] = {}

    def fits(b: int) -> bool:
        if b not in cache:
            cache[b] = estimate(step_kind, cfg, replace(shapes, **{field_: b}))
        return cache[b].fits(gpu_bytes, margin)

    if not fits(1):
        return 0, None
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    if hi > limit:
        return lo, cache[lo]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, cache[lo]


def as_json(e: Estimate) -> str:
    d = asdict(e)
    d["flops_ratio"] = e.flops_ratio
    return json.dumps(d, indent=2)
