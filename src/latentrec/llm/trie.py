"""Integer token trie over catalog sequences, with vectorised look-ups for constrained decoding.

Node 0 is the root (the empty prefix). Every other node is the prefix reached by one token from its
parent. Children are stored in CSR form sorted by ``(node, token)``, so

* the tokens allowed after a batch of nodes are gathered with tensor ops (``allowed_mask``), and
* following a token from a batch of nodes is one ``torch.searchsorted`` over the sorted keys
  ``node * vocab_size + token`` (``advance``).

Identical sequences collapse into one terminal node, which keeps every catalog index that produced it
(several catalog items may share a title). ``-1`` stands for "no node" (dead / invalid prefix); every
look-up maps it to "no children" and to ``-1`` again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

DEAD = -1


@dataclass
class TitleTrie:
    """Token trie in CSR form. Build it with :meth:`TitleTrie.build`."""

    vocab_size: int
    parent: torch.Tensor  # [N] int64, -1 for the root
    token_in: torch.Tensor  # [N] int64, token leading into the node, -1 for the root
    depth: torch.Tensor  # [N] int64, prefix length
    child_ptr: torch.Tensor  # [N + 1] int64, CSR row pointer
    child_tokens: torch.Tensor  # [E] int64, sorted by (node, token)
    child_nodes: torch.Tensor  # [E] int64
    keys: torch.Tensor  # [E] int64, node * vocab_size + token, ascending
    terminals: dict[int, list[int]]  # terminal node -> catalog indices ending there
    is_terminal: torch.Tensor  # [N] bool
    _device_cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], vocab_size: int) -> TitleTrie:
        """Trie over ``sequences``; catalog index ``i`` is ``sequences[i]``.

        Empty sequences are rejected (the root cannot be a catalog entry). Tokens must lie in
        ``[0, vocab_size)``.
        """
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        children: list[dict[int, int]] = [{}]
        parent = [DEAD]
        token_in = [DEAD]
        depth = [0]
        terminals: dict[int, list[int]] = {}
        for idx, seq in enumerate(sequences):
            if len(seq) == 0:
                raise ValueError(f"catalog sequence {idx} is empty")
            node = 0
            for tok in seq:
                tok = int(tok)
                if not 0 <= tok < vocab_size:
                    raise ValueError(f"token {tok} of sequence {idx} is outside [0, {vocab_size})")
                nxt = children[node].get(tok)
                if nxt is None:
                    nxt = len(children)
                    children[node][tok] = nxt
                    children.append({})
                    parent.append(node)
                    token_in.append(tok)
                    depth.append(depth[node] + 1)
                node = nxt
            terminals.setdefault(node, []).append(idx)

        n_nodes = len(children)
        counts = [len(c) for c in children]
        ptr = [0] * (n_nodes + 1)
        for i, c in enumerate(counts):
            ptr[i + 1] = ptr[i] + c
        toks: list[int] = []
        kids: list[int] = []
        for c in children:
            for tok in sorted(c):
                toks.append(tok)
                kids.append(c[tok])

        child_ptr = torch.tensor(ptr, dtype=torch.int64)
        child_tokens = torch.tensor(toks, dtype=torch.int64)
        child_nodes = torch.tensor(kids, dtype=torch.int64)
        owner = torch.repeat_interleave(torch.arange(n_nodes, dtype=torch.int64), torch.tensor(counts))
        keys = owner * vocab_size + child_tokens  # ascending: rows in node order, tokens sorted per row
        is_terminal = torch.zeros(n_nodes, dtype=torch.bool)
        if terminals:
            is_terminal[torch.tensor(sorted(terminals), dtype=torch.int64)] = True
        return cls(
            vocab_size=vocab_size,
            parent=torch.tensor(parent, dtype=torch.int64),
            token_in=torch.tensor(token_in, dtype=torch.int64),
            depth=torch.tensor(depth, dtype=torch.int64),
            child_ptr=child_ptr,
            child_tokens=child_tokens,
            child_nodes=child_nodes,
            keys=keys,
            terminals=terminals,
            is_terminal=is_terminal,
        )

    # ------------------------------------------------------------------ basic facts
    @property
    def num_nodes(self) -> int:
        return int(self.parent.numel())

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())

    @property
    def num_sequences(self) -> int:
        return sum(len(v) for v in self.terminals.values())

    def items(self, node: int) -> list[int]:
        """Catalog indices whose sequence ends at ``node`` (empty for non-terminal or dead nodes)."""
        return list(self.terminals.get(int(node), ()))

    def sequence(self, node: int) -> list[int]:
        """Token prefix spelled by ``node`` (root -> ``[]``)."""
        node = int(node)
        if not 0 <= node < self.num_nodes:
            raise ValueError(f"no node {node}")
        out: list[int] = []
        while node > 0:
            out.append(int(self.token_in[node]))
            node = int(self.parent[node])
        return out[::-1]

    def find(self, prefix: Sequence[int]) -> int:
        """Node of ``prefix``, or -1 where it leaves the trie."""
        node = torch.zeros(1, dtype=torch.int64)
        for tok in prefix:
            node = self.advance(node, torch.tensor([int(tok)]))
        return int(node[0])

    def children(self, node: int) -> list[int]:
        """Tokens allowed after ``node`` (ascending)."""
        node = int(node)
        if not 0 <= node < self.num_nodes:
            return []
        return self.child_tokens[self.child_ptr[node] : self.child_ptr[node + 1]].tolist()

    # ------------------------------------------------------------------ device handling
    def to(self, device: torch.device | str) -> TitleTrie:
        """Copy of the index tensors on ``device`` (cached; the terminal map is shared)."""
        device = torch.device(device)
        if device == self.child_ptr.device:
            return self
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = TitleTrie(
                vocab_size=self.vocab_size,
                parent=self.parent.to(device),
                token_in=self.token_in.to(device),
                depth=self.depth.to(device),
                child_ptr=self.child_ptr.to(device),
                child_tokens=self.child_tokens.to(device),
                child_nodes=self.child_nodes.to(device),
                keys=self.keys.to(device),
                terminals=self.terminals,
                is_terminal=self.is_terminal.to(device),
            )
        return self._device_cache[key]

    # ------------------------------------------------------------------ vectorised look-ups
    def edges(self, node_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, edge index) pairs of every child edge of every node in ``node_ids``."""
        node_ids = node_ids.reshape(-1).to(device=self.child_ptr.device, dtype=torch.int64)
        valid = (node_ids >= 0) & (node_ids < self.num_nodes)
        safe = torch.where(valid, node_ids, torch.zeros_like(node_ids))
        start = self.child_ptr[safe]
        count = torch.where(valid, self.child_ptr[safe + 1] - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(node_ids.numel(), device=node_ids.device), count)
        if rows.numel() == 0:
            return rows, rows
        first = torch.cumsum(count, 0) - count  # position of each row's first edge in the flat list
        offset = torch.arange(rows.numel(), device=node_ids.device) - first[rows]
        return rows, start[rows] + offset

    def allowed_mask(self, node_ids: torch.Tensor) -> torch.Tensor:
        """BoolTensor[N, V]: True where the token continues the prefix of ``node_ids[n]``.

        Dead nodes (-1) and leaves allow nothing (all-False rows).
        """
        n = node_ids.numel()
        mask = torch.zeros((n, self.vocab_size), dtype=torch.bool, device=self.child_ptr.device)
        rows, edges = self.edges(node_ids)
        if rows.numel():
            mask[rows, self.child_tokens[edges]] = True
        return mask

    def allowed_bias(self, node_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Additive mask [N, V]: 0 where allowed, -inf elsewhere (what a prefix-allowed-tokens filter adds)."""
        n = node_ids.numel()
        bias = torch.full((n, self.vocab_size), float("-inf"), dtype=dtype, device=self.child_ptr.device)
        rows, edges = self.edges(node_ids)
        if rows.numel():
            bias[rows, self.child_tokens[edges]] = 0.0
        return bias

    def constrain(self, scores: torch.Tensor, node_ids: torch.Tensor) -> torch.Tensor:
        """New tensor: ``scores`` [N, V] where allowed after ``node_ids``, -inf elsewhere.

        Equal to ``scores + allowed_bias(node_ids)`` but only touches the allowed entries.
        """
        out = torch.full_like(scores, float("-inf"))
        rows, edges = self.edges(node_ids.to(self.child_ptr.device))
        if rows.numel():
            rows = rows.to(scores.device)
            cols = self.child_tokens[edges].to(scores.device)
            out[rows, cols] = scores[rows, cols]
        return out

    def advance(self, node_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child node of each ``(node_ids[i], tokens[i])``; -1 where the node is dead or the token is not a child."""
        shape = node_ids.shape
        node_ids = node_ids.reshape(-1).to(device=self.child_ptr.device, dtype=torch.int64)
        tokens = tokens.reshape(-1).to(device=self.child_ptr.device, dtype=torch.int64)
        if node_ids.shape != tokens.shape:
            raise ValueError(f"node_ids {tuple(node_ids.shape)} and tokens {tuple(tokens.shape)} differ in size")
        if self.keys.numel() == 0:
            return torch.full(shape, DEAD, dtype=torch.int64, device=self.child_ptr.device)
        valid = (node_ids >= 0) & (node_ids < self.num_nodes) & (tokens >= 0) & (tokens < self.vocab_size)
        query = torch.where(valid, node_ids * self.vocab_size + tokens, torch.zeros_like(node_ids))
        pos = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        hit = valid & (self.keys[pos] == query)
        out = torch.where(hit, self.child_nodes[pos], torch.full_like(pos, DEAD))
        return out.reshape(shape)


def reference_dict_trie(sequences: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """The reference's representation: generated-prefix tuple -> sorted allowed next tokens.

    Plain and obviously correct; the tests and the benchmark check TitleTrie and the decoder
    against HF generate driven by this dict.
    """
    allowed: dict[tuple[int, ...], set[int]] = {}
    for seq in sequences:
        for i in range(len(seq)):
            allowed.setdefault(tuple(seq[:i]), set()).add(seq[i])
    return {k: sorted(v) for k, v in allowed.items()}
