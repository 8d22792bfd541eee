"""Intuitive-physics surprise: the possible/impossible benchmark, the sliding-window score,
the metrics, an oracle that must rank every impossible twin above its possible one, and the
``jepalab eval surprise`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jepalab.cli import main as cli_main
from jepalab.cli.surprise import SurpriseArgs, _context_check
from jepalab.cli.surprise import main as surprise_main
from jepalab.cli.train import train
from jepalab.data.moving_digits import MIN_WALL_ROOM, WALL_INTENSITY
from jepalab.data.physics import EVENTS, PhysicsBenchmark, make_physics_benchmark
from jepalab.eval.surprise import (
    SCORES,
    Windows,
    auroc,
    clip_scores,
    context_use,
    event_windows,
    future_masks,
    pairwise_accuracy,
    sliding_windows,
    surprise_curves,
    surprise_metrics,
    window_surprise,
)
from jepalab.masks.collator import MaskedBatch
from jepalab.methods.build import build_experiment
from jepalab.models.layers.patch_embed import TubeletEmbed
from jepalab.train.setup import run_dir_of

# 28 px leave room for an 8 px digit, a 2 px wall and MIN_WALL_ROOM on both sides of it.
SMALL = dict(clip_frames=8, canvas_size=28, digit_size=(6, 8), speed=(0.5, 1.5))


@pytest.fixture(scope="module")
def bench():
    return make_physics_benchmark(pairs_per_event=4, seed=3, **SMALL)


# -- the benchmark ----------------------------------------------------------------------------
@pytest.mark.parametrize("event", EVENTS)
def test_twins_are_identical_before_the_event_and_differ_from_it(bench, event):
    pairs = np.flatnonzero(bench.events == event)
    assert bench.reverse[pairs].tolist() == [False, True] * 4  # each pair, then its reverse
    for i in pairs:
        e = bench.event_frames[i]
        assert 3 <= e <= 5  # the default event range, the middle quarter of 8 frames
        np.testing.assert_array_equal(bench.possible[i, :e], bench.impossible[i, :e])
        assert np.abs(bench.possible[i, e] - bench.impossible[i, e]).max() > 0.05
    assert bench.possible.min() >= 0 and bench.possible.max() <= 1


@pytest.mark.parametrize("event", ["vanish", "teleport", "colour", "shape"])
def test_a_pair_and_its_reverse_show_the_same_frames_on_both_sides(bench, event):
    # IntPhys's matching: whatever follows (or precedes) the event is as often in a possible
    # clip as in an impossible one, so content alone cannot tell the sides apart.
    fwd, rev = np.flatnonzero(bench.events == event).reshape(-1, 2).T
    possible = np.stack([bench.possible[fwd], bench.possible[rev]], 1)  # (n, 2, T, H, W)
    impossible = np.stack([bench.impossible[fwd], bench.impossible[rev]], 1)
    same = (possible == impossible).all(axis=(-1, -2))  # (n, 2, T)
    crossed = (possible == impossible[:, ::-1]).all(axis=(-1, -2))
    assert (same | crossed).all()
    assert (bench.event_frames[fwd] == bench.event_frames[rev]).all()


def _wall_of(clip):
    """``(axis, first line, last line)`` of the wall of a ``(T, H, W)`` clip, or None: the
    rows/columns at the wall's grey level (or brighter, where a digit passes over it) in every
    frame."""
    for axis in (0, 1):
        lines = np.flatnonzero((clip >= WALL_INTENSITY - 1e-6).all(axis=(0, 2 - axis)))
        if len(lines):
            return axis, lines[0], lines[-1]
    return None


def _profiles(clip, axis, first, last):
    """``(T, L)`` ink along the wall's axis with the wall taken out, and ``(T,)`` ink drawn
    over the wall (above its grey level)."""
    bar = slice(first, last + 1)
    ink = clip.copy()
    on = (ink[:, bar] if axis == 0 else ink[:, :, bar]) - WALL_INTENSITY
    if axis == 0:
        ink[:, bar] = 0
    else:
        ink[:, :, bar] = 0
    return ink.sum(2 if axis == 0 else 1), on.clip(0).sum((1, 2))


@pytest.fixture(scope="module")
def walls():
    # 16 frames and the training data's 32 px canvas, 10-14 px digits, 1-3 px/frame
    return make_physics_benchmark(8, ["wall"], seed=5)


def test_wall_pairs_hold_the_same_things_and_only_the_motion_differs(walls):
    for possible, impossible, reverse, e in zip(
        walls.possible, walls.impossible, walls.reverse, walls.event_frames, strict=True
    ):
        np.testing.assert_array_equal(possible[:e], impossible[:e])
        if reverse:  # no wall in either clip: the impossible digit bounces off nothing
            assert _wall_of(possible) is None and _wall_of(impossible) is None
            continue
        # the same 2-px wall in both clips, as the training data draws it
        axis, first, last = _wall_of(possible)
        assert _wall_of(impossible) == (axis, first, last) and last - first + 1 == 2


def test_the_possible_digit_bounces_off_the_wall_and_the_impossible_one_passes_through(walls):
    canvas, came_out = walls.canvas_size, []
    for possible, impossible, reverse, e in zip(
        walls.possible, walls.impossible, walls.reverse, walls.event_frames, strict=True
    ):
        if reverse:
            continue
        axis, first, last = _wall_of(possible)
        ink, on_wall = _profiles(possible, axis, first, last)
        # the possible digit never touches the wall and stays on its side
        assert (on_wall == 0).all()
        near = slice(0, first) if ink[0, :first].sum() > 0 else slice(last + 1, canvas)
        outside = np.ones(canvas, dtype=bool)
        outside[near] = False
        assert (ink[:, outside] == 0).all()
        # ... with room to move (MIN_WALL_ROOM px between border, digit and wall; the ink
        # box of a sub-pixel position spans one pixel more than the digit)
        lines = np.arange(canvas)[near]
        inked = ink[:, near] > 0
        extent = np.where(inked, lines, -1).max(1) - np.where(inked, lines, canvas).min(1) + 1
        assert len(lines) - extent.max() >= MIN_WALL_ROOM - 1
        # the impossible digit is drawn over the wall after the event, never before, and
        # mostly comes out on the far side within the clip
        imp_ink, imp_on_wall = _profiles(impossible, axis, first, last)
        assert (imp_on_wall[:e] == 0).all() and imp_on_wall[e:].max() > 0
        came_out.append(imp_ink[:, outside].sum() > 0)
    assert np.mean(came_out) >= 0.5, came_out


def test_benchmark_is_deterministic_by_seed_and_pairs_do_not_depend_on_the_count(bench):
    again = make_physics_benchmark(pairs_per_event=4, seed=3, **SMALL)
    np.testing.assert_array_equal(again.impossible, bench.impossible)
    np.testing.assert_array_equal(again.event_frames, bench.event_frames)
    other = make_physics_benchmark(pairs_per_event=4, seed=4, **SMALL)
    assert not np.array_equal(other.possible, bench.possible)
    fewer = make_physics_benchmark(pairs_per_event=2, events=["shape"], seed=3, **SMALL)
    np.testing.assert_array_equal(fewer.impossible, bench.impossible[bench.events == "shape"][:4])
    forward = make_physics_benchmark(pairs_per_event=4, seed=3, balanced=False, **SMALL)
    np.testing.assert_array_equal(forward.impossible, bench.impossible[~bench.reverse])


def test_npz_round_trip(bench, tmp_path):
    path = bench.save(tmp_path / "physics.npz")
    loaded = PhysicsBenchmark.load(path)
    for key in ("possible", "impossible", "event_frames", "reverse"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(bench, key))
    assert loaded.events.tolist() == bench.events.tolist()
    assert loaded.violations()[:2] == ["disappears", "appears"]
    assert loaded.config == bench.config and loaded.config["seed"] == 3
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a physics benchmark"):
        PhysicsBenchmark.load(tmp_path / "other.npz")


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="leave 'wall' out"):
        make_physics_benchmark(1, ["wall"], clip_frames=8, canvas_size=16, digit_size=(6, 8))
    # 28 px hold an 8 px digit and MIN_WALL_ROOM on both sides of a 2 px wall, not of a 6 px one
    make_physics_benchmark(1, ["wall"], wall_width=2, **SMALL)
    with pytest.raises(ValueError, match="MIN_WALL_ROOM"):
        make_physics_benchmark(1, ["wall"], wall_width=6, **SMALL)
    with pytest.raises(ValueError, match="choose one or more"):
        make_physics_benchmark(1, ["melt"])
    with pytest.raises(ValueError, match="event_frames"):
        make_physics_benchmark(1, ["vanish"], clip_frames=8, event_frames=(0, 3))


# -- the metrics ------------------------------------------------------------------------------
def test_auroc_and_pairwise_accuracy_on_hand_made_scores():
    low, high = np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5, 0.6])
    assert auroc(low, high) == 1.0 and pairwise_accuracy(low, high) == 1.0
    assert auroc(high, low) == 0.0 and pairwise_accuracy(high, low) == 0.0
    assert auroc(low, low) == 0.5 and pairwise_accuracy(low, low) == 0.5
    assert pairwise_accuracy([1.0, 1.0, 2.0, 3.0], [2.0, 1.0, 1.0, 4.0]) == 0.625
    # AUROC is P(impossible > possible) + P(tie) / 2 over all unpaired clips
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 5, 40).astype(float), rng.integers(1, 6, 30).astype(float)
    brute = ((q[None] > p[:, None]) + 0.5 * (q[None] == p[:, None])).mean()
    assert auroc(p, q) == pytest.approx(brute)


def test_metrics_per_event_and_overall():
    pos = torch.tensor([[0.1, 0.2], [0.3, 0.1], [0.5, 0.5]])
    imp = torch.tensor([[0.1, 0.9], [0.2, 0.1], [0.5, 0.5]])
    metrics = surprise_metrics(pos, imp, ["a", "b", "b"], ["x", "y", "z"])
    assert list(metrics["max"]) == ["a", "a: x", "b", "b: y", "b: z", "all"]
    assert metrics["max"]["b: y"]["pairwise_accuracy"] == 0.0
    assert metrics["max"]["a"]["pairwise_accuracy"] == 1.0
    assert metrics["max"]["b"] == {"pairwise_accuracy": 0.25, "auroc": 0.375, "pairs": 2}
    assert metrics["mean"]["b"]["pairwise_accuracy"] == 0.25  # 0.2 > 0.15, then a tie
    assert metrics["max"]["all"]["pairs"] == 3
    assert list(metrics) == ["max", "mean"]  # the event scores need the event windows
    selected = torch.tensor([[False, True], [True, False], [True, True]])
    metrics = surprise_metrics(pos, imp, ["a", "b", "b"], selected=selected)
    assert list(metrics) == ["max", "mean", "event_max", "event_mean"]
    assert metrics["event_max"]["b"]["pairwise_accuracy"] == 0.25  # 0.3 > 0.2, then a tie


def test_event_windows_predict_the_event_from_a_context_before_it():
    windows = Windows(tuple(range(9)), num_frames=8, context_frames=4)  # 16 frames, stride 1
    selected = event_windows(windows, [4, 6, 11, 7])
    # predicted frames [s + 4, s + 8) must hold e: s in [e - 7, e - 4]
    assert [np.flatnonzero(row).tolist() for row in selected] == [
        [0],
        [0, 1, 2],
        [4, 5, 6, 7],
        [0, 1, 2, 3],
    ]
    curves = torch.arange(36.0).reshape(4, 9)
    assert clip_scores(curves, "event_max", selected).tolist() == [0, 11, 25, 30]
    assert clip_scores(curves, "event_mean", selected).tolist() == [0, 10, 23.5, 28.5]
    assert clip_scores(curves, "max", selected).tolist() == [8, 17, 26, 35]
    with pytest.raises(ValueError, match="needs the event windows"):
        clip_scores(curves, "event_max")
    # with the tubelet stride an event at frame 3 has no such window: it is in the context
    stride2 = Windows((0, 2, 4, 6, 8), num_frames=8, context_frames=4)
    assert event_windows(stride2, [11]).tolist() == [[False, False, True, True, False]]
    with pytest.raises(ValueError, match="no window predicts event frame 3"):
        event_windows(stride2, [5, 3])


# -- an oracle: exact for the possible world --------------------------------------------------
class PixelTubelets(TubeletEmbed):
    """A "context encoder" whose features are the raw pixels of each 2x4x4 tubelet."""

    def forward(self, x, keep=None):
        tokens = self.patchify(x)
        if keep is None:
            return tokens
        rows = keep.flat_index(tokens.shape[1], seqs_per_row=keep.num_seqs // len(x))
        return tokens.flatten(0, 1)[rows]


class PossibleWorldOracle(nn.Module):
    """Features are raw tubelet pixels; the predictor has memorised, for every context of the
    possible clips, the layer-normed pixels that follow it (and predicts zeros for any other
    context). Its surprise is exactly 0 on possible clips by construction."""

    def __init__(self, canvas: int) -> None:
        super().__init__()
        self.context_encoder = PixelTubelets(canvas, 4, num_frames=4, tubelet_size=2, in_chans=1)
        self.predictor = self._predict
        self.memory: dict[bytes, torch.Tensor] = {}

    def targets(self, batch: MaskedBatch) -> torch.Tensor:
        tokens = self.context_encoder(batch.images)
        b, n, d = tokens.shape
        index = batch.masks.targets.flat_index(n)
        return F.layer_norm(tokens.reshape(b * n, d)[index], (d,))

    def encode_context(self, images: torch.Tensor, keep) -> torch.Tensor:
        return self.context_encoder(images, keep=keep)

    def last_level(self, features: torch.Tensor) -> torch.Tensor:
        return features  # one level

    def memorise(self, clips: torch.Tensor, windows) -> None:
        per_step = int(np.prod(self.context_encoder.grid_size[1:]))
        split = windows.context_frames // self.context_encoder.tubelet_size * per_step
        for start in windows.starts:
            tokens = self.context_encoder(clips[:, :, start : start + windows.num_frames])
            for context, future in zip(tokens[:, :split], tokens[:, split:], strict=True):
                self.memory[context.numpy().tobytes()] = F.layer_norm(future, future.shape[-1:])

    def _predict(self, context, context_ragged, targets, mask_ids=None):
        out = []
        contexts = context.split(context_ragged.lengths.tolist())
        for ctx, length in zip(contexts, targets.lengths.tolist(), strict=True):
            guess = self.memory.get(ctx.numpy().tobytes())
            out.append(torch.zeros(length, ctx.shape[1]) if guess is None else guess)
        return torch.cat(out)


def test_an_oracle_of_the_possible_world_finds_every_impossible_twin_more_surprising(bench):
    oracle = PossibleWorldOracle(bench.canvas_size)
    windows = sliding_windows(oracle.context_encoder, bench.clip_frames)
    assert windows.starts == (0, 1, 2, 3, 4) and windows.first_predicted == [2, 3, 4, 5, 6]
    oracle.memorise(bench.clips("possible"), windows)
    possible = surprise_curves(oracle, bench.clips("possible"), windows, batch_size=5)
    impossible = surprise_curves(oracle, bench.clips("impossible"), windows, batch_size=5)
    assert (possible == 0).all()
    assert (impossible.max(1).values > 1e-3).all()
    selected = event_windows(windows, bench.event_frames)
    metrics = surprise_metrics(possible, impossible, bench.events, selected=selected)
    for score in SCORES:
        for group, values in metrics[score].items():
            assert values["pairwise_accuracy"] == 1.0 and values["auroc"] == 1.0, (score, group)
    # windows that end before the event cannot tell the twins apart
    ends = np.asarray(windows.starts) + windows.num_frames
    blind = torch.from_numpy(ends[None] <= bench.event_frames[:, None])
    assert (impossible[blind] == 0).all()


# -- the sliding windows on a real (random) V-JEPA --------------------------------------------
def test_window_surprise_is_the_training_loss_with_a_future_mask(tiny_video_cfg):
    method = build_experiment(tiny_video_cfg).method.eval()
    windows = torch.randn(3, 1, 4, 16, 16)
    per_window = window_surprise(method, windows, context_frames=2)
    masks = future_masks(method.context_encoder.grid_size, 1, 3, mask_id=0)
    batch = MaskedBatch(windows, torch.full((3,), -1), 0, 0, masks)
    with torch.no_grad():
        loss = method(batch).loss
    torch.testing.assert_close(per_window.mean(), loss)
    assert masks.context.lengths.tolist() == [16] * 3  # one tubelet step of a 4x4 grid
    assert masks.targets.lengths.tolist() == [16] * 3


def test_sliding_windows_give_finite_curves_without_leaks(tiny_video_cfg):
    method = build_experiment(tiny_video_cfg).method
    windows = sliding_windows(method.context_encoder, clip_frames=8, stride=2)
    assert windows.starts == (0, 2, 4)
    clips = torch.randn(3, 1, 8, 16, 16)
    curves = surprise_curves(method, clips, windows, batch_size=64)
    assert curves.shape == (3, 3) and torch.isfinite(curves).all() and (curves > 0).all()
    torch.testing.assert_close(surprise_curves(method, clips, windows, batch_size=1), curves)
    # window 1 spans frames 2..5: frames outside it must not change its surprise
    outside = clips.clone()
    outside[:, :, :2] = torch.randn_like(outside[:, :, :2])
    outside[:, :, 6:] = torch.randn_like(outside[:, :, 6:])
    changed = surprise_curves(method, outside, windows)
    torch.testing.assert_close(changed[:, 1], curves[:, 1], rtol=0, atol=1e-6)
    assert not torch.allclose(changed[:, 0], curves[:, 0])
    inside = clips.clone()
    inside[:, :, 4] += 1.0  # a predicted frame of window 1
    assert not torch.allclose(surprise_curves(method, inside, windows)[:, 1], curves[:, 1])
    with pytest.raises(ValueError, match="multiple of the tubelet"):
        sliding_windows(method.context_encoder, 8, context_frames=3)
    with pytest.raises(ValueError, match="shorter than"):
        sliding_windows(method.context_encoder, 2)


class _MeanContextPredictor(nn.Module):
    """Predicts every target token of a window as the mean of its context features."""

    def forward(self, features, context, targets, mask_ids=None):
        per_window = features.reshape(context.num_seqs, -1, features.shape[-1]).mean(1)
        return per_window.repeat_interleave(targets.lengths, 0)


def test_context_use_is_zero_when_the_predictor_ignores_the_context(tiny_video_cfg):
    method = build_experiment(tiny_video_cfg).method.eval()
    windows = sliding_windows(method.context_encoder, clip_frames=6, stride=2)
    clips = torch.randn(4, 1, 6, 16, 16)
    own = surprise_curves(method, clips, windows)
    # seeing its own context through context_clips is the plain surprise, exactly
    torch.testing.assert_close(surprise_curves(method, clips, windows, context_clips=clips), own)
    # clips are scored independently: permuting clips and contexts together permutes curves
    torch.testing.assert_close(
        surprise_curves(method, clips.roll(1, 0), windows, context_clips=clips.roll(1, 0)),
        own.roll(1, 0),
    )
    # A predictor that reads its context (each target predicted as the mean context feature)
    # scores differently from a stranger's context. (A real one at init attends nearly
    # uniformly and barely notices: its context use is ~1e-7.)
    real = method.predictor
    method.predictor = _MeanContextPredictor()
    reader_own = surprise_curves(method, clips, windows)
    reader_other = surprise_curves(method, clips, windows, context_clips=clips.roll(1, 0))
    assert not torch.allclose(reader_own, reader_other)
    method.predictor = real
    with torch.no_grad():  # a predictor blind to the context: its input projection is zero
        method.predictor.predictor_embed.weight.zero_()
        method.predictor.predictor_embed.bias.zero_()
    blind_own = surprise_curves(method, clips, windows)
    blind_other = surprise_curves(method, clips, windows, context_clips=clips.roll(1, 0))
    assert context_use(blind_own, blind_other) == pytest.approx(0.0, abs=1e-6)
    assert context_use(torch.ones(3), torch.full((3,), 1.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must match"):
        surprise_curves(method, clips, windows, context_clips=clips[:2])


def test_the_command_predicts_each_possible_clip_from_the_next_clips_context(tiny_video_cfg):
    # The CLI's control, checked with a predictor that does read its context: a real tiny one
    # barely does, so the end-to-end test below cannot tell which context it was given.
    method = build_experiment(tiny_video_cfg).method.eval()
    method.predictor = _MeanContextPredictor()
    bench = make_physics_benchmark(
        2, ["vanish", "teleport"], clip_frames=6, canvas_size=16, digit_size=(6, 8), seed=1
    )
    windows = sliding_windows(method.context_encoder, bench.clip_frames)
    clips = bench.clips("possible")
    own = surprise_curves(method, clips, windows)
    check = _context_check(
        method, bench, windows, SurpriseArgs(ckpt="unused", progress=False), "stub", own
    )
    partner = surprise_curves(method, clips, windows, context_clips=clips.roll(-1, 0))
    assert check["own"] == pytest.approx(float(own.double().mean()))
    assert check["other"] == pytest.approx(float(partner.double().mean()))
    assert check["context_use"] == pytest.approx(context_use(own, partner))
    assert abs(check["context_use"]) > 1e-3  # the stub notices the stranger's context


# -- the command ------------------------------------------------------------------------------
@pytest.fixture
def tiny_run(tiny_video_cfg):
    tiny_video_cfg.trainer.max_steps = tiny_video_cfg.trainer.ckpt_every = 2
    tiny_video_cfg.eval.probe = "none"
    train(tiny_video_cfg)
    return run_dir_of(tiny_video_cfg)


def test_cli_end_to_end(tiny_run, tmp_path, capsys):
    args = [
        f"ckpt={tiny_run}",
        "pairs=2",
        "events=[vanish,teleport,colour,shape]",  # a 16 px canvas has no room for a wall
        "clip_frames=8",
        "progress=false",
        f"write_benchmark={tmp_path / 'bench.npz'}",
    ]
    assert surprise_main(args) == 0
    table = capsys.readouterr().out
    assert "teleport" in table and "untrained" in table and "trained (step 2)" in table
    report = json.loads((tiny_run / "eval" / "surprise.json").read_text())
    assert set(report["metrics"]) == {"trained (step 2)", "untrained"}
    assert report["metrics"]["untrained"]["max"]["all"]["pairs"] == 16  # 2 x 2 directions x 4
    assert report["metrics"]["untrained"]["max"]["vanish: appears"]["pairs"] == 2
    assert list(report["metrics"]["untrained"]) == list(SCORES)
    assert report["windows"]["starts"] == [0, 1, 2, 3, 4]  # stride 1 by default
    assert len(report["curves"]["untrained"]["possible"][0]) == 5
    assert (tiny_run / "eval" / "surprise_pair.png").stat().st_size > 1000
    assert "Context use" in table
    for name, check in report["context_check"].items():  # the control on the possible clips
        possible = np.asarray(report["curves"][name]["possible"])
        assert check["own"] == pytest.approx(possible.mean(), rel=1e-5)
        assert check["context_use"] == pytest.approx(check["other"] / check["own"] - 1, abs=1e-9)
    # the saved benchmark scores the same
    out = tmp_path / "again.json"
    reuse = [f"ckpt={tiny_run}", f"benchmark={tmp_path / 'bench.npz'}", f"out={out}"]
    assert (
        surprise_main(
            [*reuse, "progress=false", "baseline=false", "score=event_mean", "context_check=false"]
        )
        == 0
    )
    assert "clip score: event_mean over windows (mean in brackets)" in capsys.readouterr().out
    again = json.loads(out.read_text())
    assert again["metrics"]["trained (step 2)"] == report["metrics"]["trained (step 2)"]
    assert again["context_check"] == {}


def test_cli_rejects_bad_keys_and_explains_itself(tiny_run, capsys):
    assert cli_main(["eval", "surprise", f"ckpt={tiny_run}", "pairz=3"]) == 2
    assert "pairz" in capsys.readouterr().err
    assert cli_main(["eval", "surprise", f"ckpt={tiny_run}", "events=[melt]"]) == 2
    assert cli_main(["eval", "surprise", f"ckpt={tiny_run}", "score=median"]) == 2
    assert "event_mean" in capsys.readouterr().err
    assert cli_main(["eval", "surprise", "--help"]) == 0
    assert "context_frames" in capsys.readouterr().out
