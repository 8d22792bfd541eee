"""`jepalab eval probe`: the linear probe against scikit-learn, the shared selection protocol,
k-NN, and the command on tiny trained runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from jepalab.checkpoint import load_newest
from jepalab.cli import main as cli_main
from jepalab.cli.probe import ProbeArgs, probe_splits, select_encoder
from jepalab.eval import (
    fit_knn_probe,
    fit_linear_probe,
    knn_predict,
    standardise,
    train_logistic_regression,
)
from jepalab.eval.features import extract_features
from jepalab.methods.build import build_experiment
from jepalab.runs import load_run
from jepalab.train.setup import build_trainer

from .conftest import TINY_OVERRIDES, TINY_VIDEO_OVERRIDES, compose_config


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny steps: on a loaded 2-core machine, intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clusters(n: int, dim: int = 16, num_classes: int = 4, seed: int = 0, random_labels=False):
    """``n`` points of Gaussian clusters around fixed orthogonal means 6 noise-stds apart:
    linearly separable (and k-NN separable) with overwhelming probability; ``seed`` draws
    the points, the means are the same for every seed. ``random_labels``: labels drawn
    independently of the points (any probe must stay at chance)."""
    means = torch.linalg.qr(
        torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(99))
    )[0]
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 6.0 * means.T[y] + torch.randn(n, dim, generator=g) + 3.0  # offset, as pooled features
    if random_labels:
        y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def test_separable_features_are_probed_perfectly():
    train, test = clusters(600, seed=0), clusters(400, seed=1)
    linear = fit_linear_probe(train, test, seed=0)
    knn = fit_knn_probe(train, test, ks=(5, 20))
    for result in (linear, knn):
        assert result.test_accuracy >= 0.99 and result.val_accuracy >= 0.99
        assert result.train_accuracy >= 0.99


def test_random_labels_stay_at_chance():
    """Labels independent of the features: the picked penalty and k must not beat chance
    (25%) on the test split, even though the linear probe fits its training split."""
    train = clusters(600, dim=64, seed=0, random_labels=True)
    test = clusters(1000, dim=64, seed=1, random_labels=True)
    linear = fit_linear_probe(train, test)
    knn = fit_knn_probe(train, test)
    for result in (linear, knn):
        assert abs(result.test_accuracy - 0.25) < 0.06  # 4.4 standard errors
    assert linear.train_accuracy > 0.35  # it did fit: 64 dims memorise some of 600 points


@pytest.mark.parametrize("l2", [1e-4, 1e-2])
def test_logistic_regression_is_scikit_learns_optimum(l2):
    """The solver reaches the optimum of its convex objective: the weights, bias and class
    probabilities of scikit-learn's multinomial LogisticRegression at the same penalty
    (theirs: ``C * sum CE + ||W||^2 / 2``, ours: ``mean CE + l2 ||W||^2``, so
    ``C = 1 / (2 l2 n)``), solved independently to a tight tolerance."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = nuisance_task(300, seed=2)
    x = standardise(x.double())[0]
    w, b = train_logistic_regression(x, y, 4, l2, max_iter=500)
    ref = sklearn.LogisticRegression(C=1 / (2 * l2 * len(y)), tol=1e-10, max_iter=10_000)
    ref.fit(x.numpy(), y.numpy())
    torch.testing.assert_close(w, torch.from_numpy(ref.coef_.T), atol=2e-4, rtol=1e-3)
    # The softmax is shift-invariant: compare biases up to a common constant.
    theirs = torch.from_numpy(ref.intercept_)
    torch.testing.assert_close(b - b.mean(), theirs - theirs.mean(), atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(
        torch.softmax(x @ w + b, 1),
        torch.from_numpy(ref.predict_proba(x.numpy())),
        atol=1e-5,
        rtol=0,
    )


def nuisance_task(n: int, seed: int, num_classes: int = 4):
    """The class shows in ``x[:K]`` under strong noise that ``x[K:]`` repeats: a linear
    probe separates the classes only by learning to subtract the copy, which a strongly
    penalised one (weights near the class-mean differences) does not."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    noise = 4.0 * torch.randn(n, num_classes, generator=g)
    copy = noise + 0.1 * torch.randn(n, num_classes, generator=g)
    return torch.cat([2.0 * torch.eye(num_classes)[y] + noise, copy], 1), y


def test_linear_probe_picks_on_validation_and_refits_on_the_whole_split():
    """Every penalty is really fitted (a strong one cannot subtract the nuisance copy), the
    pick is the argmax of the validation accuracies, the reported model is the picked
    penalty refitted on the whole training split, and the test split changes nothing but
    the test accuracy."""
    train, test = nuisance_task(500, seed=0), nuisance_task(300, seed=1)
    result = fit_linear_probe(train, test, l2_grid=(1.0, 1e-4))
    assert [g["l2"] for g in result.grid] == [1.0, 1e-4]
    val = [g["val_accuracy"] for g in result.grid]
    assert val[0] < 0.6 and val[1] > 0.9
    assert result.hparams == {"l2": 1e-4} and result.val_accuracy == val[1]
    x_train, x_test = standardise(train[0].double(), test[0].double())
    w, b = train_logistic_regression(x_train, train[1], 4, 1e-4)
    assert result.test_accuracy == float(((x_test @ w + b).argmax(1) == test[1]).double().mean())
    assert result.train_accuracy == float(((x_train @ w + b).argmax(1) == train[1]).double().mean())
    shuffled = (torch.randn_like(test[0]), test[1][torch.randperm(300)])
    other = fit_linear_probe(train, shuffled, l2_grid=(1.0, 1e-4))
    assert (other.hparams, other.grid, other.train_accuracy) == (
        result.hparams,
        result.grid,
        result.train_accuracy,
    )


def test_a_one_point_grid_selects_nothing():
    """One penalty / one k: fitted once on the whole split, no validation accuracy (None in
    the JSON report, where strict JSON has no NaN)."""
    train, test = clusters(200, seed=0), clusters(100, seed=1)
    for result in (
        fit_linear_probe(train, test, l2_grid=(1e-3,)),
        fit_knn_probe(train, test, ks=(5,)),
    ):
        assert result.grid == [] and math.isnan(result.val_accuracy)
        assert result.to_dict()["val_accuracy"] is None and result.test_accuracy > 0.99
    with pytest.raises(ValueError, match="l2_grid is empty"):
        fit_linear_probe(train, test, l2_grid=())


def brute_force_knn(bank, labels, queries, k, temperature, num_classes):
    """The DINO k-NN vote, one query at a time, written independently."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    preds = []
    for q in queries:
        sims = bank @ q
        order = sorted(range(len(bank)), key=lambda i: -float(sims[i]))[:k]
        score = [0.0] * num_classes
        for i in order:
            score[int(labels[i])] += math.exp(float(sims[i]) / temperature)
        preds.append(max(range(num_classes), key=score.__getitem__))
    return torch.tensor(preds)


def test_knn_matches_a_brute_force_vote_and_leaves_one_out():
    g = torch.Generator().manual_seed(0)
    bank, labels = torch.randn(60, 5, generator=g), torch.randint(0, 4, (60,), generator=g)
    queries = torch.randn(25, 5, generator=g)
    got = knn_predict(bank, labels, queries, 4, ks=(1, 3, 7), temperature=0.5, chunk=8)
    for k in (1, 3, 7):
        assert torch.equal(got[k], brute_force_knn(bank, labels, queries, k, 0.5, 4))
    # Querying the bank itself: each point is its own nearest neighbour unless left out.
    assert torch.equal(knn_predict(bank, labels, bank, 4, ks=(1,))[1], labels)
    loo = knn_predict(bank, labels, bank, 4, ks=(1,), leave_one_out=True, chunk=16)[1]
    nearest_other = (F.normalize(bank, dim=1) @ F.normalize(bank, dim=1).T).fill_diagonal_(-2)
    assert torch.equal(loo, labels[nearest_other.argmax(1)])
    assert knn_predict(bank, labels, queries, 4, ks=(500,))[500].shape == (25,)  # k > n: all


# ----------------------------------------------------------------------------- the command

FAST_PROBES = [
    "max_train=160",
    "max_test=80",
    "batch_size=80",
    "progress=false",
    "linear.l2=[0.0001,0.01]",
    "linear.max_iter=30",
    "knn.k=[5,10]",
    "attentive.epochs=2",
    "attentive.lr=[0.001]",
    "attentive.weight_decay=[0.01,0.1]",
    "attentive.heads=2",
]


def train_tiny_run(overrides: list[str], run_dir, experiment=None, steps: int = 3):
    cfg = compose_config([*overrides, f"run_dir={run_dir}"], experiment=experiment)
    cfg.optim.lr = cfg.optim.start_lr = 2e-3  # so that 3 steps move the context encoder
    cfg.trainer.max_steps = steps
    exp = build_experiment(cfg)
    build_trainer(cfg, exp, OmegaConf.to_container(cfg, resolve=True)).fit()  # as `train`
    return run_dir


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return train_tiny_run(TINY_OVERRIDES, tmp_path_factory.mktemp("ijepa") / "run")


def eval_probe(*args: str) -> int:
    return cli_main(["eval", "probe", *args])


def test_cli_probes_an_image_run_end_to_end(image_run, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert eval_probe(f"ckpt={image_run}", f"out={out}", *FAST_PROBES) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["step"] == 3 and report["method"] == "ijepa"
    assert report["encoder"] == "target" and report["checkpoint"].endswith("step_00000003.pt")
    assert report["pooling"]["linear"] == report["pooling"]["knn"] == "mean-pooled tokens"
    assert report["pooling"]["attentive"].startswith("all tokens")
    assert report["data"] == {
        "name": "digits_canvas",
        "train": 160,
        "test": 80,
        "num_classes": 10,
        "skipped": {"train": 0, "test": 0},  # unreadable samples left out
    }
    assert report["feature_shapes"]["target encoder"] == {"pooled": [32], "tokens": [64, 32]}
    assert report["feature_shapes"]["raw pixels"] == {"pooled": [1024], "tokens": [64, 16]}
    assert set(report["results"]) == {"target encoder", "raw pixels", "random-init encoder"}
    grid_sizes = {"linear": 2, "knn": 2, "attentive": 2}
    for by_probe in report["results"].values():
        assert set(by_probe) == {"linear", "knn", "attentive"}
        for probe, r in by_probe.items():
            for key in ("test_accuracy", "val_accuracy", "train_accuracy"):
                assert 0.0 <= r[key] <= 1.0
            assert len(r["grid"]) == grid_sizes[probe]
            assert r["val_accuracy"] == max(g["val_accuracy"] for g in r["grid"])
            assert any(r["hparams"].items() <= g.items() for g in r["grid"])
            assert f"{100 * r['test_accuracy']:.1f}%" in printed
    # Separable digits are far from chance for at least the pixel k-NN (56% on all of them).
    assert report["results"]["raw pixels"]["knn"]["test_accuracy"] > 0.2
    assert "target encoder" in printed and "held-out" in printed


def test_context_and_target_encoders_differ_after_training(image_run, tmp_path):
    run = load_run(image_run)
    args = ProbeArgs(ckpt=str(image_run), max_train=32)
    dataset = probe_splits(run.cfg, args)["train"]
    feats = {}
    for choice in ("target", "context"):
        encoder = select_encoder(run.method, choice)
        options = dict(pooling="mean", batch_size=32, device=torch.device("cpu"), desc="")
        cached = extract_features(encoder, dataset, pooled=True, progress=False, **options)
        feats[choice] = cached.pooled
    assert (feats["target"] - feats["context"]).abs().max() > 1e-3
    assert select_encoder(run.method, "target") is run.method.target_encoder.module

    out = tmp_path / "context.json"
    fast = [*FAST_PROBES, "probes=[knn]", "baselines=false"]
    assert eval_probe(f"ckpt={image_run}", "encoder=context", f"out={out}", *fast) == 0
    report = json.loads(out.read_text())
    assert report["encoder"] == "context" and list(report["results"]) == ["context encoder"]


def test_cli_probes_a_video_run(tmp_path):
    run_dir = train_tiny_run(TINY_VIDEO_OVERRIDES, tmp_path / "run", "vjepa_moving_digits", 2)
    fast = [*FAST_PROBES, "max_train=64", "max_test=32", "baselines=false"]
    assert eval_probe(f"ckpt={run_dir}", "probes=[linear,attentive]", *fast) == 0
    report = json.loads((run_dir / "eval" / "probe.json").read_text())  # the default out
    assert report["method"] == "vjepa" and report["run"] == str(run_dir)
    assert report["feature_shapes"]["target encoder"] == {"pooled": [32], "tokens": [32, 32]}
    assert report["data"]["num_classes"] == 3  # speed bins
    assert set(report["results"]["target encoder"]) == {"linear", "attentive"}


@pytest.mark.parametrize(
    ("arg", "named"),
    [
        ("linear.lrr=[0.1]", "lrr"),
        ("encoder=online", "encoder"),
        ("probes=[linear,svm]", "svm"),
        ("max_train=many", "max_train"),
        ("probes=[lbfgs]", "lbfgs"),  # one linear probe now: `linear`
        ("linear.max_iter=0", "linear.max_iter"),
        ("linear.l2=[0.1,-1]", "linear.l2"),
    ],
)
def test_bad_arguments_exit_2_naming_the_key(arg, named, image_run, capsys):
    assert eval_probe(f"ckpt={image_run}", arg) == 2
    assert named in capsys.readouterr().err


def test_missing_checkpoint_and_help(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    assert eval_probe(f"ckpt={missing}") == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and str(missing) in err
    assert eval_probe() == 2 and "ckpt" in capsys.readouterr().err  # required
    assert eval_probe("--help") == 0
    usage = capsys.readouterr().out
    for key in (
        "ckpt=???",
        "encoder=target",
        "pooling=mean",
        "linear.l2=",
        "knn.k=",
        "attentive.depth=",
    ):
        assert key in usage


def test_a_checkpoint_with_foreign_weights_is_a_usage_error(image_run, tmp_path, capsys):
    """An older checkpoint whose keys this version does not build: exit 2 naming the keys."""
    state = load_newest(image_run / "checkpoints")[1]
    state["model"]["predictor.query_tokens"] = state["model"].pop("predictor.mask_tokens")
    torch.save(state, tmp_path / "step_00000003.pt")
    assert eval_probe(f"ckpt={tmp_path / 'step_00000003.pt'}") == 2
    err = capsys.readouterr().err
    assert "do not match" in err and "predictor.mask_tokens" in err


def test_a_checkpoint_without_a_run_configuration_is_one_line(tmp_path, capsys):
    """A Trainer built in Python without run_config records its models only: the run loads
    back in Python, but the commands that need its data say so in one line."""
    from jepalab.train import Trainer

    cfg = compose_config([*TINY_OVERRIDES, f"run_dir={tmp_path / 'bare'}"])
    cfg.trainer.max_steps = cfg.trainer.ckpt_every = 1
    exp = build_experiment(cfg)
    args = (exp.method, exp.dataset, exp.collate_fn, cfg.data.batch_size, cfg.trainer, cfg.optim)
    Trainer(*args, tmp_path / "bare", cfg.data.num_workers).fit()  # no run_config
    assert load_run(tmp_path / "bare").cfg is None
    assert eval_probe(f"ckpt={tmp_path / 'bare'}") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "no run configuration" in x]
    assert line.startswith("jepalab eval probe: error: ckpt=")  # the whole error, one line
    assert cli_main(["eval", "surprise", f"ckpt={tmp_path / 'bare'}"]) == 2
    assert "no run configuration" in capsys.readouterr().err


def test_a_registered_probe_runs_from_the_command(image_run, tmp_path):
    """Adding a probe is one registered function: `jepalab eval probe probes=[NAME]` fits it
    on the same cached features, and the report says what it read."""
    from jepalab.eval.probes import PROBES, register_probe
    from jepalab.eval.protocol import ProbeResult

    seen = {}

    @register_probe("nearest_mean", reads="pooled")
    def nearest_mean(train, test, options, device, val_fraction, seed):
        classes = train.labels.unique()
        means = torch.stack([train.pooled[train.labels == c].mean(0) for c in classes])
        predict = classes[torch.cdist(test.pooled, means).argmin(1)]
        seen["options"], seen["shapes"] = options, (train.pooled.shape, test.pooled.shape)
        accuracy = float((predict == test.labels).float().mean())
        return ProbeResult(
            train_accuracy=0.0, test_accuracy=accuracy, hparams={}, val_accuracy=accuracy
        )

    out = tmp_path / "probe.json"
    try:
        args = [f"ckpt={image_run}", f"out={out}", "probes=[nearest_mean]", "baselines=false"]
        assert eval_probe(*args, "max_train=64", "max_test=32", "progress=false") == 0
    finally:
        PROBES.unregister("nearest_mean")
    report = json.loads(out.read_text())
    assert report["pooling"]["nearest_mean"] == "mean-pooled tokens"
    assert seen["options"] is None and seen["shapes"][0][0] == 64 and seen["shapes"][1][0] == 32
    accuracy = report["results"]["target encoder"]["nearest_mean"]["test_accuracy"]
    assert 0.0 <= accuracy <= 1.0
