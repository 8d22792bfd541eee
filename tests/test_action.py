"""Action-conditioned world model: frame-causal attention, the AC predictor, the AC method."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jepalab.envs import TwoRooms
from jepalab.kernels.attention import attention
from jepalab.methods.action import ActionConditioned, encode_frames
from jepalab.models import ActionConditionedPredictor, VisionTransformer


# -- frame-causal attention -------------------------------------------------------------------
@pytest.mark.parametrize("block", [1, 3, 12])
def test_block_causal_sdpa_equals_the_masked_reference(block):
    q, k, v = (torch.randn(2, 12, 3, 8, dtype=torch.float64) for _ in range(3))
    fast = attention(q, k, v, causal_block=block, backend="sdpa")
    ref = attention(q, k, v, causal_block=block, backend="math")
    torch.testing.assert_close(fast, ref)
    if block == 12:  # one block: plain attention
        torch.testing.assert_close(fast, attention(q, k, v, backend="math"))


def test_block_causal_queries_never_see_later_blocks():
    q, k, v = (torch.randn(1, 8, 2, 4, dtype=torch.float64) for _ in range(3))
    out = attention(q, k, v, causal_block=4)
    k2, v2 = k.clone(), v.clone()
    k2[:, 4:] += 1.0
    v2[:, 4:] -= 2.0
    out2 = attention(q, k2, v2, causal_block=4)
    torch.testing.assert_close(out[:, :4], out2[:, :4], rtol=0, atol=0)
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_block_causal_rejects_a_length_that_is_not_a_multiple():
    q = torch.randn(1, 10, 2, 4)
    with pytest.raises(ValueError, match="causal_block=4"):
        attention(q, q, q, causal_block=4)


# -- predictor --------------------------------------------------------------------------------
def _predictor(state_dim: int = 3, **kw) -> ActionConditionedPredictor:
    torch.manual_seed(0)
    kwargs = dict(grid_size=(2, 3), encoder_dim=16, action_dim=2, state_dim=state_dim)
    kwargs.update(embed_dim=32, depth=2, num_heads=4)
    kwargs.update(kw)
    return ActionConditionedPredictor(**kwargs).double()


def _inputs(b=2, t=4, n=6, d=16, s=3):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(b, t, n, d, generator=g, dtype=torch.float64)
    a = torch.randn(b, t, 2, generator=g, dtype=torch.float64)
    st = torch.randn(b, t, s, generator=g, dtype=torch.float64)
    return z, a, st


def test_predictor_shapes_and_token_layout():
    p = _predictor()
    z, a, s = _inputs()
    assert p.tokens_per_step == 1 + 1 + 6  # [action, state, 6 patches]
    assert p(z, a, s).shape == z.shape
    assert _predictor(state_dim=0).tokens_per_step == 7


@pytest.mark.parametrize("changed", ["frames", "actions", "states"])
@pytest.mark.parametrize("t", [0, 1, 2])
def test_predictor_is_frame_causal(changed, t):
    """Changing step t+1's inputs never changes the outputs at steps <= t."""
    p = _predictor()
    z, a, s = _inputs()
    out = p(z, a, s)
    z2, a2, s2 = z.clone(), a.clone(), s.clone()
    {"frames": z2, "actions": a2, "states": s2}[changed][:, t + 1 :] += 1.0
    out2 = p(z2, a2, s2)
    torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1], rtol=0, atol=0)
    assert (out2[:, t + 1 :] - out[:, t + 1 :]).abs().max() > 1e-6


def test_predictor_sdpa_equals_the_masked_math_reference():
    p = _predictor()
    z, a, s = _inputs()
    fast = p(z, a, s)
    for blk in p.predictor_blocks:
        blk.attn.backend = "math"
    torch.testing.assert_close(p(z, a, s), fast)


def test_cached_rollout_equals_recomputing_the_whole_sequence():
    p = _predictor()
    z, a, s = _inputs(t=5)
    rolled = p.rollout(z[:, 0], a, s)
    frames = [z[:, 0]]
    for t in range(5):
        step = p(torch.stack(frames, 1), a[:, : t + 1], s[:, : t + 1])
        frames.append(step[:, -1])
    torch.testing.assert_close(rolled, torch.stack(frames[1:], 1))
    # the first rollout step is the teacher-forced prediction of frame 1
    torch.testing.assert_close(rolled[:, 0], p(z, a, s)[:, 0])


def test_predictor_demands_states_when_built_with_them():
    p = _predictor()
    z, a, _ = _inputs()
    with pytest.raises(ValueError, match="needs states"):
        p(z, a, None)
    with pytest.raises(ValueError, match="actions"):
        p(z, a[:, :-1], None)


# -- method -----------------------------------------------------------------------------------
def _two_rooms_batch(batch=16, steps=5, seed=0, img=16):
    """Random-walk windows rendered by the Two-Rooms world, downsampled to ``img`` px."""
    world = TwoRooms()
    rng = np.random.default_rng(seed)
    pos = world.sample_positions(rng, batch)
    actions = world.clip_actions(rng.normal(0, 2.0, size=(batch, steps - 1, 2)))
    path = world.rollout(pos, actions)  # (B, T, 2)
    frames = torch.from_numpy(world.render(path)).float().div(255)[:, :, None]
    frames = torch.nn.functional.avg_pool2d(frames.flatten(0, 1), 64 // img).unflatten(
        0, (batch, steps)
    )
    return SimpleNamespace(
        frames=frames,
        actions=torch.from_numpy(actions).float(),
        states=torch.from_numpy(path).float(),
    )


def _method(**kw) -> ActionConditioned:
    torch.manual_seed(0)
    encoder = VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2
    )
    predictor = ActionConditionedPredictor(
        (4, 4), 32, action_dim=2, state_dim=2 if kw.get("use_states") else 0,
        embed_dim=32, depth=2, num_heads=2,
    )
    return ActionConditioned(encoder, predictor, **kw)


@pytest.mark.parametrize("use_states", [False, True])
def test_teacher_forcing_and_rollout_losses_decrease(use_states):
    method = _method(auto_steps=3, use_states=use_states)
    encoder_before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    optim = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=2e-3)
    batch = _two_rooms_batch()
    history = []
    for _ in range(40):
        out = method(batch)
        optim.zero_grad()
        out.loss.backward()
        optim.step()
        m = out.metrics
        history.append((float(m["loss_teacher_forcing"]), float(m["loss_rollout"])))
    first, last = np.mean(history[:3], 0), np.mean(history[-3:], 0)
    assert last[0] < 0.7 * first[0] and last[1] < 0.7 * first[1], (first, last)
    # the frozen encoder is untouched and has no gradients
    for k, v in method.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    assert all(p.grad is None for p in method.encoder.parameters())


def test_loss_is_teacher_forcing_plus_rollout_and_matches_a_direct_computation():
    method = _method(auto_steps=2).double()
    batch = _two_rooms_batch(batch=4)
    batch.frames, batch.actions = batch.frames.double(), batch.actions.double()
    out = method(batch)
    z = encode_frames(method.encoder, batch.frames)
    teacher = method.predictor(z[:, :-1], batch.actions)
    tf = (teacher - z[:, 1:]).abs().mean()
    rolled = method.predictor.rollout(z[:, 0], batch.actions[:, :2])
    ro = (rolled - z[:, 1:3]).abs().mean()
    torch.testing.assert_close(out.loss, tf + ro)
    # features are layer-normed per token
    torch.testing.assert_close(z.mean(-1), torch.zeros_like(z.mean(-1)), atol=1e-6, rtol=0)


def test_partially_trainable_encoder_trains_only_its_last_blocks():
    method = _method(trainable_encoder_blocks=1)
    out = method(_two_rooms_batch(batch=4))
    out.loss.backward()
    enc = method.encoder
    assert all(p.grad is not None for p in enc.blocks[-1].parameters())
    assert all(p.grad is not None for p in enc.norm.parameters())
    assert all(p.grad is None for p in enc.blocks[0].parameters())
    assert enc.patch_embed.proj.weight.grad is None
    with pytest.raises(ValueError, match="trainable_encoder_blocks=5"):
        _method(trainable_encoder_blocks=5)


def test_rollout_longer_than_the_window_is_a_clear_error():
    method = _method(auto_steps=6)
    with pytest.raises(ValueError, match="auto_steps=6"):
        method(_two_rooms_batch(steps=5))


def test_video_encoder_embeds_single_frames_as_one_tubelet():
    torch.manual_seed(0)
    video = VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2,
        num_frames=2, tubelet_size=2,
    )
    frames = torch.rand(2, 3, 1, 16, 16)
    z = encode_frames(video, frames)
    assert z.shape == (2, 3, 16, 32)
    expected = video(frames[0, 1][None, :, None].expand(-1, -1, 2, -1, -1))
    torch.testing.assert_close(z[0, 1], torch.nn.functional.layer_norm(expected[0], (32,)))


# -- the model as a planning energy -----------------------------------------------------------
@pytest.mark.parametrize("energy", ["final", "sum", "min"])
def test_latent_energy_scores_all_candidates_in_one_batched_rollout(energy):
    from jepalab.planning.world_model import LatentWorldModel

    method = _method()
    world = TwoRooms()
    model = LatentWorldModel(method, mean=0.05, std=0.15, energy=energy)
    # 64x64 renders, but the tiny encoder takes 16x16: feed it 16x16 frames
    obs = world.render(np.array([20.0, 30.0]))[::4, ::4]
    goal = world.render(np.array([45.0, 30.0]))[::4, ::4]
    calls = []
    original = method.predictor.rollout

    def counting_rollout(*args, **kw):
        calls.append(args[1].shape)
        return original(*args, **kw)

    method.predictor.rollout = counting_rollout
    energy_fn = model.make_energy(obs, goal)
    actions = torch.randn(7, 3, 2)
    energies = energy_fn(actions)
    assert energies.shape == (7,) and calls == [(7, 3, 2)]
    z0, zg = model.encode(obs), model.encode(goal)
    distance = (original(z0.expand(7, -1, -1), actions) - zg).abs().mean((-2, -1))
    expected = {"final": distance[:, -1], "sum": distance.sum(1), "min": distance.amin(1)}
    torch.testing.assert_close(energies, expected[energy])
    frame = model.frames(obs)
    assert frame.shape == (1, 16, 16)
    torch.testing.assert_close(frame.mean(), torch.tensor(float(obs.mean()) / 255 - 0.05) / 0.15)
