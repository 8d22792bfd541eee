"""Intuitive-physics surprise: how badly a V-JEPA predictor foresees each part of a clip.

The violation-of-expectation evaluation of Garrido et al. 2025 [0] (their released
``evals/intuitive_physics/eval.py``): a clip longer than the encoder's window is cut into
sliding windows of ``num_frames`` frames; in each window the context encoder sees the tokens
of the first ``C`` frames, the predictor (with mask token ``mask_id``; the release uses the
first) predicts every token of the remaining frames, and the window's surprise is the mean L1
distance between those predictions and the layer-normed target-encoder features of the whole
window -- the V-JEPA training loss with a "predict the future" mask. A clip's score is the
maximum or the mean of its windows' surprises; the release reports both. Here a score can
also be taken over the *event windows* only, those that predict the event frame from a
context that ends before it (:func:`event_windows`). The metrics compare matched possible /
impossible clips (:mod:`jepalab.data.physics`): pairwise (relative) accuracy and AUROC.
A control, :func:`context_use`, checks that the surprise is an expectation at all: it
predicts every window from another clip's context and reports how much worse that is.

[0] Garrido et al. 2025, "Intuitive physics understanding emerges from self-supervised
    pretraining on natural videos", Sec. 2 and Methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jepalab.masks.collator import MaskedBatch
from jepalab.masks.multiblock import MaskBatch
from jepalab.methods.ijepa import IJEPA, token_loss
from jepalab.progress import progress_bar
from jepalab.ragged import Ragged

# How a clip's window surprises become one score: the max or mean over all windows (the
# release's two), or over the event windows (those predicting the event from before it).
SCORES = ("max", "mean", "event_max", "event_mean")


@dataclass(frozen=True)
class Windows:
    """Where the sliding windows of a clip lie (all in frames).

    Attributes:
        starts: first frame of each window.
        num_frames: frames per window (the encoder's clip length).
        context_frames: leading frames of each window given to the context encoder.
    """

    starts: tuple[int, ...]
    num_frames: int
    context_frames: int

    @property
    def first_predicted(self) -> list[int]:
        """The first predicted frame of each window: the time axis of surprise curves."""
        return [s + self.context_frames for s in self.starts]


def sliding_windows(
    encoder: torch.nn.Module,
    clip_frames: int,
    context_frames: int | None = None,
    stride: int | None = None,
) -> Windows:
    """The windows of a ``clip_frames``-frame clip for a video ``encoder``.

    Args:
        encoder: a video encoder with ``num_frames``, ``tubelet_size`` attributes.
        clip_frames: frames of the clips to score (``>= encoder.num_frames``).
        context_frames: frames of context, a multiple of the tubelet size strictly inside the
            window; default half the window (rounded down to a tubelet).
        stride: frames between window starts; default 1, so that every frame ``e`` has a
            window whose context ends right before it (with the release's stride, the tubelet
            size, an event inside a tubelet never does; docs/surprise.md).
    """
    num_frames = int(getattr(encoder, "num_frames", 1))
    tubelet = int(getattr(encoder, "tubelet_size", 1))
    if num_frames < 2:
        raise ValueError("surprise needs a video encoder (num_frames > 1); this one embeds images")
    if context_frames is None:
        context_frames = max(tubelet, num_frames // 2 // tubelet * tubelet)
    if context_frames % tubelet or not 0 < context_frames < num_frames:
        raise ValueError(
            f"context_frames={context_frames} must be a multiple of the tubelet size {tubelet} "
            f"in [{tubelet}, {num_frames - tubelet}] (the encoder sees {num_frames} frames)"
        )
    stride = 1 if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if clip_frames < num_frames:
        raise ValueError(
            f"clips of {clip_frames} frames are shorter than the encoder's {num_frames}-frame "
            "window; generate longer clips (clip_frames)"
        )
    return Windows(
        tuple(range(0, clip_frames - num_frames + 1, stride)), num_frames, context_frames
    )


def future_masks(
    grid_size: Sequence[int], context_steps: int, batch: int, mask_id: int
) -> MaskBatch:
    """Context = every token of the first ``context_steps`` tubelet steps, targets = the rest.

    Tokens are numbered ``(time, row, column)``-major (as the tubelet embedding and the 3-D
    mask samplers number them), so both sets are index ranges.
    """
    per_step = int(np.prod(grid_size[1:]))
    total = int(np.prod(grid_size))
    split = context_steps * per_step
    context = torch.arange(split).expand(batch, -1)
    targets = torch.arange(split, total).expand(batch, -1)
    return MaskBatch(
        Ragged.from_dense(context),
        Ragged.from_dense(targets),
        num_targets=1,
        num_contexts=1,
        mask_ids=torch.tensor([mask_id]),
    )


@torch.no_grad()
def window_surprise(
    method: IJEPA,
    windows: Tensor,
    context_frames: int,
    mask_id: int = 0,
    context_windows: Tensor | None = None,
) -> Tensor:
    """Surprise of each window: ``(B,)`` mean L1 between prediction and target features
    (under V-JEPA 2.1's deep supervision, of the last level: the encoder's output, what
    V-JEPA predicts).

    Args:
        method: an I-JEPA/V-JEPA method (``targets``, ``encode_context``, ``last_level``,
            ``context_encoder``, ``predictor``).
        windows: ``(B, C, num_frames, H, W)`` normalised clips of the encoder's length.
        context_frames: leading frames given to the context encoder.
        mask_id: mask token of the predictor for the predicted tokens.
        context_windows: the control of :func:`context_use`: the context encoder sees the
            first frames of these windows (same shape) instead, the targets stay ``windows``'.
    """
    encoder = method.context_encoder
    tubelet = int(getattr(encoder, "tubelet_size", 1))
    masks = future_masks(encoder.grid_size, context_frames // tubelet, len(windows), mask_id)
    masks = masks.to(windows.device)
    labels = torch.full((len(windows),), -1, dtype=torch.long)
    batch = MaskedBatch(windows, labels, step=0, skipped=0, masks=masks)
    # The training forward, token by token: LN(target encoder(window)) at the targets, and the
    # predictor's output from the context encoder's view of the first frames.
    target = method.targets(batch)
    seen = windows if context_windows is None else context_windows
    if seen.shape != windows.shape:
        raise ValueError(f"context_windows {tuple(seen.shape)} != windows {tuple(windows.shape)}")
    context = method.encode_context(seen, masks.context)
    prediction = method.predictor(context, masks.context, masks.targets, masks.target_mask_ids())
    prediction, target = method.last_level(prediction), method.last_level(target)
    per_token = token_loss(prediction.float(), target.float(), "l1")
    return per_token.reshape(len(windows), -1).mean(1)


@torch.no_grad()
def surprise_curves(
    method: IJEPA,
    clips: Tensor,
    windows: Windows,
    mask_id: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "surprise",
    context_clips: Tensor | None = None,
) -> Tensor:
    """Surprise of every sliding window of every clip.

    Args:
        method: a trained (or untrained) I-JEPA/V-JEPA method with a video encoder.
        clips: ``(N, C, T, H, W)`` normalised clips (:meth:`PhysicsBenchmark.clips`).
        windows: from :func:`sliding_windows` for this method and ``T``.
        mask_id: predictor mask token used for the predicted frames (the release: 0).
        batch_size: windows per forward pass (whole clips are batched together).
        progress: show a progress bar.
        context_clips: ``(N, C, T, H, W)``: predict each window of ``clips`` from the
            context frames of the same window of these clips (the control of
            :func:`context_use`); default ``clips`` themselves.

    Returns:
        ``(N, W)`` float32 on the CPU; column ``w`` is the window starting at
        ``windows.starts[w]`` (plotted at ``windows.first_predicted[w]``).
    """
    num_tokens = getattr(method.predictor, "mask_tokens", None)
    if num_tokens is not None and not 0 <= mask_id < len(num_tokens):
        raise ValueError(f"mask_id={mask_id}: the predictor has {len(num_tokens)} mask token(s)")
    device = next(iter(method.parameters()), torch.empty(0)).device
    span, num_windows = windows.num_frames, len(windows.starts)
    if context_clips is not None and context_clips.shape != clips.shape:
        raise ValueError(
            f"context_clips {tuple(context_clips.shape)} must match clips {tuple(clips.shape)}"
        )
    if clips.ndim != 5 or windows.starts[-1] + span > clips.shape[2]:
        raise ValueError(
            f"clips {tuple(clips.shape)} are not (N, C, T, H, W) clips of the {span}-frame "
            f"windows starting at {list(windows.starts)}"
        )
    stride = windows.starts[1] - windows.starts[0] if num_windows > 1 else 1
    clips_per_batch = max(1, batch_size // num_windows)

    def views(chunk: Tensor) -> Tensor:
        # (n, C, W, H, Wd, span) -> (n * W, C, span, H, Wd): window w of clip j is row j*W+w
        unfolded = chunk.to(device).unfold(2, span, stride)[:, :, :num_windows]
        return unfolded.permute(0, 2, 1, 5, 3, 4).flatten(0, 1).contiguous()

    was_training = method.training
    method.eval()
    out = []
    try:
        batches = range(0, len(clips), clips_per_batch)
        for i in progress_bar(batches, desc=desc, enabled=progress, unit="batch"):
            rows = slice(i, i + clips_per_batch)
            seen = None if context_clips is None else views(context_clips[rows])
            scores = window_surprise(
                method, views(clips[rows]), windows.context_frames, mask_id, seen
            )
            out.append(scores.reshape(-1, num_windows).cpu())
    finally:
        method.train(was_training)
    return torch.cat(out)


def context_use(own: Tensor, other: Tensor) -> float:
    """How much the predictor's surprise depends on what its context shows: the relative
    increase of the mean surprise when every window is predicted from another clip's context
    (``other``, :func:`surprise_curves` with ``context_clips``) instead of its own (``own``).

    A predictor that reads the context predicts its own clip better than a stranger's (use
    > 0); one whose predictions are the same whatever the context (use ~ 0) has a surprise
    that measures only how unusual the target frames are -- content, not expectation.
    """
    own_mean = float(torch.as_tensor(own, dtype=torch.float64).mean())
    other_mean = float(torch.as_tensor(other, dtype=torch.float64).mean())
    if not own_mean > 0:
        raise ValueError(f"context_use needs a positive mean surprise, got {own_mean}")
    return other_mean / own_mean - 1.0


def event_windows(windows: Windows, event_frames: Sequence[int] | np.ndarray) -> Tensor:
    """``(N, W)`` bool: the windows of each clip that predict its event frame ``e`` from a
    context before it (context ``[s, s + C)`` with ``s + C <= e``, ``e`` among the predicted
    frames ``[s + C, s + num_frames)``). Both twins of a pair show the same context there, so
    their surprises differ only by what each clip does next."""
    starts = torch.tensor(windows.starts)
    events = torch.as_tensor(np.asarray(event_frames, dtype=np.int64))[:, None]
    selected = (starts + windows.context_frames <= events) & (events < starts + windows.num_frames)
    missing = (~selected.any(1)).nonzero().flatten()
    if len(missing):
        raise ValueError(
            f"no window predicts event frame {int(events[missing[0]])} from a context before "
            f"it (windows start at {list(windows.starts)} with {windows.context_frames} context "
            "frames); use stride=1 or events later in the clip"
        )
    return selected


def clip_scores(curves: Tensor, score: str, selected: Tensor | None = None) -> Tensor:
    """``(N,)`` per-clip surprise: the max or mean of its window surprises ``(N, W)``, over
    all windows (``"max"``, ``"mean"``) or the ``selected`` ones (``"event_max"``,
    ``"event_mean"``; ``selected`` from :func:`event_windows`)."""
    if score not in SCORES:
        raise ValueError(f"score={score!r}: use one of {SCORES}")
    if score.startswith("event"):
        if selected is None:
            raise ValueError(f"score={score!r} needs the event windows (event_windows)")
        fill = -torch.inf if score == "event_max" else 0.0
        curves = curves.masked_fill(~selected, fill)
    if score.endswith("max"):
        return curves.max(1).values
    if selected is not None and score == "event_mean":
        return curves.sum(1) / selected.sum(1)
    return curves.mean(1)


def pairwise_accuracy(possible: Tensor | np.ndarray, impossible: Tensor | np.ndarray) -> float:
    """Relative accuracy: the fraction of pairs whose possible clip is less surprising than its
    impossible twin; a tie counts half (chance is 0.5 whatever the ties)."""
    p, q = np.asarray(possible, dtype=np.float64), np.asarray(impossible, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1 or not len(p):
        raise ValueError(f"need two equal 1-D score arrays, got {p.shape} and {q.shape}")
    return float(np.mean((p < q) + 0.5 * (p == q)))


def auroc(possible: Tensor | np.ndarray, impossible: Tensor | np.ndarray) -> float:
    """Area under the ROC curve of "impossible" (label 1) against "possible" (label 0), the
    score being the surprise: ``P(s_impossible > s_possible) + P(=) / 2`` over all
    (unpaired) clip pairs, i.e. the normalised Mann-Whitney U statistic."""
    p, q = np.asarray(possible, dtype=np.float64), np.asarray(impossible, dtype=np.float64)
    if not (len(p) and len(q)):
        raise ValueError("auroc needs at least one possible and one impossible score")
    ranks = _average_ranks(np.concatenate([p, q]))
    u = ranks[len(p) :].sum() - len(q) * (len(q) + 1) / 2
    return float(u / (len(p) * len(q)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    first = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = mean_rank[group]
    return ranks


def surprise_metrics(
    possible_curves: Tensor,
    impossible_curves: Tensor,
    events: Sequence[str],
    violations: Sequence[str] | None = None,
    selected: Tensor | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Pairwise accuracy and AUROC per clip score, event type and violation.

    Args:
        possible_curves, impossible_curves: ``(P, W)`` window surprises of matched pairs.
        events: ``(P,)`` event type of each pair.
        violations: optional ``(P,)`` finer label of each pair (e.g. what the impossible twin
            does: ``"disappears"``, ``"appears"``), reported inside its event.
        selected: optional ``(P, W)`` event windows of each pair (:func:`event_windows`);
            without them the ``"event ..."`` scores are left out.

    Returns:
        ``{score: {group: {"pairwise_accuracy", "auroc", "pairs"}}}`` for score in
        :data:`SCORES`; groups are the event types (first-seen order), each followed by its
        ``"event: violation"`` groups, then ``"all"``.
    """
    events = np.asarray(events).astype(str)
    groups: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(events.tolist()):
        groups[name] = events == name
        if violations is not None:
            fine = np.asarray(violations).astype(str)
            for sub in dict.fromkeys(fine[events == name].tolist()):
                groups[f"{name}: {sub}"] = (events == name) & (fine == sub)
    groups["all"] = np.ones(len(events), dtype=bool)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for score in SCORES if selected is not None else SCORES[:2]:
        p = clip_scores(possible_curves, score, selected).numpy()
        q = clip_scores(impossible_curves, score, selected).numpy()
        out[score] = {
            name: {
                "pairwise_accuracy": pairwise_accuracy(p[sel], q[sel]),
                "auroc": auroc(p[sel], q[sel]),
                "pairs": int(sel.sum()),
            }
            for name, sel in groups.items()
        }
    return out


def plot_surprise_pairs(
    path: str | Path,
    possible: np.ndarray,
    impossible: np.ndarray,
    event_frames: Sequence[int],
    titles: Sequence[str],
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    x: Sequence[int],
) -> Path:
    """A PNG with one row per pair: the surprise over time of the possible and the impossible
    twin for each model (one panel per model, event frame dotted), then the frames of both
    clips (event frame marked).

    Args:
        path: output ``.png``.
        possible, impossible: ``(R, T, H, W)`` frames in [0, 1] of the ``R`` pairs shown.
        event_frames: ``(R,)`` event frame of each pair.
        titles: ``(R,)`` row titles (e.g. the event type).
        curves: model name -> (possible ``(R, W)``, impossible ``(R, W)``) window surprises.
        x: ``(W,)`` time of each window (its first predicted frame).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, frames, models = len(titles), possible.shape[1], len(curves)
    fig, axes = plt.subplots(
        rows,
        models + 1,
        figsize=(3.2 * models + 8, 2.2 * rows),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * models + [2.6]},
    )
    for r in range(rows):
        for ax, (name, (pos, imp)) in zip(axes[r], curves.items(), strict=False):
            ax.plot(x, pos[r], "-o", color="tab:blue", ms=3, label="possible")
            ax.plot(x, imp[r], "-o", color="tab:red", ms=3, label="impossible")
            ax.axvline(event_frames[r], color="k", ls=":", lw=1)
            ax.set_xticks(list(x))
            ax.set_title(f"{titles[r]}, {name}", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[r][0].set_ylabel("surprise (L1)", fontsize=8)
        strip_ax = axes[r][-1]
        strip = np.concatenate([_strip(possible[r]), _strip(impossible[r])], axis=0)
        strip_ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        width, height = possible.shape[-1] + 1, possible.shape[-2] + 1
        strip_ax.axvline(event_frames[r] * width - 1, color="tab:orange", lw=1.5)
        strip_ax.set_xticks([(t + 0.5) * width for t in range(frames)], range(frames), fontsize=6)
        strip_ax.set_yticks([height / 2, height * 1.5], ["possible", "impossible"], fontsize=8)
        strip_ax.set_title(f"frames (event at {event_frames[r]})", fontsize=8)
    for ax in axes[-1][:-1]:
        ax.set_xlabel("first predicted frame of the window", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _strip(clip: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` -> ``(H + 1, T * (W + 1))``: frames side by side, 1-px grey separators."""
    padded = np.pad(clip, ((0, 0), (0, 1), (0, 1)), constant_values=0.5)
    return np.concatenate(list(padded), axis=1)
