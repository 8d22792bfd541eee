"""The Python API: every name ``jepalab`` exports resolves, and importing it stays light."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

import jepalab
from jepalab.errors import DataError


def test_every_exported_name_resolves_to_its_definition():
    for name in jepalab.__all__:
        value = getattr(jepalab, name)
        assert value is not None, name
        if name != "__version__":
            assert getattr(value, "__name__", name) == name or callable(value), name


def test_import_jepalab_is_light():
    """`import jepalab` imports no torch; `jepalab.eval` no timm (one Mlp is ours)."""
    code = (
        "import sys, jepalab; assert 'torch' not in sys.modules, 'torch';"
        "import jepalab.eval; assert 'timm' not in sys.modules, 'timm'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_rankme_takes_numpy_and_tensors_alike():
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    assert jepalab.rankme(x) == jepalab.rankme(torch.from_numpy(x))
    assert 7.0 < jepalab.rankme(x) <= 8.0


# -- a researcher's own loop and data ---------------------------------------------------------
def _tiny_ijepa(target="ema"):
    encoder = jepalab.VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2
    )
    predictor = jepalab.create_predictor(
        "masked_vit_predictor",
        grid_size=(4, 4),
        encoder_dim=32,
        embed_dim=32,
        depth=1,
        num_heads=2,
    )
    if callable(target):
        target = target(encoder)
    return jepalab.IJEPA(encoder, predictor, target=target)


def _masks(seed=0, start_step=0):
    generator = jepalab.MultiBlockMaskGenerator(grid_size=(4, 4), num_targets=2, min_keep=2)
    return jepalab.MaskCollator(generator, seed, start_step)


def test_mask_collator_is_a_plain_collate_fn_over_tensors_tuples_and_dicts():
    """A DataLoader over any of the three sample forms gives the same batches and masks; the
    masks follow the seed and the batch number."""
    images = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 3
    forms = {
        "tensor": list(images),
        "tuple": torch.utils.data.TensorDataset(images, labels),
        "dict": [{"image": x, "label": int(y)} for x, y in zip(images, labels, strict=True)],
    }
    batches = {}
    for name, data in forms.items():
        loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=_masks())
        batches[name] = list(loader)
    for name, got in batches.items():
        assert [b.step for b in got] == [0, 1], name
        assert torch.equal(torch.cat([b.images for b in got]), images), name
        for b, ref in zip(got, batches["tuple"], strict=True):
            assert torch.equal(b.masks.context.values, ref.masks.context.values), name
    assert (batches["tensor"][0].labels == -1).all()  # no label: -1
    assert torch.equal(batches["dict"][0].labels, labels[:4])
    first = batches["tuple"][0].masks.context.values
    assert not torch.equal(first, batches["tuple"][1].masks.context.values)  # per batch


def test_a_sample_of_another_form_is_one_clear_error():
    with pytest.raises(DataError, match="a dict sample needs its image"):
        _masks()([{"img": torch.zeros(1, 16, 16)}])
    with pytest.raises(DataError, match="a sample must be a tensor"):
        _masks()(["not an image"])


def test_ijepa_by_hand_with_your_own_loop_learns_and_updates_its_target():
    torch.manual_seed(0)
    method = _tiny_ijepa()
    images = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    loader = torch.utils.data.DataLoader(list(images), batch_size=8, collate_fn=_masks())
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    before = [p.clone() for p in method.target_encoder.parameters()]
    for step, batch in enumerate(loader):
        out = method(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.after_optimizer_step(step + 1, len(loader))
    assert torch.isfinite(out.loss)
    after = list(method.target_encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_ijepa_takes_a_target_module_which_checkpoints_rebuild(tmp_path):
    """`target=<module>`: that module is the EMA target (not a copy), and a Python-built
    Trainer's checkpoint rebuilds the method with it (jepalab.specs)."""

    def pretrained(encoder):
        teacher = copy.deepcopy(encoder)
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(1.0)
        return teacher

    torch.manual_seed(0)
    method = _tiny_ijepa(target=pretrained)
    teacher = method.target_encoder.module
    assert not torch.equal(
        teacher.patch_embed.proj.weight, method.context_encoder.patch_embed.proj.weight
    )
    with pytest.raises(ValueError, match="does not have the encoder's parameters"):
        _tiny_ijepa(target=lambda enc: torch.nn.Linear(2, 2))
    data = torch.utils.data.TensorDataset(torch.randn(16, 1, 16, 16), torch.zeros(16))
    cfg = jepalab.TrainerConfig(max_steps=2, epochs=1, progress=False, ckpt_every=2)
    trainer = jepalab.Trainer(method, data, _masks(), 8, cfg, jepalab.OptimConfig(), tmp_path)
    trainer.fit()
    run = jepalab.load_run(tmp_path)
    for key, value in method.state_dict().items():
        assert torch.equal(run.method.state_dict()[key], value), key


def test_schedules_can_end_at_max_steps_and_a_finished_run_says_so(tmp_path, caplog):
    data = torch.utils.data.TensorDataset(torch.randn(16, 1, 16, 16))
    optim = jepalab.OptimConfig(lr=1e-3, warmup_epochs=0.0)
    lrs = {}
    for to_max in (False, True):
        cfg = jepalab.TrainerConfig(
            max_steps=4, epochs=10, progress=False, schedule_to_max_steps=to_max
        )
        torch.manual_seed(0)
        trainer = jepalab.Trainer(
            _tiny_ijepa(), data, _masks(), 8, cfg, optim, tmp_path / str(to_max)
        )
        lrs[to_max] = [trainer.schedules(s)["lr"] for s in range(5)]
        assert trainer.total_steps == (4 if to_max else 20)
        trainer.fit()
    assert lrs[True][4] == pytest.approx(optim.final_lr)  # the cosine ends at max_steps
    assert lrs[False][4] > 0.5 * optim.lr  # a fifth of the way down
    with caplog.at_level("WARNING"):
        again = jepalab.Trainer(_tiny_ijepa(), data, _masks(), 8, cfg, optim, tmp_path / "True")
        assert again.fit() == []
    assert "already finished at step 4 of 4: nothing to train" in caplog.text
