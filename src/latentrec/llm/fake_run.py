"""Run the training and decoding code on weights that hold no memory, and count the bytes it would hold.

The model's weights (and every tensor computed from them) are ``FakeTensor``s: shapes, dtypes and
strides without data, so a Qwen2.5-1.5B step runs on a laptop in seconds. The small integer tensors the
code steers by (ids, masks, positions, labels, beam bookkeeping) stay real, so the code's own
data-dependent choices (boolean indexing, ``int(mask.sum())``, cache lengths) run exactly as on a GPU.
:class:`FakeRun` is the dispatch mode that routes each operator: real when all its inputs are real,
fake when any is fake. A value read out of a fake tensor (``float(loss)``, a reward for the log) has no
data: it reads as 0, which only the logged statistics see.

:class:`LiveBytes` follows every storage an operator creates (real or fake) until Python frees it, so
its ``peak`` is the high-water mark of live tensor bytes: what a caching GPU allocator must at least
hold. Bound of the model: it counts tensors, not the allocator's rounding and fragmentation, nor the
CUDA context and kernel workspaces (cuBLAS, attention); see ``memory_estimate.OVERHEAD_BYTES``.
"""

from __future__ import annotations

import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten

# A factory call (no tensor inputs) above this size runs fake: the code's own masks and index tensors are
# far smaller, and a real allocation of that size would defeat the point.
REAL_FACTORY_LIMIT = 64 << 20


class LiveBytes:
    """Bytes of the tensor storages alive now, and the most alive at once since the last reset."""

    def __init__(self):
        self._sizes = WeakIdKeyDictionary()
        self._refs: set = set()  # the callbacks' weak references, kept alive until they fire
        self.now = 0
        self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        """Count `t`'s storage until it is freed (once, however many views of it are tracked)."""
        storage = t.untyped_storage()
        if storage in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[storage] = size
        self.now += size
        self.peak = max(self.peak, self.now)
        self._refs.add(weakref.ref(storage, lambda ref, size=size: self._free(ref, size)))

    def _free(self, ref, size: int) -> None:
        self._refs.discard(ref)
        self.now -= size

    def reset_peak(self) -> None:
        self.peak = self.now


# Operators whose boolean-mask indices would need the mask's values: a real mask becomes its real positions.
_INDEXING = {
    aten.index.Tensor,
    aten.index_put.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
    aten._unsafe_index.Tensor,
    aten._unsafe_index_put.default,
}


def _positions(indices):
    """Boolean masks among `indices` replaced by the long positions of their True entries."""
    out = []
    for ix in indices:
        if isinstance(ix, torch.Tensor) and not isinstance(ix, FakeTensor) and ix.dtype in (torch.bool, torch.uint8):
            out += list(torch.nonzero(ix).unbind(1))
        else:
            out.append(ix)
    return out


def _scalar_of(t: torch.Tensor):
    """What reading a fake tensor's value gives: 0 of its kind."""
    if t.dtype == torch.bool:
        return False
    return 0.0 if t.dtype.is_floating_point or t.dtype.is_complex else 0


class FakeRun(TorchDispatchMode):
    """Route each operator to real or fake execution (see the module's docstring) and track its outputs."""

    def __init__(self, fake_mode: FakeTensorMode, live: LiveBytes):
        super().__init__()
        self.fake_mode, self.live = fake_mode, live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        any_fake = any(isinstance(t, FakeTensor) for t in tensors)
        if func is aten._local_scalar_dense.default and any_fake:
            return _scalar_of(args[0])
        if any_fake:
            if func in _INDEXING:
                args = (args[0], _positions(args[1]), *args[2:])
            with self.fake_mode:
                out = func(*args, **kwargs)
        elif tensors:
            out = func(*args, **kwargs)
        else:
            with self.fake_mode:
                out = func(*args, **kwargs)
            outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            if sum(t.untyped_storage().nbytes() for t in outs) <= REAL_FACTORY_LIMIT:
                out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.live.track(t)
        return out


def fake_mode() -> FakeTensorMode:
    """A fake mode that takes the real steering tensors as inputs of fake operators."""
    return FakeTensorMode(allow_non_fake_inputs=True)
