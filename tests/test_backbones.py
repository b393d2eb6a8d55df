"""VGG-4 (Table 7) and torchvision ResNet backbones: shapes, variants, weights loading."""

import pytest
import torch
from torch import nn

from skcce.backbones import (
    VGG4,
    VGG4_SHAPES,
    ResNetBackbone,
    build_backbone,
    count_parameters,
    load_state_dict_file,
)


def _convs(net):
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    "shape, widths, stride, n_features",
    [
        ((1, 28, 28), (64, 128, 256, 512), 1, 512 * 3 * 3),
        ((3, 32, 32), (32, 64, 128, 256), 1, 256 * 4 * 4),
        ((3, 96, 96), (128, 256, 512, 1024), 2, 1024),
    ],
)
def test_vgg4_matches_table7(shape, widths, stride, n_features):
    net = VGG4(shape, 7)
    convs = _convs(net)
    assert [c.out_channels for c in convs] == list(widths)
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert all(c.stride == (stride, stride) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3
    # batch norm (then ReLU) right after every convolution
    layers = list(net.body)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            assert isinstance(layers[i + 1], nn.BatchNorm2d)
            assert isinstance(layers[i + 2], nn.ReLU)
    assert net.n_features == n_features
    assert net.head.in_features == n_features and net.head.out_features == 7
    out = net(torch.rand(2, *shape))
    assert out.shape == (2, 7)
    assert net.forward_features(torch.rand(2, *shape)).shape == (2, n_features)


def test_vgg4_unsupported_shape_names_supported_ones():
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*\(3, 32, 32\).*\(3, 96, 96\)"):
        build_backbone("vgg4", (3, 28, 28), 10)
    assert set(VGG4_SHAPES) == {(1, 28, 28), (3, 32, 32), (3, 96, 96)}


def test_feature_mode_has_identity_head():
    net = build_backbone("vgg4", (1, 28, 28))
    assert isinstance(net.head, nn.Identity)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 4608)


@pytest.mark.parametrize("name, width", [("resnet18", 512), ("resnet50", 2048)])
def test_resnets(name, width):
    net = build_backbone(name, (3, 32, 32), 5)
    assert isinstance(net, ResNetBackbone)
    assert net.n_features == width
    net.eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert net.forward_features(torch.rand(2, 3, 32, 32)).shape == (2, width)
    assert not net.normalize  # random init: no ImageNet normalization


def test_resnet_grey_input_is_replicated():
    net = build_backbone("resnet18", (1, 32, 32), None).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), net(x.expand(-1, 3, -1, -1)))


def test_resnet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least 32x32"):
        build_backbone("resnet18", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="1- or 3-channel"):
        build_backbone("resnet18", (4, 32, 32), 10)


def test_unknown_names_and_bad_args():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="input_shape"):
        build_backbone("vgg4", (28, 28), 10)
    with pytest.raises(ValueError, match="n_outputs"):
        build_backbone("vgg4", (1, 28, 28), 0)
    with pytest.raises(ValueError, match="unknown weights 'NOPE'.*IMAGENET1K_V1"):
        build_backbone("resnet18", (3, 32, 32), 10, weights="NOPE")
    with pytest.raises(ValueError, match="no published weights"):
        build_backbone("vgg4", (1, 28, 28), 10, weights="DEFAULT")
    with pytest.raises(ValueError, match="does not exist"):
        build_backbone("resnet18", (3, 32, 32), 10, weights="/no/such/file.pt")


def test_resnet_state_dict_round_trip_full_torchvision_file(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = build_backbone("resnet18", (3, 32, 32), 3, weights=str(path)).eval()
    source.fc = nn.Identity()
    source.eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        # pretrained weights: the module applies the ImageNet normalization itself
        assert torch.allclose(net.forward_features(x), source((x - mean) / std), atol=1e-5)
    assert net.normalize


def test_resnet_state_dict_from_backbone_and_pathlike(tmp_path):
    first = build_backbone("resnet18", (3, 32, 32), 4)
    path = tmp_path / "bb.pt"
    torch.save({"state_dict": first.state_dict()}, path)  # a checkpoint wrapping it
    second = build_backbone("resnet18", (3, 32, 32), 4, weights=path)
    for key, value in first.resnet.state_dict().items():
        assert torch.equal(value, second.resnet.state_dict()[key]), key


def test_mismatched_state_dict_is_rejected(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save(nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(ValueError, match="does not match"):
        build_backbone("resnet18", (3, 32, 32), 4, weights=path)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        load_state_dict_file(tmp_path / "list.pt")


def test_vgg4_state_dict_round_trip(tmp_path):
    first = VGG4((1, 28, 28), 10)
    path = tmp_path / "vgg4.pt"
    torch.save(first.state_dict(), path)
    second = build_backbone("vgg4", (1, 28, 28), 10, weights=str(path))
    x = torch.rand(3, 1, 28, 28)
    first.eval(), second.eval()
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_build_model_dispatch_uses_backbones():
    from skcce import networks  # part of the package: an ImportError must fail the test

    g = torch.Generator().manual_seed(0)
    model = networks.build_model("vgg4", (1, 28, 28), 10, generator=g)
    assert model.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = networks.build_model("resnet18", (3, 32, 32), 4, generator=g1)
    b = networks.build_model("resnet18", (3, 32, 32), 4, generator=g2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_count_parameters_vgg4_mnist():
    # conv: 5*5*(1*64 + 64*128 + 128*256 + 256*512) + biases; BN: 2 per channel; linear 4608*10+10
    widths = [1, 64, 128, 256, 512]
    conv = sum(25 * a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    bn = 2 * sum(widths[1:])
    expected = conv + bn + 4608 * 10 + 10
    assert count_parameters(VGG4((1, 28, 28), 10)) == expected


def test_a_file_that_is_not_weights_is_named(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(ValueError, match=r"notes\.txt' is not a weights file saved with torch"):
        load_state_dict_file(notes)
    with pytest.raises(ValueError, match="not a weights file"):
        build_backbone("resnet18", (3, 32, 32), 2, weights=str(notes))


def test_failed_download_says_how_to_work_offline(monkeypatch):
    import urllib.error

    import torchvision

    from skcce.backbones import WeightsDownloadError

    def offline(*, weights=None, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    with pytest.raises(WeightsDownloadError, match="no network") as info:
        build_backbone("resnet18", (3, 32, 32), 2, weights="DEFAULT")
    assert isinstance(info.value, RuntimeError)
    assert info.value.arch == "resnet18" and "weights=<that path>" in str(info.value)
