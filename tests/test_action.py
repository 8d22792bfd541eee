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
        step=0,
    )


def _method(**kw) -> ActionConditioned:
    torch.manual_seed(0)
    encoder = VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2
    )
    predictor = ActionConditionedPredictor(
        (4, 4),
        32,
        action_dim=2,
        state_dim=2 if kw.get("use_states") else 0,
        embed_dim=32,
        depth=2,
        num_heads=2,
    )
    return ActionConditioned(encoder, predictor, **kw)


def _fit(method, batch, keys, steps=40, lr=2e-3):
    """AdamW steps on one batch; the metrics ``keys`` of every step and the last output."""
    optim = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr)
    history = []
    for _ in range(steps):
        out = method(batch)
        optim.zero_grad()
        out.loss.backward()
        optim.step()
        history.append([float(out.metrics[k]) for k in keys])
    return history, out


@pytest.mark.parametrize("use_states", [False, True])
def test_teacher_forcing_and_rollout_losses_decrease(use_states):
    method = _method(auto_steps=3, use_states=use_states)
    encoder_before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    history, _ = _fit(method, _two_rooms_batch(), ("loss_teacher_forcing", "loss_rollout"))
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
        img_size=16,
        patch_size=4,
        in_chans=1,
        embed_dim=32,
        depth=1,
        num_heads=2,
        num_frames=2,
        tubelet_size=2,
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


@pytest.mark.parametrize("energy", ["final", "sum", "min"])
def test_held_actions_roll_out_hold_model_steps_per_planned_action(energy):
    from jepalab.planning.world_model import LatentWorldModel

    method = _method()
    world = TwoRooms()
    model = LatentWorldModel(method, mean=0.05, std=0.15, energy=energy, hold=2)
    obs = world.render(np.array([20.0, 30.0]))[::4, ::4]
    goal = world.render(np.array([45.0, 30.0]))[::4, ::4]
    actions = torch.randn(5, 3, 2)
    energies = model.make_energy(obs, goal)(actions)
    # by hand: every planned action a becomes two model steps of a / 2; the energy reads the
    # predictions at the planned steps (model steps 2, 4, 6)
    steps = torch.stack([actions / 2, actions / 2], dim=2).reshape(5, 6, 2)
    z0, zg = model.encode(obs), model.encode(goal)
    predicted = method.predictor.rollout(z0.expand(5, -1, -1), steps)[:, [1, 3, 5]]
    distance = (predicted - zg).abs().mean((-2, -1))
    expected = {"final": distance[:, -1], "sum": distance.sum(1), "min": distance.amin(1)}
    torch.testing.assert_close(energies, expected[energy])
    with pytest.raises(ValueError, match="hold"):
        LatentWorldModel(method, hold=0)


# -- one pooled latent per frame, trained end to end (LeWorldModel / PLDM) --------------------
def _pooled_method(**kw) -> ActionConditioned:
    from jepalab.methods.regularizers import SIGReg

    torch.manual_seed(0)
    encoder = VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2
    )
    predictor = ActionConditionedPredictor(
        (1, 1), 32, action_dim=2, embed_dim=32, depth=2, num_heads=2
    )
    kwargs = dict(
        auto_steps=3,
        trainable_encoder_blocks=-1,
        frame_pooling="mean",
        regularizer=SIGReg(num_slices=64),
        regularizer_weight=0.1,
    )
    kwargs.update(kw)
    return ActionConditioned(encoder, predictor, **kwargs)


def test_pooled_latent_is_the_mean_of_the_encoder_tokens():
    method = _pooled_method().double()
    frames = _two_rooms_batch(batch=3, steps=4).frames.double()
    z = method.encode(frames)  # training mode: standardised over the 12 frames
    assert z.shape == (3, 4, 1, 32)
    tokens = method.encoder(frames.flatten(0, 1)).unflatten(0, (3, 4))
    pooled = tokens.mean(2)
    mean, var = pooled.mean((0, 1)), pooled.var((0, 1), unbiased=False)
    torch.testing.assert_close(z[:, :, 0], (pooled - mean) / (var + 1e-5).sqrt())
    # evaluation (planning): the running statistics, one image at a time
    method.eval()
    single = method.encode(frames[:1, :1])
    bn = method.latent_norm
    expected = (pooled[0, 0] - bn.running_mean) / (bn.running_var + 1e-5).sqrt()
    torch.testing.assert_close(single[0, 0, 0], expected)


def test_target_grad_trains_the_encoder_through_the_targets_too():
    batch = _two_rooms_batch(batch=4)
    grads = {}
    for target_grad in (False, True):
        method = _pooled_method(target_grad=target_grad, regularizer_weight=0.0)
        method(batch).loss.backward()
        grads[target_grad] = method.encoder.patch_embed.proj.weight.grad.clone()
    assert grads[False].abs().sum() > 0  # through the predictor's inputs
    assert not torch.allclose(grads[False], grads[True])  # and, with target_grad, the targets
    # and a direct computation of the end-to-end loss gives the same gradient
    method = _pooled_method(target_grad=True, regularizer_weight=0.0)
    z = method.encode(batch.frames)
    teacher = method.predictor(z[:, :-1], batch.actions)
    rolled = method.predictor.rollout(z[:, 0], batch.actions[:, :3])
    loss = (teacher - z[:, 1:]).abs().mean() + (rolled - z[:, 1:4]).abs().mean()
    loss.backward()
    torch.testing.assert_close(method.encoder.patch_embed.proj.weight.grad, grads[True])


def test_pooled_end_to_end_training_spreads_the_latents_and_learns_the_dynamics():
    method = _pooled_method(target_grad=True)
    batch = _two_rooms_batch(batch=32, steps=5)
    history, out = _fit(method, batch, ("sigreg", "loss_teacher_forcing"))
    first, last = np.mean(history[:3], 0), np.mean(history[-3:], 0)
    assert last[0] < 0.5 * first[0], (first, last)  # SIGReg keeps the latents from collapse
    assert float(out.metrics["target_std"]) > 0.1
    # the prediction error is below copying the previous latent
    assert float(out.metrics["loss_teacher_forcing"]) < float(out.metrics["copy_baseline"])


def test_pooling_and_target_grad_are_checked():
    with pytest.raises(ValueError, match="frame_pooling='max'"):
        _pooled_method(frame_pooling="max")
    with pytest.raises(ValueError, match="grid_size=\\(1, 1\\)"):
        _method(frame_pooling="mean")
    with pytest.raises(ValueError, match="target_grad=true"):
        _pooled_method(target_grad=True, regularizer=None)
    with pytest.raises(ValueError, match="frozen"):
        _pooled_method(target_grad=True, trainable_encoder_blocks=0)


def test_pldm_terms_add_smoothness_and_inverse_dynamics_to_the_loss():
    batch = _two_rooms_batch(batch=4)
    method = _pooled_method(
        target_grad=True,
        regularizer_weight=0.0,
        smoothness_weight=0.3,
        inverse_dynamics_weight=0.7,
    ).double()
    batch.frames, batch.actions = batch.frames.double(), batch.actions.double()
    out = method(batch)
    torch.manual_seed(0)
    z = method.encode(batch.frames)
    teacher = method.predictor(z[:, :-1], batch.actions)
    rolled = method.predictor.rollout(z[:, 0], batch.actions[:, :3])
    prediction = (teacher - z[:, 1:]).abs().mean() + (rolled - z[:, 1:4]).abs().mean()
    smooth = ((z[:, 1:] - z[:, :-1]) ** 2).mean()
    pairs = torch.cat([z[:, :-1, 0], z[:, 1:, 0]], dim=-1)
    inverse = ((method.inverse_dynamics(pairs) - batch.actions) ** 2).mean()
    inverse = inverse / (batch.actions**2).mean()
    torch.testing.assert_close(out.loss, prediction + 0.3 * smooth + 0.7 * inverse)
    torch.testing.assert_close(out.metrics["prediction_loss"], prediction.detach())
    torch.testing.assert_close(out.metrics["smoothness"], smooth)
    torch.testing.assert_close(out.metrics["inverse_dynamics"], inverse)


def test_inverse_dynamics_head_learns_the_action_between_two_frames():
    method = _pooled_method(target_grad=True, inverse_dynamics_weight=1.0)
    assert method.inverse_dynamics is not None
    history, _ = _fit(method, _two_rooms_batch(batch=32, steps=5), ("inverse_dynamics",), steps=100)
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    # 1 = predicting zero; the features come to carry the displacement
    assert first > 0.6 and last < 0.25, (first, last)


def test_pldm_terms_are_checked():
    with pytest.raises(ValueError, match="smoothness_weight must be >= 0"):
        _pooled_method(smoothness_weight=-1.0)
    with pytest.raises(ValueError, match="inverse_dynamics_weight=1.0 shapes the encoder"):
        _method(inverse_dynamics_weight=1.0)
    assert _pooled_method().inverse_dynamics is None  # off: no head, no parameters


# -- does the latent distance track the true distance? ----------------------------------------
class _DotCentroid(torch.nn.Module):
    """A perfect position encoder: the intensity-weighted centroid of the bright dot."""

    grid_size = (1, 1)
    embed_dim = 2

    def forward(self, x):
        img = x[:, 0].clamp_min(0.0) * (x[:, 0] > 0.9 * x[:, 0].amax((-2, -1), keepdim=True))
        ys, xs = torch.meshgrid(
            torch.arange(img.shape[-2], dtype=x.dtype),
            torch.arange(img.shape[-1], dtype=x.dtype),
            indexing="ij",
        )
        mass = img.sum((-2, -1))
        return (
            torch.stack([(img * xs).sum((-2, -1)), (img * ys).sum((-2, -1))], -1)[:, None]
            / mass[:, None, None]
        )


def test_spearman_of_known_orderings():
    from jepalab.planning.world_model import spearman

    x = np.random.default_rng(0).random(50)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert abs(spearman(x, np.random.default_rng(1).random(50))) < 0.4


def test_latent_distance_profile_separates_a_position_encoder_from_a_flat_one():
    from jepalab.planning.world_model import LatentWorldModel, latent_distance_profile

    predictor = ActionConditionedPredictor(
        (1, 1), 2, action_dim=2, embed_dim=8, depth=1, num_heads=1
    )
    world = TwoRooms()
    perfect = ActionConditioned(_DotCentroid(), predictor, frame_pooling="mean")
    # the centroid encoder sees 64x64 frames; frame_pooling=mean averages its single token
    profile = latent_distance_profile(LatentWorldModel(perfect), world, pairs=200, seed=3)
    assert profile["spearman"] > 0.95
    means = list(profile["mean_by_distance"].values())
    assert means == sorted(means)  # grows with the true distance, bin after bin
    flat = _method()
    flat.encoder = VisionTransformer(
        img_size=64, patch_size=16, in_chans=1, embed_dim=32, depth=1, num_heads=2
    )
    profile = latent_distance_profile(LatentWorldModel(flat), world, pairs=200, seed=3)
    assert profile["spearman"] < 0.95


def test_latent_distance_map_is_the_energy_from_every_free_position(tmp_path):
    from jepalab.planning import landscape_image, save_landscape_picture
    from jepalab.planning.world_model import LatentWorldModel, latent_distance_map

    predictor = ActionConditionedPredictor(
        (1, 1), 2, action_dim=2, embed_dim=8, depth=1, num_heads=1
    )
    world = TwoRooms()
    perfect = ActionConditioned(_DotCentroid(), predictor, frame_pooling="mean")
    goal = np.array([48.0, 40.0])
    distances = latent_distance_map(LatentWorldModel(perfect), world, goal, chunk=700)
    size = world.config.img_size
    assert distances.shape == (size, size)
    ys, xs = np.mgrid[0:size, 0:size]
    free = world.is_free(np.stack([xs, ys], -1).reshape(-1, 2).astype(float)).reshape(size, size)
    assert np.array_equal(np.isfinite(distances), free)  # NaN exactly on the walls
    # the centroid encoder's energy is the mean of |dx| and |dy| (in pixels): L1 / 2
    expected = (np.abs(xs - goal[0]) + np.abs(ys - goal[1])) / 2
    np.testing.assert_allclose(distances[free], expected[free], atol=0.3)
    assert distances[40, 48] < 0.1
    image = landscape_image(world, distances, goal, scale=2)
    assert image.size == (2 * size, 2 * size)
    assert image.getpixel((2 * 5, 2 * 32)) != image.getpixel((2 * 32, 2 * 32))  # free vs wall
    path = save_landscape_picture(tmp_path / "map.png", world, distances, goal)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="distances must be"):
        landscape_image(world, distances[:10], goal)
