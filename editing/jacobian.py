"""Generator Jacobians and region Gram matrices (LowRankGAN arXiv 2106.04488 Sec. 3; ReSeFa arXiv 2202.09649 Sec. 3;
zhujiapeng/resefa ``compute_jacobian.py``, docs/editing.md).

``JacobianEngine`` differentiates the (resized, channel-reduced) generator output with respect to a single
``w`` broadcast to all layers (the originals' W space), ``w+`` or ``z``:

- ``forward``: forward mode, one JVP per latent dimension (512 instead of 65,536 passes), vectorised over
  chunks of tangents (``torch.func.vmap`` of ``torch.func.jvp``) or, with ``impl="batch"``, as a batch of dual
  tensors (``torch.autograd.forward_ad``) for modules ``vmap`` cannot trace.
- ``reverse``: the originals' reference, one backward per output row (``chunk=1``), or a batch of latent copies
  with one row backpropagated per copy (``chunk=k``).

Forward mode needs jvp rules for every op on the synthesis path: the compiled StyleGAN2 ops register backward
only, so the engine switches the suite's ops to the pure-PyTorch reference backend while it runs
(``reference_ops``); reverse mode runs on the active ops backend.

``GramAccumulator`` turns Jacobian rows into ``A = J_fᵀJ_f / N_f`` and ``B = J_bᵀJ_b / N_b`` for several
regions at once (float64). Reverse mode streams rows into it, so the full Jacobian is never stored; forward
mode produces columns, so one sample's ``[P, D]`` float32 Jacobian is held in memory (134 MB at 256², 512-d),
never written, and dropped after its Grams are formed.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SPACES = ("w", "wplus", "z")
REDUCES = ("mean", "sum", "none")


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Run the suite's StyleGAN2 ops on the pure-PyTorch reference backend (which has jvp rules), then
    restore.
    """
    try:
        import ops
    except ImportError:
        yield
        return
    use = getattr(ops, "use_backend", None)
    if use is not None:
        with use("ref"):
            yield
        return
    setter, getter = getattr(ops, "set_backend", None), getattr(ops, "get_backend", None)
    if setter is None:
        yield
        return
    previous = getter() if getter is not None else "auto"
    setter("ref")
    try:
        yield
    finally:
        setter(previous)


class JacobianEngine:
    """Jacobian of ``reduce(resize(G.synthesis(ws)))`` w.r.t. the chosen latent (docs/editing.md, "Jacobian").

    Args:
        G: generator with NVIDIA's API (``mapping``, ``synthesis``, ``num_ws``, ``w_dim``, ``z_dim``).
        space: ``w`` (one w broadcast to all layers, the originals), ``wplus`` (all layers, flattened) or
        ``z``.
        size: side of the output grid the Jacobian is taken on (``None``: the generator's resolution); the
        originals
            use 256 (LowRankGAN resizes to it, ReSeFa downsizes larger images).
        reduce: channel reduction ``mean`` (LowRankGAN), ``sum`` (ReSeFa) or ``none`` (keep RGB rows).
        resize: ``F.interpolate`` mode used when the output side differs from ``size``.
        noise_mode: synthesis noise; fixed (``const``) in both originals.
        truncation_psi, truncation_cutoff: passed to ``G.mapping`` when mapping z.
    """

    def __init__(
        self,
        G: torch.nn.Module,
        space: str = "w",
        size: int | None = 256,
        reduce: str = "sum",
        resize: str = "nearest",
        noise_mode: str = "const",
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ):
        if space not in SPACES:
            raise ValueError(f"jacobian.space={space!r}: expected one of {SPACES}")
        if reduce not in REDUCES:
            raise ValueError(f"jacobian.reduce={reduce!r}: expected one of {REDUCES}")
        self.G = G
        self.space, self.size, self.reduce, self.resize = space, size, reduce, resize
        self.noise_mode = noise_mode
        self.truncation_psi, self.truncation_cutoff = truncation_psi, truncation_cutoff

    @property
    def num_ws(self) -> int:
        return int(self.G.num_ws)

    @property
    def input_dim(self) -> int:
        if self.space == "w":
            return int(self.G.w_dim)
        if self.space == "wplus":
            return self.num_ws * int(self.G.w_dim)
        return int(self.G.z_dim)

    def _c(self, n: int, device: torch.device) -> torch.Tensor | None:
        c_dim = int(getattr(self.G, "c_dim", 0) or 0)
        return torch.zeros(n, c_dim, device=device) if c_dim > 0 else None

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """``z [N, z_dim] -> ws [N, num_ws, w_dim]`` with the engine's truncation."""
        return self.G.mapping(
            z,
            self._c(z.shape[0], z.device),
            truncation_psi=self.truncation_psi,
            truncation_cutoff=self.truncation_cutoff,
        )

    def latent_from_z(self, z: torch.Tensor) -> torch.Tensor:
        """The point the Jacobian is taken at, ``[N, input_dim]``: w (first layer), flattened w+, or z
        itself.
        """
        if self.space == "z":
            return z
        ws = self.map(z)
        return ws[:, 0] if self.space == "w" else ws.flatten(1)

    def to_ws(self, x: torch.Tensor) -> torch.Tensor:
        """Latent ``[N, input_dim]`` -> ws ``[N, num_ws, w_dim]``."""
        if self.space == "w":
            return x[:, None, :].expand(-1, self.num_ws, -1)
        if self.space == "wplus":
            return x.reshape(x.shape[0], self.num_ws, -1)
        return self.map(x)

    def reduce_image(self, img: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W] -> [N, K, S, S]``: resize to ``size`` then reduce channels (K = 1, or C for
        ``none``).
        """
        if self.size is not None and img.shape[-1] != self.size:
            kwargs = {} if self.resize == "nearest" else {"align_corners": False}
            img = F.interpolate(img, size=(self.size, self.size), mode=self.resize, **kwargs)
        if self.reduce == "mean":
            return img.mean(dim=1, keepdim=True)
        if self.reduce == "sum":
            return img.sum(dim=1, keepdim=True)
        return img

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced generator output ``[N, K, S, S]`` for latents ``[N, input_dim]``."""
        img = self.G.synthesis(self.to_ws(x), noise_mode=self.noise_mode)
        return self.reduce_image(img)

    def output_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        with torch.no_grad(), reference_ops():
            return tuple(self.output(x[:1]).shape[1:])

    # ---------------------------------------------------------------- forward mode
    def forward_chunks(
        self, x: torch.Tensor, chunk: int = 32, impl: str = "vmap", columns: torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(column_ids, J[:, column_ids])`` with ``J`` flattened to ``[P, k]`` for one latent ``x
        [D]``.
        """
        if x.ndim != 1:
            raise ValueError(f"forward: expected one latent of shape [input_dim], got {tuple(x.shape)}")
        dim = x.shape[0]
        cols = torch.arange(dim, device=x.device) if columns is None else columns.to(x.device)
        x = x.detach()

        def single(inp: torch.Tensor) -> torch.Tensor:
            return self.output(inp[None])[0].reshape(-1)

        def one_jvp(t: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(single, (x,), (t,))[1]

        with reference_ops():
            for start in range(0, cols.numel(), chunk):
                ids = cols[start : start + chunk]
                tangents = torch.zeros(ids.numel(), dim, device=x.device, dtype=x.dtype)
                tangents[torch.arange(ids.numel()), ids] = 1.0
                if impl == "vmap":
                    block = torch.func.vmap(one_jvp)(tangents)
                elif impl == "batch":
                    block = self._dual_batch(x, tangents)
                else:
                    raise ValueError(f"jacobian.impl={impl!r}: expected 'vmap' or 'batch'")
                yield ids, block.detach().T

    def _dual_batch(self, x: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        import torch.autograd.forward_ad as fwad

        with fwad.dual_level():
            dual = fwad.make_dual(x[None].expand(tangents.shape[0], -1).contiguous(), tangents)
            out = self.output(dual)
            return fwad.unpack_dual(out).tangent.reshape(tangents.shape[0], -1)

    def forward(self, x: torch.Tensor, chunk: int = 32, impl: str = "vmap") -> torch.Tensor:
        """Full Jacobian ``[P, D]`` of one latent by forward mode."""
        blocks = [blk for _, blk in self.forward_chunks(x, chunk, impl)]
        return torch.cat(blocks, dim=1)

    # ---------------------------------------------------------------- reverse mode
    def reverse_chunks(
        self, x: torch.Tensor, rows: torch.Tensor | None = None, chunk: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(row_ids, J[row_ids])`` by reverse mode.

        ``chunk=1`` is the originals' one backward per row through one retained graph. ``chunk=k`` runs the
        generator on k copies of the latent and backpropagates one row of each copy: one batched forward and one
        batched backward per k rows (batching the backward with vmap instead falls back to a per-row loop for the
        convolutions).
        """
        if x.ndim != 1:
            raise ValueError(f"reverse: expected one latent of shape [input_dim], got {tuple(x.shape)}")
        x = x.detach()
        with torch.enable_grad():
            if rows is None:
                rows = torch.arange(math.prod(self.output_shape(x[None])), device=x.device)
            ids_all = rows.to(x.device)
            if chunk == 1:
                xg = x.clone().requires_grad_(True)
                y = self.output(xg[None]).reshape(-1)
                for ids in ids_all.split(1):
                    (g,) = torch.autograd.grad(y[ids[0]], xg, retain_graph=True)
                    yield ids, g[None]
                return
            for ids in ids_all.split(chunk):
                xb = x.expand(ids.numel(), -1).clone().requires_grad_(True)
                yb = self.output(xb).reshape(ids.numel(), -1)
                (g,) = torch.autograd.grad(yb[torch.arange(ids.numel(), device=x.device), ids].sum(), xb)
                yield ids, g

    def reverse(self, x: torch.Tensor, rows: torch.Tensor | None = None, chunk: int = 1) -> torch.Tensor:
        """Jacobian rows ``[len(rows), D]`` (all rows by default) by reverse mode."""
        return torch.cat([g for _, g in self.reverse_chunks(x, rows, chunk)], dim=0)


class GramAccumulator:
    """Region Gram matrices ``A = J_fᵀJ_f/N_f`` (inside) and ``B = J_bᵀJ_b/N_b`` (outside), as both originals.

    ``masks`` maps region names to boolean ``[S, S]`` masks on the Jacobian grid; rows of a ``K``-channel
    Jacobian
    (``reduce='none'``) reuse the pixel mask for each channel. Each sample is normalised on its own (the
    originals
    process each image independently); ``per_sample`` keeps them and ``mean`` averages them.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor], dim: int, channels: int = 1):
        if not masks:
            raise ValueError("GramAccumulator: expected at least one region mask")
        self.masks = {k: m.reshape(-1).bool() for k, m in masks.items()}
        self.pixels = next(iter(self.masks.values())).numel()
        for name, m in self.masks.items():
            if m.numel() != self.pixels:
                raise ValueError(f"region {name!r}: mask has {m.numel()} pixels, expected {self.pixels}")
        self.dim, self.channels = dim, channels
        self.per_sample: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in self.masks}
        self._reset()

    def _reset(self) -> None:
        z = lambda: torch.zeros(self.dim, self.dim, dtype=torch.float64)  # noqa: E731
        self._sums = {k: [z(), z(), 0, 0] for k in self.masks}

    def add_rows(self, rows: torch.Tensor, row_ids: torch.Tensor) -> None:
        """Accumulate Jacobian rows ``[n, D]`` whose flat output indices are ``row_ids [n]``."""
        rows = rows.detach().to("cpu", torch.float64)
        pix = row_ids.to("cpu") % self.pixels
        for name, m in self.masks.items():
            inside = m[pix]
            jf, jb = rows[inside], rows[~inside]
            acc = self._sums[name]
            acc[0] += jf.T @ jf
            acc[1] += jb.T @ jb
            acc[2] += int(inside.sum())
            acc[3] += int((~inside).sum())

    def add_jacobian(self, J: torch.Tensor) -> None:
        """Accumulate a full ``[P, D]`` Jacobian of one sample."""
        self.add_rows(J, torch.arange(J.shape[0]))

    def end_sample(self) -> None:
        """Normalise the current sample's sums and store them."""
        for name, (a, b, nf, nb) in self._sums.items():
            if nf == 0 or nb == 0:
                raise ValueError(f"region {name!r}: no Jacobian rows {'inside' if nf == 0 else 'outside'} the mask")
            self.per_sample[name].append((a / nf, b / nb))
        self._reset()

    def mean(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample-averaged ``(A, B)`` of a region."""
        pairs = self.per_sample[name]
        if not pairs:
            raise RuntimeError(f"region {name!r}: no samples accumulated (call end_sample after each sample)")
        return torch.stack([p[0] for p in pairs]).mean(0), torch.stack([p[1] for p in pairs]).mean(0)


def accumulate_grams(
    engine: JacobianEngine,
    latents: torch.Tensor,
    masks: Mapping[str, torch.Tensor],
    mode: str = "forward",
    chunk: int = 32,
    impl: str = "vmap",
) -> GramAccumulator:
    """Jacobian of each latent in ``latents [N, D]`` streamed into the region Grams (one sample at a time).

    Reverse mode adds rows in blocks of at most ~1024 (never the whole Jacobian); forward mode fills one
    sample's
    ``[P, D]`` buffer column block by column block, then forms the Grams and drops it.
    """
    channels = engine.output_shape(latents)[0]
    acc = GramAccumulator(masks, engine.input_dim, channels)
    for x in latents:
        if mode == "forward":
            J = torch.empty(acc.pixels * channels, engine.input_dim, dtype=x.dtype, device=x.device)
            for ids, block in engine.forward_chunks(x, chunk, impl):
                J[:, ids] = block
            acc.add_jacobian(J)
            del J
        elif mode == "reverse":
            buf_ids, buf_rows = [], []
            for ids, rows in engine.reverse_chunks(x, chunk=chunk):
                buf_ids.append(ids)
                buf_rows.append(rows)
                if sum(b.shape[0] for b in buf_rows) >= 1024:
                    acc.add_rows(torch.cat(buf_rows), torch.cat(buf_ids))
                    buf_ids, buf_rows = [], []
            if buf_rows:
                acc.add_rows(torch.cat(buf_rows), torch.cat(buf_ids))
        else:
            raise ValueError(f"jacobian.mode={mode!r}: expected 'forward' or 'reverse'")
        acc.end_sample()
    return acc
