"""The action-conditioned predictor of V-JEPA 2-AC (Assran et al. 2025, "V-JEPA 2", Sec. 3).

Per time step ``t`` the predictor reads the tokens ``[action_t, state_t, extrinsics_t, patches
of frame t]`` (the state token only when ``state_dim > 0``, the camera-extrinsics token only
when ``extrinsics_dim > 0``): actions, proprioceptive states and extrinsics through their own
linear embeddings, frame features through a linear projection to the predictor width.
A transformer with **frame-causal attention** (every token of step ``t`` sees every token of
steps ``<= t``) maps them to the features of frame ``t + 1`` at the patch positions.

Positions: by default fixed sincos tables added to the tokens (3-D ``[time, row, column]`` for
patches, the time table for the conditioning tokens); ``pos_embed="rope"`` instead rotates
queries and keys as the release does (vjepa2 ``ACRoPEAttention``): patch tokens by their
``(time, row, column)`` over the three axis chunks of each head, conditioning tokens by their
time step in the time chunk only; with ``rope_reference_layout=True`` it reproduces the
release's ``.repeat`` channel layout, which the released weights need
(:mod:`jepalab.interop.vjepa2`). Either way tables grow with the number of steps. The
block-causal mask is a single integer handed to the attention dispatcher
(:func:`jepalab.kernels.attention`, ``causal_block``) instead of a pre-built dense boolean
mask sliced on every forward.

:meth:`ActionConditionedPredictor.rollout` predicts autoregressively with a key/value cache:
because attention is frame-causal, outputs at steps ``<= t`` never change when later steps
are appended, so each new step runs the transformer on its own tokens only (``H`` steps cost
``O(H)`` token passes instead of ``O(H^2)``) and equals the full recomputation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jepalab.models.layers import Block, drop_path_rates, init_transformer_weights, rope_angles
from jepalab.models.layers.pos_embed import sincos_1d, sincos_3d
from jepalab.models.registry import register_predictor
from jepalab.specs import records_arguments


@records_arguments
class ActionConditionedPredictor(nn.Module):
    """Predict next-frame features from frame features, actions and states.

    Args:
        grid_size: ``(h, w)`` patch grid of one frame (``N = h * w`` tokens per frame).
        encoder_dim: width of the (frozen) encoder features.
        action_dim: size of one action vector.
        state_dim: size of one proprioceptive state vector; ``0``: no state token.
        embed_dim, depth, num_heads, mlp_ratio: transformer shape (V-JEPA 2-AC: 1024, 24, 16).
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        init_std: truncated-normal initialisation std.
        attn_backend: backend of :func:`jepalab.kernels.attention`.
        extrinsics_dim: size of one camera-extrinsics vector (V-JEPA 2-AC ``use_extrinsics``:
            6); ``0``: no extrinsics token.
        pos_embed: ``"sincos"`` (added to the tokens) or ``"rope"`` (V-JEPA 2-AC).
        rope_reference_layout: reproduce V-JEPA 2's rotary channel layout (for its weights).
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        encoder_dim: int,
        action_dim: int,
        state_dim: int = 0,
        embed_dim: int = 256,
        depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        init_std: float = 0.02,
        attn_backend: str = "auto",
        extrinsics_dim: int = 0,
        pos_embed: str = "sincos",
        rope_reference_layout: bool = False,
    ) -> None:
        super().__init__()
        if len(grid_size) != 2:
            raise ValueError(f"grid_size must be the (h, w) grid of one frame, got {grid_size}")
        if pos_embed not in ("sincos", "rope"):
            raise ValueError(f"pos_embed={pos_embed!r} is not 'sincos' or 'rope'")
        if pos_embed == "sincos" and embed_dim % 8:
            raise ValueError(f"embed_dim must be divisible by 8 (3-D sincos), got {embed_dim}")
        if action_dim < 1 or state_dim < 0 or extrinsics_dim < 0:
            raise ValueError(
                f"action_dim={action_dim} must be >= 1, state_dim={state_dim} and "
                f"extrinsics_dim={extrinsics_dim} >= 0"
            )
        self.grid_size = tuple(grid_size)
        self.num_patches = grid_size[0] * grid_size[1]
        self.encoder_dim, self.embed_dim = encoder_dim, embed_dim
        self.action_dim, self.state_dim = action_dim, state_dim
        self.extrinsics_dim = extrinsics_dim
        self.num_cond_tokens = 1 + (state_dim > 0) + (extrinsics_dim > 0)
        self.tokens_per_step = self.num_cond_tokens + self.num_patches
        self.pos_embed_kind, self.rope_reference_layout = pos_embed, rope_reference_layout
        self.head_dim = embed_dim // num_heads
        self.predictor_embed = nn.Linear(encoder_dim, embed_dim)
        self.action_encoder = nn.Linear(action_dim, embed_dim)
        self.state_encoder = nn.Linear(state_dim, embed_dim) if state_dim > 0 else None
        self.extrinsics_encoder = (
            nn.Linear(extrinsics_dim, embed_dim) if extrinsics_dim > 0 else None
        )
        self.predictor_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, drop_path=p, attn_backend=attn_backend)
            for p in drop_path_rates(drop_path_rate, depth)
        )
        self.predictor_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(embed_dim, encoder_dim)
        self._position_tables: dict[torch.device, Tensor] = {}  # fixed; see _positions
        self._rope_tables: dict[torch.device, Tensor] = {}  # fixed; see _rope
        init_transformer_weights(self, self.predictor_blocks, init_std)

    # -- tokens -----------------------------------------------------------------------------
    def _positions(self, first: int, steps: int, device: torch.device) -> Tensor:
        """``(steps, tokens_per_step, D)`` fixed positions of steps ``first .. first+steps-1``.

        The table is built once per device (and regrown for longer sequences): a planning
        step calls this ``iterations x horizon`` times."""
        last = first + steps
        table = self._position_tables.get(device)
        if table is None or table.shape[0] < last:
            h, w = self.grid_size
            length = max(last, 16)
            patches = sincos_3d(self.embed_dim, (length, h, w)).view(length, h * w, -1)
            times = sincos_1d(self.embed_dim, torch.arange(length)).float()
            cond = times[:, None].expand(-1, self.num_cond_tokens, -1)
            table = torch.cat([cond, patches], dim=1).to(device)
            self._position_tables[device] = table
        return table[first:last]

    def _rope(self, first: int, steps: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Rotary ``(cos, sin)``, each ``(steps * tokens_per_step, 1, head_dim)``, of steps
        ``first ..``: patch tokens at ``(t, row, column)``, conditioning tokens at ``(t, 0, 0)``
        so that only their time chunk rotates (vjepa2 ``ACRoPEAttention``)."""
        last = first + steps
        table = self._rope_tables.get(device)
        if table is None or table.shape[1] < last:
            h, w = self.grid_size
            length = max(last, 16)
            t, r, c = torch.meshgrid(
                torch.arange(length), torch.arange(h), torch.arange(w), indexing="ij"
            )
            patches = torch.stack([t, r, c], dim=-1).view(length, h * w, 3)
            cond = torch.zeros(length, self.num_cond_tokens, 3, dtype=torch.long)
            cond[..., 0] = torch.arange(length)[:, None]
            coords = torch.cat([cond, patches], dim=1).view(-1, 3)
            angles = rope_angles(coords, self.head_dim, reference_layout=self.rope_reference_layout)
            angles = angles.view(length, self.tokens_per_step, self.head_dim)
            table = torch.stack([angles.cos(), angles.sin()]).float().to(device)
            self._rope_tables[device] = table
        cos, sin = table[:, first:last].flatten(1, 2)[..., None, :].unbind(0)
        return cos, sin

    def _tokens(
        self,
        features: Tensor,
        actions: Tensor,
        states: Tensor | None,
        first: int,
        extrinsics: Tensor | None = None,
    ) -> Tensor:
        """``(B, T * tokens_per_step, D)`` input tokens of steps ``first ..``."""
        b, t, n, _ = features.shape
        if n != self.num_patches:
            raise ValueError(f"expected {self.num_patches} tokens per frame, got {n}")
        if actions.shape[:2] != (b, t) or actions.shape[-1] != self.action_dim:
            raise ValueError(
                f"actions {tuple(actions.shape)} do not match (B={b}, T={t}, "
                f"action_dim={self.action_dim})"
            )
        parts = [self.action_encoder(actions)[:, :, None]]
        if self.state_encoder is not None:
            if states is None or states.shape[:2] != (b, t):
                shape = None if states is None else tuple(states.shape)
                raise ValueError(f"this predictor needs states (B={b}, T={t}, S), got {shape}")
            parts.append(self.state_encoder(states)[:, :, None])
        if self.extrinsics_encoder is not None:
            if extrinsics is None or extrinsics.shape[:2] != (b, t):
                shape = None if extrinsics is None else tuple(extrinsics.shape)
                raise ValueError(f"this predictor needs extrinsics (B={b}, T={t}, E), got {shape}")
            parts.append(self.extrinsics_encoder(extrinsics)[:, :, None])
        parts.append(self.predictor_embed(features))
        x = torch.cat(parts, dim=2)
        if self.pos_embed_kind == "sincos":
            x = x + self._positions(first, t, features.device)
        return x.reshape(b, t * self.tokens_per_step, self.embed_dim)

    def _step_rope(self, first: int, steps: int, device: torch.device):
        return self._rope(first, steps, device) if self.pos_embed_kind == "rope" else None

    def _readout(self, x: Tensor, steps: int) -> Tensor:
        """Predictions at the patch tokens, ``(B, steps, N, encoder_dim)``."""
        x = x.view(x.shape[0], steps, self.tokens_per_step, self.embed_dim)
        return self.predictor_proj(self.predictor_norm(x[:, :, self.num_cond_tokens :]))

    # -- prediction -------------------------------------------------------------------------
    def forward(
        self,
        features: Tensor,
        actions: Tensor,
        states: Tensor | None = None,
        extrinsics: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced prediction of every next frame.

        Args:
            features: ``(B, T, N, encoder_dim)`` features of frames ``0 .. T-1``.
            actions: ``(B, T, action_dim)``; action ``t`` leads from frame ``t`` to ``t + 1``.
            states: ``(B, T, state_dim)`` or ``None`` when ``state_dim == 0``.
            extrinsics: ``(B, T, extrinsics_dim)`` or ``None`` when ``extrinsics_dim == 0``.

        Returns:
            ``(B, T, N, encoder_dim)``: entry ``t`` predicts frame ``t + 1`` from steps ``<= t``.
        """
        steps = features.shape[1]
        x = self._tokens(features, actions, states, first=0, extrinsics=extrinsics)
        rope = self._step_rope(0, steps, features.device)
        for blk in self.predictor_blocks:
            x = blk(x, rope=rope, causal_block=self.tokens_per_step)
        return self._readout(x, steps)

    def rollout(
        self,
        features: Tensor,
        actions: Tensor,
        states: Tensor | None = None,
        extrinsics: Tensor | None = None,
    ) -> Tensor:
        """Autoregressive prediction from one observed frame (V-JEPA 2-AC rollout, planning).

        Args:
            features: ``(B, N, encoder_dim)`` features of the first frame.
            actions: ``(B, H, action_dim)`` actions of steps ``0 .. H-1``.
            states: ``(B, H, state_dim)`` states of steps ``0 .. H-1`` (or ``None``).
            extrinsics: ``(B, H, extrinsics_dim)`` of steps ``0 .. H-1`` (or ``None``).

        Returns:
            ``(B, H, N, encoder_dim)``: entry ``t`` is the predicted frame ``t + 1``, each
            prediction fed back as the next step's frame.
        """
        horizon = actions.shape[1]
        caches: list[dict[str, Tensor]] = [{} for _ in self.predictor_blocks]
        frame, predictions = features, []
        for t in range(horizon):
            step_states = None if states is None else states[:, t : t + 1]
            step_extr = None if extrinsics is None else extrinsics[:, t : t + 1]
            x = self._tokens(frame[:, None], actions[:, t : t + 1], step_states, t, step_extr)
            rope = self._step_rope(t, 1, frame.device)
            for blk, cache in zip(self.predictor_blocks, caches, strict=True):
                x = blk(x, rope=rope, kv_cache=cache)
            frame = self._readout(x, 1)[:, 0]
            predictions.append(frame)
        return torch.stack(predictions, dim=1)


@register_predictor
def action_predictor(**kwargs) -> ActionConditionedPredictor:
    """The V-JEPA 2-AC predictor; pass ``grid_size``, ``encoder_dim`` and ``action_dim``."""
    return ActionConditionedPredictor(**kwargs)


__all__ = ["ActionConditionedPredictor", "action_predictor"]
