"""Image input conversion and batched per-image self-augmentation."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from skcce.augment import (
    ImageLayout,
    PerSample,
    SelfAugment,
    call_augment,
    check_images,
    images_to_tensor,
    resolve_augment,
)


def _images(n=4, c=3, h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def test_all_layouts_give_the_same_tensor():
    nchw = _images()
    expected = torch.from_numpy(nchw).float() / 255
    variants = [
        (nchw, None),
        (nchw.transpose(0, 2, 3, 1), None),  # channels last
        (nchw.reshape(4, -1), (3, 6, 5)),  # flattened C, H, W
        (nchw.astype(np.float32) / 255, None),  # float in [0, 1]
    ]
    for X, shape in variants:
        layout = check_images(X, shape)
        assert layout.shape == (3, 6, 5)
        out = images_to_tensor(X, layout)
        assert out.dtype == torch.float32 and out.is_contiguous()
        assert torch.allclose(out, expected, atol=1e-6)


def test_grey_layouts():
    grey = _images(c=1)
    for X, shape, layout in [
        (grey[:, 0], None, "nhw"),
        (grey, None, "nchw"),
        (grey.reshape(4, 30), (1, 6, 5), "flat"),
    ]:
        found = check_images(X, shape)
        assert found == ImageLayout(layout, (1, 6, 5))
        assert torch.equal(images_to_tensor(X, found), torch.from_numpy(grey).float() / 255)


def test_memmap_rows_are_read_lazily(tmp_path):
    data = _images(n=10, c=1, h=28, w=28).reshape(10, 784)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=data.shape)
    mm[:] = data
    mm.flush()
    X = np.load(tmp_path / "x.npy", mmap_mode="r")
    layout = check_images(X, (1, 28, 28))
    batch = images_to_tensor(X[[1, 7]], layout, dtype=torch.float64)
    assert batch.dtype == torch.float64 and batch.shape == (2, 1, 28, 28)
    assert torch.equal(batch.flatten(1), torch.from_numpy(data[[1, 7]]).double() / 255)


@pytest.mark.parametrize(
    "X, shape, message",
    [
        (np.zeros((3, 784)), None, r"image_shape=\(C, H, W\)"),
        (np.zeros((3, 784)), (1, 28, 27), "756 pixels but X has 784"),
        (np.zeros((3, 5, 6, 7)), None, "C in {1, 3}"),
        (np.zeros((3, 1, 6, 6)), (3, 6, 6), "does not match"),
        (np.zeros((3, 6, 6), dtype=np.int64), None, "uint8 .* or float"),
        ([[1, 2]], None, "numpy array"),
        (np.zeros((3, 4)), (1, 2), r"\(C, H, W\) tuple"),
    ],
)
def test_check_images_errors(X, shape, message):
    with pytest.raises(ValueError, match=message):
        check_images(X, shape)


def test_self_augment_is_reproducible_and_per_image():
    x = torch.rand(1, 3, 16, 16).expand(16, -1, -1, -1).contiguous()
    aug = SelfAugment()
    a = aug(x, generator=torch.Generator().manual_seed(1))
    b = aug(x, generator=torch.Generator().manual_seed(1))
    c = aug(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # identical inputs, independent transforms: the outputs differ from each other
    distinct = {tuple(img.flatten()[:50].tolist()) for img in a}
    assert len(distinct) > 8
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_self_augment_components():
    x = torch.rand(5, 1, 8, 8)
    off = SelfAugment(flip=0.0, degrees=0.0, color_p=0.0)
    assert torch.allclose(off(x), x)
    flip = SelfAugment(flip=1.0, degrees=0.0, color_p=0.0)
    assert torch.allclose(flip(x), x.flip(-1))
    # a symmetric image (constant) stays constant in the interior under rotation
    const = torch.full((3, 1, 9, 9), 0.5)
    rotated = SelfAugment(flip=0.0, degrees=30.0, color_p=0.0)(const)
    assert torch.allclose(rotated[:, :, 3:6, 3:6], const[:, :, 3:6, 3:6], atol=1e-5)
    # brightness only: every image is scaled by one factor in [0.6, 1.4]
    bright = SelfAugment(flip=0.0, degrees=0.0, contrast=0.0, color_p=1.0)
    y = torch.full((6, 1, 4, 4), 0.5)
    out = bright(y, generator=torch.Generator().manual_seed(0))
    factors = out[:, 0, 0, 0] / 0.5
    assert torch.all((factors >= 0.6 - 1e-6) & (factors <= 1.4 + 1e-6))
    assert torch.allclose(out, factors.view(-1, 1, 1, 1) * 0.5)


def test_saturation_only_touches_rgb():
    aug = SelfAugment(flip=0.0, degrees=0.0, brightness=0.0, contrast=0.0, saturation=0.9,
                      color_p=1.0)
    grey_rgb = torch.rand(4, 1, 6, 6).expand(-1, 3, -1, -1)
    # a grey picture stored as RGB has no saturation to change
    assert torch.allclose(aug(grey_rgb), grey_rgb, atol=1e-6)
    colour = torch.rand(4, 3, 6, 6)
    assert not torch.allclose(aug(colour, generator=torch.Generator().manual_seed(0)), colour)


def test_self_augment_validation():
    with pytest.raises(ValueError, match="flip must be a probability"):
        SelfAugment(flip=1.5)
    with pytest.raises(ValueError, match="degrees must be a non-negative"):
        SelfAugment(degrees=-1)
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        SelfAugment()(torch.rand(3, 8, 8))


def test_resolve_and_call_augment():
    assert resolve_augment(None) is None
    assert isinstance(resolve_augment("default"), SelfAugment)
    fn = resolve_augment(lambda x: 1 - x)
    assert torch.equal(call_augment(fn, torch.zeros(2)), torch.ones(2))
    with pytest.raises(ValueError, match="augment must be None, 'default' or a callable"):
        resolve_augment("strong")
    with pytest.raises(ValueError, match="augment must be None"):
        resolve_augment(3)


def test_per_sample_wraps_torchvision_v2():
    x = torch.rand(1, 1, 8, 8).expand(12, -1, -1, -1)
    with torch.random.fork_rng(devices=[]):  # v2 draws from the global generator
        torch.manual_seed(0)
        out = call_augment(PerSample(v2.RandomHorizontalFlip(p=0.5)), x)
    flipped = sum(torch.equal(img, x[0].flip(-1)) for img in out)
    kept = sum(torch.equal(img, x[0]) for img in out)
    assert flipped + kept == 12
    assert 0 < flipped < 12  # drawn per image, not once for the batch
    with pytest.raises(ValueError, match="callable"):
        PerSample(3)
