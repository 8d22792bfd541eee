"""SIGReg (LeJEPA) and VICReg terms: the statistics, their distributed reduction (value and
gradient under 2 gloo processes equal the single-process ones), the config wiring, and the
property that matters: without an EMA target, SIGReg keeps a tiny I-JEPA from collapsing."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from jepalab import create_encoder
from jepalab.methods import ActionConditioned
from jepalab.methods.build import build_experiment
from jepalab.methods.regularizers import SIGReg, VICRegTerms, random_directions
from jepalab.models import EMATarget, OnlineTarget
from jepalab.models.pretrained import load_pretrained_encoder
from jepalab.runs import load_run
from jepalab.train.collapse import feature_std, mean_pairwise_cosine
from jepalab.train.setup import build_trainer


def test_sigreg_is_small_for_a_standard_gaussian_and_large_otherwise():
    torch.manual_seed(0)
    sigreg = SIGReg()
    z = torch.randn(2048, 32)
    # E[EP] under N(0, 1) = ∫ (1 - e^{-t²}) e^{-t²/2} dt ≈ 0.94 on [-3, 3], whatever N
    gaussian = float(sigreg(z, step=0)[0])
    assert 0.5 < gaussian < 2.0
    for name, bad in {
        "collapsed": 0.01 * z,
        "scaled": 3.0 * z,
        "shifted": z + 1.0,
        "rank one": z[:, :1].expand(-1, 32) / 32**0.5,
    }.items():
        value = float(sigreg(bad, step=0)[0])
        assert value > 50 * gaussian, f"{name}: {value}"


def test_sigreg_is_invariant_to_sample_order_and_deterministic_in_seed_and_step():
    z = torch.randn(256, 16)
    sigreg = SIGReg(seed=3)
    value = sigreg(z, step=5)[0]
    assert torch.allclose(sigreg(z[torch.randperm(256)], step=5)[0], value, rtol=1e-5)
    assert torch.equal(SIGReg(seed=3)(z, step=5)[0], value)  # a fresh module: same draw
    assert not torch.equal(sigreg(z, step=6)[0], value)  # new directions every step
    assert not torch.equal(SIGReg(seed=4)(z, step=5)[0], value)
    a = random_directions(16, 256, seed=3, step=5)
    assert torch.allclose(a.norm(dim=0), torch.ones(256))
    before = torch.get_rng_state()
    random_directions(16, 8, seed=0, step=0)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched


def test_vicreg_terms_match_their_definition():
    torch.manual_seed(0)
    vicreg = VICRegTerms(std_target=1.0, variance_weight=1.0, covariance_weight=0.04)
    z = torch.randn(512, 8) * torch.linspace(0.2, 2.0, 8) + torch.randn(512, 1)
    value, terms = vicreg(z)
    cov = torch.cov(z.T)
    std = torch.sqrt(cov.diagonal() + 1e-4)
    variance = torch.relu(1.0 - std).mean()
    off = cov - torch.diag(cov.diagonal())
    covariance = off.square().sum() / 8
    assert torch.allclose(terms["vicreg_variance"], variance, atol=1e-6)
    assert torch.allclose(terms["vicreg_covariance"], covariance, atol=1e-5)
    assert torch.allclose(value, variance + 0.04 * covariance, atol=1e-5)
    collapsed = vicreg(torch.zeros(64, 8))[1]
    assert collapsed["vicreg_variance"] == pytest.approx(0.99)  # 1 - sqrt(eps)


# -- distributed: value and gradient equal the single-process ones ------------------------

WORLD = 2
SPLIT = (37, 27)  # uneven on purpose: the global count, not world_size, normalises


def _problem():
    """Inputs ``x (64, 12)`` and a shared linear map ``w (12, 6)``: the embeddings are
    ``x @ w``, so ``w``'s gradient is what DDP would average over ranks."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g, dtype=torch.float64)
    w = torch.randn(12, 6, generator=g, dtype=torch.float64) / 12**0.5
    return x, w


def _regularizers():
    return {"sigreg": SIGReg(num_slices=32, seed=1), "vicreg": VICRegTerms()}


def _value_and_grads(reg, x, w):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    value, _ = reg(x @ w, 7)
    value.backward()
    return value.detach(), x.grad, w.grad


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        x, w = _problem()
        rows = x.split(SPLIT)[rank]
        results = {}
        for name, reg in _regularizers().items():
            value, grad_x, grad_w = _value_and_grads(reg, rows, w)
            dist.all_reduce(grad_w)  # what DDP does with parameter gradients: the mean
            results[name] = (value, grad_x, grad_w / WORLD)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_value_and_gradient_under_two_processes_equal_the_single_process_ones(tmp_path):
    # fork: a spawned child re-imports torch and jepalab (~10 s each on this CPU)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method=method
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    x, w = _problem()
    for name, reg in _regularizers().items():
        value, grad_x, grad_w = _value_and_grads(reg, x, w)
        for rank in ranks:
            rank_value, _, rank_grad_w = rank[name]
            assert torch.allclose(rank_value, value, rtol=1e-9, atol=1e-9), name
            # DDP's averaged parameter gradient is the single-process gradient
            assert torch.allclose(rank_grad_w, grad_w, rtol=1e-9, atol=1e-9), name
        # each rank's gradient w.r.t. its own rows is world_size x the single-process one
        # (the backward of the all-reduce sums the ranks' gradients), so that DDP's mean
        # over ranks is exact; an identity backward would leave it 1/world_size too small
        rows_grad = torch.cat([rank[name][1] for rank in ranks]) / WORLD
        assert torch.allclose(rows_grad, grad_x, rtol=1e-9, atol=1e-9), name


# -- the methods -----------------------------------------------------------------------------


def test_default_method_is_unchanged_and_online_target_adds_no_weights(tiny_cfg):
    default = build_experiment(tiny_cfg).method
    assert isinstance(default.target_encoder, EMATarget) and default.regularizer is None
    tiny_cfg.method.target = "online"
    tiny_cfg.method.regularizer = "sigreg"
    online = build_experiment(tiny_cfg).method
    assert isinstance(online.target_encoder, OnlineTarget)
    assert online.eval_encoder is online.context_encoder
    assert not any(k.startswith("target_encoder") for k in online.state_dict())
    assert online.regularizer_weight == 0.05  # LeJEPA's λ
    expected = {k for k in default.state_dict() if not k.startswith("target_encoder")}
    assert set(online.state_dict()) == expected  # no SIGReg buffers in checkpoints


@pytest.mark.parametrize("regularizer", ["sigreg", "vicreg"])
def test_regularized_runs_log_their_terms_and_resume_exactly(tiny_cfg, tmp_path, regularizer):
    tiny_cfg.method.target = "online"
    tiny_cfg.method.regularizer = regularizer
    tiny_cfg.method.regularize_on = "tokens" if regularizer == "sigreg" else "pooled"
    tiny_cfg.trainer.ckpt_every = 2
    tiny_cfg.trainer.max_steps = 4
    straight = build_trainer(tiny_cfg, build_experiment(tiny_cfg))
    expected = straight.fit()
    rows = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert regularizer in rows and "prediction_loss" in rows and "momentum" not in rows

    tiny_cfg.run_dir = str(tmp_path / "resumed")
    tiny_cfg.trainer.max_steps = 2
    build_trainer(tiny_cfg, build_experiment(tiny_cfg)).fit()
    tiny_cfg.trainer.max_steps = 4
    stored = OmegaConf.to_container(tiny_cfg)  # the config load_run rebuilds the method from
    rest = build_trainer(tiny_cfg, build_experiment(tiny_cfg), stored).fit()
    assert rest == expected[2:]  # the directions are a function of (seed, step)

    run = load_run(tmp_path / "resumed")  # an online-target run reloads ...
    assert run.method.regularizer is not None and run.method.target_kind == "online"
    encoder, _ = load_pretrained_encoder(tmp_path / "resumed")  # ... and feeds an AC run
    for a, b in zip(encoder.parameters(), run.method.context_encoder.parameters(), strict=True):
        assert torch.equal(a, b)


def test_video_and_action_conditioned_methods_take_a_regularizer(tiny_video_cfg):
    tiny_video_cfg.method.target = "online"
    tiny_video_cfg.method.regularizer = "sigreg"
    tiny_video_cfg.trainer.max_steps = 2
    trainer = build_trainer(tiny_video_cfg, build_experiment(tiny_video_cfg))
    assert all(torch.isfinite(torch.tensor(trainer.fit())))

    encoder = create_encoder(
        "vit_tiny_patch16", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2
    )
    predictor = torch.nn.Linear(32, 32)
    with pytest.raises(ValueError, match="encoder is frozen"):
        ActionConditioned(encoder, predictor, regularizer=SIGReg())
    ActionConditioned(encoder, predictor, trainable_encoder_blocks=-1, regularizer=SIGReg())


# -- the point of it: no collapse without EMA -------------------------------------------------


def _pooled_spread(cfg, steps: int) -> tuple[float, float, list[float]]:
    """Train ``steps`` steps; feature std and mean cosine of the context encoder's pooled
    embeddings of 64 fixed images, and the losses."""
    cfg.trainer.max_steps = steps
    cfg.trainer.monitor_every = 0
    exp = build_experiment(cfg)
    losses = build_trainer(cfg, exp).fit()
    images = torch.stack([exp.dataset[i][0] for i in range(64)])
    with torch.no_grad():
        pooled = exp.method.eval().context_encoder(images).mean(dim=1)
    return feature_std(pooled), mean_pairwise_cosine(pooled), losses


def test_sigreg_prevents_the_collapse_of_a_jepa_without_ema(tiny_cfg, tmp_path):
    tiny_cfg.optim.lr = tiny_cfg.optim.start_lr = 2e-3
    tiny_cfg.trainer.epochs = 100  # a flat lr over the 60 steps
    tiny_cfg.method.target = "online"
    plain_std, plain_cos, plain_losses = _pooled_spread(tiny_cfg, 60)
    tiny_cfg.run_dir = str(tmp_path / "sigreg")
    tiny_cfg.method.regularizer = "sigreg"
    sigreg_std, sigreg_cos, _ = _pooled_spread(tiny_cfg, 60)
    # measured (seed 0): plain std 0.026, cosine 0.999, loss 0.458 -> 0.055;
    # SIGReg std 0.651, cosine 0.468 (seeds 1, 2 at 40 steps: 0.03 vs 0.75)
    assert plain_std < 0.1 and plain_cos > 0.95
    assert plain_losses[-1] < 0.25 * plain_losses[0]  # the trivial solution is reached
    assert sigreg_std > 0.3 and sigreg_std > 5 * plain_std and sigreg_cos < 0.8
