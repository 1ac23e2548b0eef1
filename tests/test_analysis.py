"""Looking inside models (`factorconv show`, factorconv.analysis): each view on tiny models with hand-made
parameters, the redundancy analysis on layers that share their coefficients and on layers that do not, and
the command on a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import factorconv as fc
from factorconv.analysis import (
    acdc_atoms,
    acdc_coefficients,
    applicable_views,
    bdsc_configurations,
    class_activation_maps,
    coefficient_redundancy,
    decompose_kernel,
    doconv_shift,
    effective_rank,
    show_model,
    stages,
)
from factorconv.cli import main
from factorconv.ops.doconv import DOConv2d
from factorconv.train import fit, resolve_config


def test_doconv_shift_is_zero_untrained_and_the_moved_taps_when_d_moves() -> None:
    model = fc.create_model("resnet20", conv="doconv", width=0.25)
    shift = doconv_shift(model)
    assert len(shift) == 18 and all(torch.equal(h, torch.zeros(3, 3)) for h in shift.values())
    op = DOConv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        op.W.copy_(torch.arange(3 * 2 * 9, dtype=torch.float32).reshape(3, 2, 9))
        op.D[0, 4, 4] = 0.5  # input channel 0's centre tap scaled by 1.5: W' - W = 0.5 W there
    h = doconv_shift(nn.Sequential(op))["0"]
    expected = torch.zeros(3, 3)
    expected[1, 1] = 0.5 * op.W[:, 0, 4].abs().sum()
    assert torch.allclose(h, expected)


def test_acdc_atoms_and_the_banks_they_share() -> None:
    model = fc.create_model("resnet20", conv="acdc", width=0.25, conv_kwargs={"share": "stage", "atoms": 4})
    atoms = acdc_atoms(model)
    assert len(atoms) == 19 and atoms["layer1.0.conv1"].shape == (1, 4, 3, 3)
    banks = acdc_coefficients(model)
    assert sum(len(b["layers"]) for b in banks.values()) == 19 and len(banks) == 3
    for owner, bank in banks.items():
        assert owner in bank["layers"]
        assert bank["coefficients"].shape[-1] == 4


def test_bdsc_configuration_from_a_hand_made_latent() -> None:
    model = fc.create_model("resnet20", conv="bdsc", width=0.25)
    layer = model.layer1[0].conv1
    with torch.no_grad():
        layer.latent.fill_(-0.5)
        layer.latent[:, :, 1, 1] = 0.5  # only the centre tap is a one
    view = bdsc_configurations(model)["layer1.0.conv1"]
    expected = torch.zeros(3, 3)
    expected[1, 1] = 1
    assert torch.equal(view["tap_density"], expected) and view["density"] == pytest.approx(1 / 9)
    assert view["configuration"].dtype == torch.uint8
    float_model = fc.create_model("resnet20", conv="bdsc", width=0.25, conv_kwargs={"binary": False})
    assert bdsc_configurations(float_model) == {}


def test_cams_at_every_stage() -> None:
    torch.manual_seed(0)
    model = fc.create_model("resnet20", width=0.25, in_chans=1).train()
    x = torch.randn(3, 1, 16, 16)
    assert stages(model, x) == ["layer1", "layer2", "layer3"]
    maps = class_activation_maps(model, x, torch.tensor([0, 1, 2]))
    for m in maps.values():
        assert m.shape == (3, 16, 16) and float(m.min()) >= 0 and float(m.max()) == pytest.approx(1.0)
    assert model.training and all(p.grad is None for p in model.parameters())  # left as it was


class _TwoBranches(nn.Module):
    def __init__(self, tie: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.b = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        if tie:
            self.b.weight = nn.Parameter(self.a.weight.detach().flip(0).clone())  # the same filters, reordered

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


def test_redundancy_one_subspace_against_unrelated_layers() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 4, 12, 12)
    tied = coefficient_redundancy(_TwoBranches(tie=True), x)
    free = coefficient_redundancy(_TwoBranches(tie=False), x)
    (t,), (f,) = tied["pairs"], free["pairs"]
    assert t["erank_i"] == pytest.approx(6, rel=1e-3)  # CCA whitens: c equal singular values
    assert t["erank_joint"] == pytest.approx(6, rel=1e-2)  # the same coefficients up to an alignment
    assert f["erank_joint"] > 9  # unrelated layers: towards 2c = 12
    coef, basis, err = decompose_kernel(torch.randn(6, 4, 3, 3), 9)
    assert err < 1e-12 and coef.shape == (6, 4, 9) and basis.shape == (9, 3, 3)
    assert effective_rank(torch.eye(5)) == pytest.approx(5) and effective_rank(torch.ones(4, 4)) == pytest.approx(1)
    with pytest.raises(ValueError, match=r"two or more dense k×k conv layers"):
        coefficient_redundancy(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.randn(2, 1, 8, 8))


def test_show_on_a_trained_run_and_every_view(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    torch.set_num_threads(1)
    cfg = resolve_config("smoke", overrides={
        "data": "synthetic", "model": "resnet20", "width": 0.25, "conv": "doconv", "progress": "off", "threads": 1,
        "train_subset": 64, "test_subset": 64, "steps": 4, "run_dir": str(tmp_path / "run")})
    fit(cfg)
    assert main(["show", str(tmp_path / "run"), "--images", "2"]) == 0
    shown = tmp_path / "run" / "show"
    assert (shown / "cam.png").stat().st_size > 1000 and (shown / "doconv_shift.png").exists()
    data = json.loads((shown / "show.json").read_text())
    assert set(data) == {"doconv", "cam", "skipped"} and len(data["cam"]["labels"]) == 2
    assert set(data["skipped"]) == {"acdc", "bdsc", "redundancy"}
    assert any(v != 0 for h in data["doconv"].values() for row in h for v in row)  # trained: D' moved
    assert main(["show", str(tmp_path / "run"), "--what", "acdc"]) == 2
    assert "the model has no acdc layer" in capsys.readouterr().err
    x, y = torch.randn(2, 1, 16, 16), torch.tensor([0, 1])
    for conv, files in (("acdc", {"acdc_atoms.png", "acdc_coefficients.png"}),
                        ("bdsc", {"bdsc_taps.png", "bdsc_density.png"}), ("conv", {"redundancy.png"})):
        model = fc.create_model("resnet20", conv=conv, width=0.25, in_chans=1)
        data = show_model(model, x, y, x.sigmoid(), tmp_path / conv, [v for v in applicable_views(model)
                                                                      if v != "cam"])
        assert {p.name for p in (tmp_path / conv).glob("*.png")} == files, conv
