"""Datasets (vitreg.data.datasets): folders and torchvision sets load or are skipped with a reason, never
downloaded offline; the synthetic set's classes are a global property. Paper: Table 1 / Table 6."""

from __future__ import annotations

import pytest
import torch

from vitreg.data import datasets as data


def tile_redness(ds: data.SyntheticGlobalDataset, i: int) -> torch.Tensor:
    """(tiles, tiles) mean red-minus-blue per tile of image i."""
    img = ds.image_tensor(i)
    t = ds.tiles
    s = ds.image_size // t
    diff = (img[0] - img[2]).reshape(t, s, t, s).mean(dim=(1, 3))
    return diff


def test_synthetic_classes_differ_globally_not_locally() -> None:
    ds = data.SyntheticGlobalDataset(n=200, num_classes=4, image_size=64, tiles=8, seed=0)
    shares = torch.tensor([float((tile_redness(ds, i) > 0).float().mean()) for i in range(len(ds))])
    targets = torch.tensor([ds.red_share(int(c)) for c in ds.labels])
    nearest = torch.tensor([min(range(4), key=lambda c: abs(ds.red_share(c) - s)) for s in shares.tolist()])
    assert torch.equal(nearest, ds.labels)  # the global share identifies the class: planted signal
    assert torch.allclose(shares, targets, atol=1 / 64 + 1e-6)
    # one tile is weak evidence: the best rule from the centre tile alone is far from perfect
    centre_red = torch.tensor([bool(tile_redness(ds, i)[4, 4] > 0) for i in range(len(ds))])
    best_single = max(
        float(((centre_red & (ds.labels == a)) | (~centre_red & (ds.labels == b))).float().mean())
        for a in range(4) for b in range(4)
    )
    assert best_single < 0.6


def test_synthetic_is_deterministic_and_gives_rgb_images() -> None:
    a = data.load_dataset("synthetic", "train", n=8, image_size=32, seed=3)
    b = data.load_dataset("synthetic", "train", n=8, image_size=32, seed=3)
    test = data.load_dataset("synthetic", "test", n=8, image_size=32, seed=3)
    img, label = a[5]
    assert img.mode == "RGB" and img.size == (32, 32) and label == 1
    assert torch.equal(a.image_tensor(5), b.image_tensor(5))
    assert not torch.equal(a.image_tensor(5), test.image_tensor(5))
    assert data.describe(a)["synthetic"] is True


def test_missing_torchvision_set_is_skipped_offline_without_download(tmp_path, monkeypatch) -> None:
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False, **kw):
            calls.append(download)
            if download:
                raise AssertionError("tried to download while offline")
            raise RuntimeError("Dataset not found or corrupted.")

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds, reason = data.try_load_dataset("cifar10", "train", root=tmp_path, download=True)
    assert ds is None and "offline" in reason and str(tmp_path) in reason
    assert calls == [False]
    with pytest.raises(data.DatasetUnavailable, match="download=False"):
        data.load_dataset("cifar10", "test", root=tmp_path, download=False)


def test_torchvision_set_downloads_when_allowed_online(tmp_path, monkeypatch) -> None:
    import torchvision.datasets as tvd
    from PIL import Image

    class FakeFlowers:
        def __init__(self, root, split="train", download=False):
            if not download:
                raise RuntimeError("Dataset not found")
            self._labels = [0, 1] if split == "train" else [2]

        def __len__(self):
            return len(self._labels)

        def __getitem__(self, i):
            return Image.new("L", (4, 4)), self._labels[i]

    monkeypatch.setattr(tvd, "Flowers102", FakeFlowers)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VITREG_OFFLINE", raising=False)
    ds = data.load_dataset("flowers", "train", root=tmp_path, download=True)
    assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 2]  # train + val
    img, label = ds[2]
    assert img.mode == "RGB" and label == 2


def test_image_folder_from_env_var(tmp_path, monkeypatch) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("ant", "bee"):
            folder = tmp_path / "imagenet1k" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(folder / f"{i}.png")
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    ds = data.load_dataset("imagenet1k", "test")  # reads val/
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 1, 1] and ds.classes == ["ant", "bee"]
    assert ds[3][1] == 1
    direct = data.load_dataset(str(tmp_path / "imagenet1k"), "train")
    assert len(direct) == 4
    ds, reason = data.try_load_dataset("cub", "train")
    assert ds is None and "cub" in reason and "ImageFolder" in reason


def test_subset_is_class_balanced_and_unknown_names_are_refused() -> None:
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 50)
    idx = data.subset_indices(labels, 12, seed=0)
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    assert torch.bincount(labels[idx]).tolist() == [4, 4, 4]
    assert torch.equal(data.subset_indices(labels, None), torch.arange(len(labels)))
    assert data.chance_accuracy(labels) == pytest.approx(50 / 105 * 100)
    with pytest.raises(KeyError, match="known"):
        data.load_dataset("no_such_set", "train")
    with pytest.raises(ValueError, match="split"):
        data.load_dataset("synthetic", "val")


def test_probe_images_fall_back_to_the_photos_and_say_why(tmp_path) -> None:
    from vitreg.data.datasets import probe_images

    images, source, why = probe_images("photos", "test", 3)
    assert (len(images), source, why) == (3, "bundled photos", None)
    images, source, why = probe_images("pets", "test", 2, root=tmp_path, download=False)
    assert (len(images), source) == (2, "bundled photos") and why


# --- the natural images of notebooks 00-04 and 07 (F1-F4, F7) ---------------------------
def _jpeg(path, colour) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, format="JPEG")


def _imagenet_val(root, classes: int = 5, per_class: int = 6) -> None:
    for c in range(classes):
        for i in range(per_class):
            _jpeg(root / "imagenet1k" / "val" / f"n{c:08d}" / f"ILSVRC2012_val_{c * per_class + i:08d}.JPEG",
                  (c * 40, i * 30, 100))


def _imagenette_val(root, classes: int = 3, per_class: int = 4) -> None:
    for c, wnid in enumerate(["n01440764", "n02102040", "n02979186"][:classes]):
        for i in range(per_class):
            _jpeg(root / "imagenette" / "imagenette2" / "val" / wnid / f"img_{c}_{i}.JPEG", (c * 60, i * 40, 50))
            _jpeg(root / "imagenette" / "imagenette2" / "train" / wnid / f"img_{c}_{i}.JPEG", (c * 60, i * 40, 50))


def test_image_sources_are_the_ones_the_parameter_kind_allows() -> None:
    from vitreg.experiments.base import KINDS

    assert all(KINDS["image_source"][1](s) for s in data.IMAGE_SOURCES)
    assert not KINDS["image_source"][1]("imagenet1k")


def test_auto_is_imagenet_val_when_it_is_there_else_imagenette(tmp_path) -> None:
    assert data.resolve_image_source("auto", tmp_path) == "imagenette"
    _imagenet_val(tmp_path)
    assert data.resolve_image_source("auto", tmp_path) == "imagenet1k"
    assert data.resolve_image_source("pets", tmp_path) == "pets"
    with pytest.raises(ValueError, match="one of"):
        data.resolve_image_source("imagenet1k", tmp_path)


def test_natural_images_are_a_seeded_class_balanced_subset_recorded_in_full(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _imagenet_val(tmp_path, classes=5, per_class=6)
    files, record = data.natural_images("auto", 10, seed=3, root=tmp_path)
    assert len(files) == 10 and all(f.is_file() for f in files)
    assert sorted(f.parent.name for f in files) == sorted([f"n{c:08d}" for c in range(5)] * 2)  # 2 per class
    assert record == {"source": "ImageNet-1k val split: 10 of 30 images, class-balanced, seed 3",
                      "dataset": "imagenet1k", "split": "val", "n": 10, "n_available": 30, "seed": 3,
                      "folder": str(tmp_path / "imagenet1k")}
    assert data.natural_images("imagenet", 10, seed=3, root=tmp_path)[0] == files  # the same seed, the same images
    assert data.natural_images("imagenet", 10, seed=4, root=tmp_path)[0] != files
    assert len(data.natural_images("imagenet", 1000, root=tmp_path)[0]) == 30  # at most the split


def test_imagenette_from_torchvision_is_read_from_its_folder_without_decoding(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _imagenette_val(tmp_path)
    files, record = data.natural_images("auto", 6, seed=0, root=tmp_path)
    assert record["dataset"] == "imagenette" and record["split"] == "val" and record["n_available"] == 12
    assert sorted(f.parent.name for f in files) == sorted(["n01440764", "n02102040", "n02979186"] * 2)
    assert all("/val/" in str(f) for f in files)


def test_natural_images_are_never_downloaded_offline_and_say_what_to_do(tmp_path, monkeypatch) -> None:
    import torchvision.datasets as tvd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(tvd.Imagenette, "_download", lambda self: pytest.fail("downloaded while offline"))
    usable, why = data.natural_images_status("auto", tmp_path)
    assert not usable and "offline" in why and "image_dir=" in why and "connect this machine once" in why
    with pytest.raises(data.DatasetUnavailable, match="image_dir="):
        data.natural_images("auto", 256, root=tmp_path)
    usable, why = data.natural_images_status("imagenet", tmp_path)
    assert not usable and "cannot be downloaded" in why
    assert data.natural_images_status("photos", tmp_path) == (True, None)


def test_online_a_missing_torchvision_set_is_usable_with_a_note(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VITREG_OFFLINE", raising=False)
    usable, note = data.natural_images_status("auto", tmp_path)
    assert usable and "downloads it once" in note


def test_a_notebook_run_records_the_natural_image_set_it_used(tmp_path, monkeypatch) -> None:
    import json

    from vitreg.present import notebook
    from vitreg.experiments.params import notebook_defaults
    from vitreg.utils.paths import repo_root

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_DATA", str(tmp_path / "datasets"))
    _imagenet_val(tmp_path / "datasets", classes=4, per_class=3)
    ns = notebook_defaults(repo_root() / "notebooks" / "02_high_norm_tokens.ipynb")
    run = notebook.start("02_high_norm_tokens", {**ns, "output_dir": str(tmp_path), "n_images": 8, "seed": 1})
    assert len(run.images()) == 8
    images = json.loads(run.save({}).read_text())["numbers"]["images"]
    assert images["dataset"] == "imagenet1k" and images["split"] == "val" and images["seed"] == 1
    assert images["n"] == 8 and images["n_available"] == 12


def test_subset_order_is_seeded_and_every_prefix_is_class_balanced() -> None:
    """An ImageFolder lists its items in class order (10 classes of 30 here): the first k of a subset must
    still spread over min(k, 10) classes, in an order the seed sets."""
    labels = torch.arange(10).repeat_interleave(30)
    idx = data.subset_indices(labels, 100, seed=3)
    for k in (1, 5, 10, 25, 100):
        counts = torch.bincount(labels[idx[:k]], minlength=10)
        assert int((counts > 0).sum()) == min(k, 10) and int(counts.max() - counts[counts > 0].min()) <= 1
    assert not torch.equal(idx, torch.sort(idx).values)  # not the folder's class order
    assert torch.equal(idx, data.subset_indices(labels, 100, seed=3))
    assert not torch.equal(idx[:10], data.subset_indices(labels, 100, seed=4)[:10])
    everything = data.subset_indices(labels, 1000, seed=3)
    assert sorted(everything.tolist()) == list(range(300)) and len(set(labels[everything[:10]].tolist())) == 10
    unlabelled = data.subset_indices(300, 20, seed=3)
    assert len(set(unlabelled.tolist())) == 20 and not torch.equal(unlabelled, torch.sort(unlabelled).values)
