"""Box datasets and geometry for Table 3: IoU and CorLoc on hand-computed cases, VOC/COCO parsing on
tiny planted folders, missing data skipped with a clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vitreg.data.boxes import (COCO20kBoxes, SyntheticBoxes, box_iou, coco_boxes_from_annotations, corloc, corloc_hits,
                          data_root, open_box_dataset, parse_voc_xml)


def test_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [2, 2, 4, 4], [20, 20, 30, 30]])
    iou = box_iou(a, b)[0].tolist()
    assert iou == pytest.approx([1.0, 50 / 150, 0.0, 4 / 100, 0.0])
    assert box_iou(b, a).shape == (5, 1)
    with pytest.raises(ValueError):
        box_iou([5, 5, 0, 0], a)


def test_corloc_hand_computed():
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    gt = [
        np.array([[50, 50, 60, 60], [0, 0, 10, 11]]),  # the second box matches (IoU 100/110)
        np.array([[5, 0, 15, 10]]),  # IoU 1/3: a miss
        np.zeros((0, 4)),  # no ground truth: a miss, as in LOST
        np.array([[0, 0, 10, 20]]),  # IoU exactly 0.5: a hit (>=)
    ]
    assert corloc_hits(pred, gt).tolist() == [True, False, False, True]
    assert corloc(pred, gt) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        corloc(pred, gt[:2])


def _voc_xml(objects: list[tuple[str, int, int, int, int]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    return f"<annotation><size><width>40</width><height>30</height><depth>3</depth></size>{objs}</annotation>"


def test_voc_folder_is_parsed_with_lost_conventions(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / d).mkdir(parents=True)
    (voc / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n")
    (voc / "Annotations/000001.xml").write_text(_voc_xml([("dog", 1, 1, 40, 30), ("cat", 11, 6, 20, 15)]))
    (voc / "Annotations/000002.xml").write_text(_voc_xml([("car", 5, 5, 9, 9)]))
    for i in ("000001", "000002"):
        Image.new("RGB", (40, 30)).save(voc / "JPEGImages" / f"{i}.jpg")
    boxes, names, hw = parse_voc_xml(voc / "Annotations/000001.xml")
    assert boxes.tolist() == [[0, 0, 40, 30], [10, 5, 20, 15]] and names == ["dog", "cat"] and hw == (30, 40)
    ds = open_box_dataset("VOC07", tmp_path)
    assert ds is not None and ds.name == "VOC07" and len(ds) == 2
    s = ds[1]
    assert s.name == "000002" and s.image.size == (40, 30) and s.boxes.tolist() == [[4, 4, 9, 9]]
    assert len(open_box_dataset("VOC07", tmp_path, limit=1)) == 1


def test_coco20k_uses_the_list_and_drops_crowd_boxes(tmp_path):
    img_dir = tmp_path / "COCO" / "images" / "train2014"
    img_dir.mkdir(parents=True)
    (tmp_path / "COCO" / "annotations").mkdir()
    names = ["COCO_train2014_000000000009.jpg", "COCO_train2014_000000000025.jpg"]
    for n in names:
        Image.new("RGB", (20, 10)).save(img_dir / n)
    (tmp_path / "coco_20k_filenames.txt").write_text("\n".join(names) + "\n")
    anns = [
        {"image_id": 9, "bbox": [1.2, 2.0, 3.0, 4.4], "iscrowd": 0},
        {"image_id": 9, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        {"image_id": 25, "bbox": [0, 0, 2, 2], "iscrowd": 0},
        {"image_id": 77, "bbox": [0, 0, 2, 2], "iscrowd": 0},  # not in the list
    ]
    (tmp_path / "COCO/annotations/instances_train2014.json").write_text(json.dumps({"annotations": anns}))
    ds = open_box_dataset("COCO20k", tmp_path)
    assert isinstance(ds, COCO20kBoxes) and len(ds) == 2
    assert ds[0].boxes.tolist() == [[1, 2, 4, 6]]
    assert ds[1].boxes.tolist() == [[0, 0, 2, 2]] and ds[1].name.endswith("000000000025")
    assert coco_boxes_from_annotations([anns[1]]).shape == (0, 4)


def test_missing_datasets_are_skipped_with_a_clear_line(tmp_path, capsys):
    for name in ("VOC07", "VOC12", "COCO20k"):
        assert open_box_dataset(name, tmp_path / "nothing") is None
        out = capsys.readouterr().out
        assert out.startswith(f"SKIPPED {name}") and "VITREG_DATA" in out
    with pytest.raises(ValueError):
        open_box_dataset("VOC99", tmp_path)


def test_data_root_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VITREG_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("VITREG_DATA")
    assert data_root().parts[-2:] == ("data", "datasets")


def test_synthetic_boxes_hold_the_planted_object():
    ds = SyntheticBoxes(n=4, image_size=(64, 80), seed=3)
    s = ds[2]
    x0, y0, x1, y1 = s.boxes[0].astype(int)
    img = np.asarray(s.image, dtype=float)
    assert img.shape == (64, 80, 3) and 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 64
    obj = np.zeros((64, 80), dtype=bool)
    obj[y0:y1, x0:x1] = True
    assert (~obj).sum() > 0.2 * obj.size  # the object never fills the image
    assert np.abs(img[obj].mean(0) - img[~obj].mean(0)).max() > 40  # and differs from the background
    assert np.array_equal(np.asarray(ds[2].image), np.asarray(SyntheticBoxes(4, (64, 80), 3)[2].image))
    with pytest.raises(IndexError):
        ds[4]


def test_a_truncated_voc_image_is_named(tmp_path):
    """A broken JPEG inside a dataset folder names its path (it raised a bare 'image file is truncated')."""
    from vitreg.data.boxes import VOCBoxes
    from vitreg.core.images import ImageError

    voc = tmp_path / "VOC2007"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n")
    (voc / "Annotations" / "000001.xml").write_text(
        "<annotation><size><width>20</width><height>10</height></size><object><name>cat</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    from PIL import Image

    Image.new("RGB", (20, 10), "red").save(voc / "JPEGImages" / "000001.jpg")
    data = (voc / "JPEGImages" / "000001.jpg").read_bytes()
    (voc / "JPEGImages" / "000001.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="000001.jpg"):
        VOCBoxes(voc)[0]


def test_lost_batches_group_images_of_one_padded_size_and_pad_at_the_bottom_right():
    """LOST's protocol: 375x500 pads to 378x504 with zeros (the normalised mean) at the bottom and
    right only; images of one padded size share a batch, in order of first appearance."""
    import torch
    from PIL import Image

    from vitreg.data.boxes import collate_lost, lost_input, padded_hw, size_batches

    img = Image.fromarray(np.full((375, 500, 3), 200, dtype=np.uint8))
    x = lost_input(img, protocol="padded", patch=14, size=None, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert tuple(x.shape) == (3, 378, 504) and padded_hw((375, 500), 14) == (378, 504)
    assert torch.allclose(x[:, :375, :500], torch.full((3, 375, 500), (200 / 255 - 0.5) / 0.25))
    assert (x[:, 375:] == 0).all() and (x[:, :, 500:] == 0).all()

    class Sized:
        sizes = [(375, 500), (500, 375), (370, 495), (375, 500), (500, 375)]

        def image_hw(self, i):
            return self.sizes[i]

    assert size_batches(Sized(), 5, patch=14, batch_size=2, protocol="padded") == [[0, 2], [3], [1, 4]]
    assert size_batches(Sized(), 5, patch=14, batch_size=2, protocol="stretched") == [[0, 1], [2, 3], [4]]
    small = torch.ones(3, 364, 504)  # a size its dataset declared wrongly: padded further, not a crash
    xb, hw, *_ = collate_lost([(x, (375, 500), np.zeros((0, 4)), "a", 0), (small, (364, 500), np.zeros((0, 4)), "b", 1)])
    assert tuple(xb.shape) == (2, 3, 378, 504) and (xb[1, :, 364:] == 0).all() and hw.tolist() == [[375, 500], [364, 500]]
