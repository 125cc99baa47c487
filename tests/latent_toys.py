"""Toy data and tiny reasoners shared by the latent-reasoning tests (LatentR3, FLR)."""

import pandas as pd
import torch

from latentrec.data.processed_io import ProcessedDataset
from latentrec.llm.backbone import tiny_llama_like
from latentrec.llm.latent import collate_prompt_target, new_reasoner
from latentrec.llm.prompts import SegmentEncoder, encode_sample

TITLES = [f"Album {w}" for w in ("Alpha", "Beta", "Gamma", "Delta", "Omega", "Sigma")]
# Real album titles, for catalogues whose titles should tokenise like the CDs ones.
ALBUMS = [
    "Abbey Road",
    "Blue Train",
    "Kind of Blue",
    "Rumours",
    "Thriller",
    "Back in Black",
    "Nevermind",
    "The Wall",
    "Hotel California",
    "Purple Rain",
    "Born to Run",
    "Ten",
    "Is This It",
    "Blue Lines",
]


def tiny_reasoner(tok, head="latentratt", n_latents=1, refine_steps=1, seed=0, **options):
    """A tiny random Llama with a fresh head (adds <|Thought|> to `tok`: pass a copy)."""
    return new_reasoner(
        tiny_llama_like(tok, seed=seed),
        tok,
        head=head,
        n_latents=n_latents,
        head_options=options or None,
        seed=seed + 1,
        refine_steps=refine_steps,
    )


def toy_samples(tok, n=12):
    """A learnable rule with varying prompt lengths: the target is 3 titles after the first."""
    enc = SegmentEncoder(tok)
    out = []
    for i in range(n):
        hist = [TITLES[(i + k) % 6] for k in range(1 + i % 3)]
        out.append(encode_sample(enc, hist, TITLES[(i + 3) % 6], "musics"))
    return out


def fit_to_rule(reasoner, samples, pad_token_id, steps=30, lr=1e-2):
    """Full-batch Adam on the target likelihood, so rewards and decodes carry signal as after SFT."""
    batch = collate_prompt_target(samples, pad_token_id)
    opt = torch.optim.Adam(reasoner.parameters(), lr=lr)
    for _ in range(steps):
        loss = -reasoner(**batch).sum() / batch["target_mask"].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return reasoner


def catalog_dataset(titles, histories, targets):
    """A tiny dataset over `titles` whose every split holds the given users (history item ids, target id)."""
    items = pd.DataFrame(
        {"item_id": range(len(titles)), "asin": [f"A{i}" for i in range(len(titles))], "title": titles}
    )
    rows = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(len(histories))], "history_item_ids": histories, "item_id": targets}
    )
    return ProcessedDataset(items, rows, rows, rows)
