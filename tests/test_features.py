"""extract_features: preprocessing, input forms, weights files (no downloads)."""

import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms import v2

from skcce import extract_features

SIZE = 64  # the network input side used here (224 by default); small keeps the tests fast


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 20, 24, 3), dtype=np.uint8)  # NHWC


def _extract(X, weights, **kw):
    kw.setdefault("size", SIZE)
    return extract_features(X, "resnet18", weights=weights, progress=False, **kw)


def test_matches_torchvision_preprocessing(images, resnet18_file):
    feats = _extract(images, resnet18_file)
    assert feats.shape == (5, 512) and feats.dtype == np.float32
    net = torchvision.models.resnet18(weights=None)
    net.load_state_dict(torch.load(resnet18_file, weights_only=True))
    net.fc = torch.nn.Identity()
    net.eval()
    transform = v2.Compose([
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Resize((SIZE, SIZE), antialias=True),
        v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    with torch.no_grad():
        expected = net(torch.stack([transform(img) for img in images])).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)


def test_layouts_dtypes_and_batching_agree(images, resnet18_file):
    reference = _extract(images, resnet18_file, batch_size=2)
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    for X, kw in [
        (nchw, {}),
        (images.astype(np.float32) / 255, {}),
        (nchw.reshape(5, -1), {"image_shape": (3, 20, 24)}),
        (images, {"batch_size": 5}),
        (torch.from_numpy(nchw), {}),
    ]:
        np.testing.assert_allclose(_extract(X, resnet18_file, **kw), reference, rtol=1e-4,
                                   atol=1e-4)


def test_grey_is_replicated_to_rgb(resnet18_file):
    grey = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_allclose(_extract(grey, resnet18_file), _extract(rgb, resnet18_file),
                               rtol=1e-5, atol=1e-5)
    flat = _extract(grey.reshape(3, 784), resnet18_file, image_shape=(1, 28, 28))
    np.testing.assert_allclose(flat, _extract(grey, resnet18_file), rtol=1e-5, atol=1e-5)


def test_files_and_directory(images, resnet18_file, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    paths = []
    for i, img in enumerate(images):
        sub = tmp_path / ("a" if i < 2 else "b")
        sub.mkdir(exist_ok=True)
        path = sub / f"img{i}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    (tmp_path / "notes.txt").write_text("not an image")
    reference = _extract(images, resnet18_file)
    np.testing.assert_allclose(_extract([str(p) for p in paths], resnet18_file, batch_size=2),
                               reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_extract(tmp_path, resnet18_file), reference, rtol=1e-4,
                               atol=1e-4)


def test_resnet50_width_and_progress_bar(capsys):
    X = np.zeros((2, 1, 32, 32), dtype=np.float32)
    feats = extract_features(X, "resnet50", weights=None, size=32, progress=True)
    assert feats.shape == (2, 2048) and feats.dtype == np.float32
    assert "resnet50 features" in capsys.readouterr().err


@pytest.mark.parametrize(
    "images, kw, message",
    [
        (np.zeros((2, 8, 8)), {"model": "vgg4"}, "'resnet18' or 'resnet50'"),
        (np.full((2, 8, 8), 255.0), {}, r"scaled to \[0, 1\]"),
        (np.zeros((2, 8, 8)), {"batch_size": 0}, "batch_size"),
        (np.zeros((2, 8, 8)), {"size": 16}, "size must be"),
        ([], {}, "empty list"),
        (["/no/such/image.png"], {}, "do not exist"),
        ([1, 2], {}, "file paths"),
        ({"a": 1}, {}, "must be an array"),
    ],
)
def test_errors(images, kw, message):
    kw = {"model": "resnet18", "weights": None, "size": 32, "progress": False} | kw
    with pytest.raises(ValueError, match=message):
        extract_features(images, **kw)


def test_directory_without_images(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        extract_features(tmp_path, "resnet18", weights=None, progress=False)
    with pytest.raises(ValueError, match="not a directory"):
        extract_features(str(tmp_path / "missing"), "resnet18", weights=None, progress=False)


def test_random_weights_warn_once_in_plain_words():
    X = np.zeros((2, 32, 32), dtype=np.uint8)
    with pytest.warns(UserWarning) as record:
        extract_features(X, "resnet18", weights=None, size=32, batch_size=1, progress=False)
    assert len(record) == 1  # once per call, not once per batch
    message = str(record[0].message)
    assert "random weights" in message and "not of a pretrained network" in message
    assert record[0].filename == __file__  # points at the caller's line


def test_pretrained_or_file_weights_do_not_warn(resnet18_file, recwarn):
    _extract(np.zeros((1, 32, 32), dtype=np.uint8), resnet18_file)
    assert not [w for w in recwarn if "random weights" in str(w.message)]


def test_progress_bar_line_is_ended_when_a_batch_fails(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "0.png")
    (tmp_path / "1.png").write_bytes(b"not a png")
    with pytest.raises(OSError), pytest.warns(UserWarning, match="random weights"):
        extract_features(tmp_path, "resnet18", weights=None, size=32, batch_size=1)
    err = capsys.readouterr().err
    assert "resnet18 features" in err and err.endswith("\n")  # the bar was closed
