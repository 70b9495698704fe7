"""``vitreg data`` (vitreg.data.catalog, download, arrange, fetch): tiny archives in each source's real layout,
served by a local HTTP server with range requests, are downloaded, checked, arranged, and read by the
notebooks' own loaders; interrupted, corrupt, mismatched and full-disk transfers leave nothing half-done.
Paper: Tables 1-3 (the datasets of notebooks 06, 08, 09)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import re
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vitreg.data import arrange, catalog, download, fetch
from vitreg.utils.paths import repo_root


# --- a local server with range requests ------------------------------------------------------------
class Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1; honours ``Range: bytes=N-``; can cut a transfer short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body) - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                cut = server.cut.pop(self.path, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def online(monkeypatch, tmp_path):
    """A connected machine (for the loopback server) with its datasets folder in tmp."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VITREG_OFFLINE", raising=False)
    monkeypatch.setenv("VITREG_DATA", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


# --- tiny archives in each source's layout --------------------------------------------------------
def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def tar_of(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def voc_xml(objects: list[tuple[str, tuple[int, int, int, int], int]], hw=(10, 12)) -> bytes:
    """A VOC annotation: objects of (class, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)."""
    objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    return (f"<annotation><folder>VOC2007</folder><size><width>{hw[1]}</width><height>{hw[0]}</height><depth>3</depth>"
            f"</size>{objs}</annotation>").encode()


#: planted VOC annotations: image id -> objects; the single label is the largest non-difficult object
VOC_TRAINVAL = {"000005": [("chair", (2, 2, 10, 9), 0), ("dog", (1, 1, 3, 3), 0)],
                "000007": [("car", (1, 1, 12, 10), 1), ("person", (1, 1, 4, 4), 0)],
                "000009": [("horse", (3, 3, 5, 5), 1), ("cat", (1, 1, 2, 2), 1)]}
VOC_TRAIN_LABELS = {"000005": "chair", "000007": "person", "000009": "horse"}
VOC_TEST = {"000001": [("dog", (1, 1, 12, 10), 0)], "000002": [("cat", (2, 2, 8, 8), 0), ("dog", (1, 1, 2, 2), 0)]}


def voc_tar(year: str, objects: dict, list_name: str) -> bytes:
    base = f"VOCdevkit/VOC{year}"
    members = {f"{base}/ImageSets/Main/{list_name}": ("\n".join(objects) + "\n").encode()}
    for i, (img_id, objs) in enumerate(objects.items()):
        members[f"{base}/Annotations/{img_id}.xml"] = voc_xml(objs)
        members[f"{base}/JPEGImages/{img_id}.jpg"] = jpeg((40 * i, 80, 120))
    return tar_of(members)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write_manifest(path: Path, entries: dict) -> dict[str, catalog.Entry]:
    path.write_text(yaml.safe_dump(entries))
    return catalog.load_manifest(path)


def auto_entry(files: list[dict], arrange_: str, where: str, **extra) -> dict:
    return {"title": "t", "used_by": ["test"], "get": "auto", "download_mb": 0.001, "disk_mb": 0.001,
            "licence": "https://example.org/terms (test terms)", "where": where, "layout": where,
            "files": files, "arrange": arrange_, **extra}


def file_entry(server: Server, name: str, data: bytes, *, checksum: bool = True) -> dict:
    server.files[f"/{name}"] = data
    f = {"name": name, "urls": [f"{server.url}/{name}"]}
    return {**f, "md5": md5(data), "checksum_from": "the test"} if checksum else {**f, "checksum": "none published"}


# --- download -> verify -> unpack -> the notebooks' loaders read it --------------------------------
def test_voc07_and_voc_classification_reach_the_loaders_of_08_and_06(server, online, tmp_path, capsys):
    from vitreg.data.boxes import open_box_dataset
    from vitreg.data.datasets import load_dataset

    m = write_manifest(tmp_path / "m.yaml", {
        "voc07": auto_entry([file_entry(server, "VOCtrainval_06-Nov-2007.tar", voc_tar("2007", VOC_TRAINVAL,
                                                                                      "trainval.txt"))],
                            "voc", "VOCdevkit/VOC2007", counts={"JPEGImages": 3, "Annotations": 3}),
        "voc": auto_entry([file_entry(server, "VOCtest_06-Nov-2007.tar", voc_tar("2007", VOC_TEST, "test.txt"))],
                          "voc_classification", "voc", needs=["voc07"], counts={"train": 3, "test": 2}),
    })
    assert catalog.state(m["voc"]) == "downloadable"
    fetch.download("voc", manifest=m)  # fetches voc07 first
    out = capsys.readouterr().out
    assert "test terms" in out  # the terms, printed on the first download
    ds = open_box_dataset("VOC07", online, limit=None)
    assert ds is not None and [s for s in ds.ids] == list(VOC_TRAINVAL)
    assert ds[0].boxes.tolist() == [[1, 1, 10, 9], [0, 0, 3, 3]]  # LOST's xmin - 1 convention on the planted boxes
    train = load_dataset("voc", "train", root=online)
    got = {Path(p).stem: train.classes[c] for p, c in train.parts[0].samples}
    assert got == VOC_TRAIN_LABELS
    test = load_dataset("voc", "test", root=online)
    assert sorted(test.classes) == ["cat", "dog"] and len(test) == 2
    assert fetch.verify("voc07", manifest=m) == [] and fetch.verify("voc", manifest=m) == []
    assert catalog.state(m["voc"]) == "present"
    record = fetch.read_provenance("voc07", manifest=m)
    assert record["files"][0]["checked"].startswith(f"md5 {m['voc07'].files[0].digest}")
    assert fetch.read_provenance("voc", manifest=m)["files"][0]["name"] == "VOCtest_06-Nov-2007.tar"
    assert not (online / ".staging").exists() and not (online / ".downloads").exists()
    fetch.download("voc07", manifest=m, force=True)
    assert "test terms" not in capsys.readouterr().out  # only on the first download


def classes_zip(top: str, classes: dict[str, int], *, inner_tar: str | None = None) -> bytes:
    members = {f"{top}/{c}/image_{i:04d}.jpg": jpeg((10 * k, 20 * i, 50)) for k, (c, n) in enumerate(classes.items())
               for i in range(1, n + 1)}
    if inner_tar:
        return zip_of({inner_tar: tar_of(members, "w:gz"), "caltech-101/show_annotation.m": b"%"})
    return zip_of(members)


def test_caltech101_gets_its_seeded_split_without_the_background_class(server, online, tmp_path):
    from vitreg.data.datasets import load_dataset

    archive = classes_zip("101_ObjectCategories", {"accordion": 5, "airplanes": 4, "BACKGROUND_Google": 3},
                          inner_tar="caltech-101/101_ObjectCategories.tar.gz")
    split = {"seed": 0, "train_per_class": 2, "test_per_class": None, "drop": ["BACKGROUND_Google"]}
    m = write_manifest(tmp_path / "m.yaml", {"caltech101": auto_entry(
        [file_entry(server, "caltech-101.zip", archive)], "caltech101", "caltech101", split=split,
        counts={"train": 4, "test": 5}, classes={"train": 2, "test": 2})})
    fetch.download("caltech101", manifest=m)
    train, test = load_dataset("caltech101", "train", root=online), load_dataset("caltech101", "test", root=online)
    assert train.classes == ["accordion", "airplanes"] and len(train) == 4 and len(test) == 5
    names = {Path(p).name for p, _ in train.parts[0].samples + test.parts[0].samples if "accordion" in p}
    assert names == {f"image_{i:04d}.jpg" for i in range(1, 6)}  # every image in exactly one split
    files = [Path(f"image_{i:04d}.jpg") for i in range(1, 6)]
    expect = arrange.seeded_split(files, "accordion", seed=0, train_per_class=2, test_per_class=None)[0]
    assert sorted(Path(p).name for p, c in train.parts[0].samples if c == 0) == sorted(f.name for f in expect)
    # the seed decides: another seed draws another training pair for some class
    draws = {tuple(f.name for f in arrange.seeded_split(files, "accordion", seed=s, train_per_class=2,
                                                         test_per_class=None)[0]) for s in range(6)}
    assert len(draws) > 1


def test_sun397_classes_are_their_paths_and_cub_follows_its_own_split(server, online, tmp_path):
    from vitreg.data.datasets import load_dataset

    sun = {"SUN397/ClassName.txt": b"/a/abbey\n/a/apartment_building/outdoor\n"}
    sun |= {f"SUN397/a/abbey/sun_a{i}.jpg": jpeg((i, 0, 0)) for i in range(3)}
    sun |= {f"SUN397/a/apartment_building/outdoor/sun_b{i}.jpg": jpeg((0, i, 0)) for i in range(3)}
    cub = {"CUB_200_2011/images.txt": b"1 001.Albatross/a1.jpg\n2 001.Albatross/a2.jpg\n3 002.Auklet/b1.jpg\n",
           "CUB_200_2011/train_test_split.txt": b"1 1\n2 0\n3 1\n",
           "CUB_200_2011/images/001.Albatross/a1.jpg": jpeg((1, 2, 3)),
           "CUB_200_2011/images/001.Albatross/a2.jpg": jpeg((3, 2, 1)),
           "CUB_200_2011/images/002.Auklet/b1.jpg": jpeg((9, 9, 9))}
    m = write_manifest(tmp_path / "m.yaml", {
        "sun": auto_entry([file_entry(server, "SUN397.tar.gz", tar_of(sun, "w:gz"))], "sun397", "sun",
                          split={"seed": 0, "train_per_class": 1, "test_per_class": 1},
                          counts={"train": 2, "test": 2}, classes={"train": 2, "test": 2}),
        "cub": auto_entry([file_entry(server, "CUB_200_2011.tgz", tar_of(cub, "w:gz"), checksum=False)], "cub",
                          "cub", counts={"train": 2, "test": 1}),
    })
    fetch.download("sun", manifest=m)
    fetch.download("cub", manifest=m)
    assert load_dataset("sun", "train", root=online).classes == ["abbey", "apartment_building_outdoor"]
    train, test = load_dataset("cub", "train", root=online), load_dataset("cub", "test", root=online)
    assert [Path(p).name for p, _ in train.parts[0].samples] == ["a1.jpg", "b1.jpg"]
    assert [Path(p).name for p, _ in test.parts[0].samples] == ["a2.jpg"]


def test_ade20k_and_coco20k_reach_the_loaders_of_09_and_08(server, online, tmp_path):
    from vitreg.data.boxes import open_box_dataset
    from vitreg.data.dense import ade20k_pairs, read_ade20k_label

    label = np.array([[0, 1, 2], [150, 3, 0]], dtype=np.uint8)
    ade = {f"ADEChallengeData2016/images/{s}/ADE_{s}_1.jpg": jpeg((5, 5, 5), (3, 2)) for s in ("training", "validation")}
    ade |= {f"ADEChallengeData2016/annotations/{s}/ADE_{s}_1.png": png(label) for s in ("training", "validation")}
    ids = [9, 25, 30]
    listed = [f"COCO_train2014_{i:012d}.jpg" for i in ids[:2]]
    coco_imgs = zip_of({f"train2014/COCO_train2014_{i:012d}.jpg": jpeg((i, i, i), (16, 12)) for i in ids})
    anns = {"images": [{"id": i, "height": 12, "width": 16} for i in ids],
            "annotations": [{"image_id": 9, "bbox": [1.2, 2.0, 5.0, 4.4], "iscrowd": 0},
                            {"image_id": 9, "bbox": [0, 0, 16, 12], "iscrowd": 1},
                            {"image_id": 25, "bbox": [3, 3, 2, 2], "iscrowd": 0}]}
    coco_anns = zip_of({"annotations/instances_train2014.json": json.dumps(anns).encode(),
                        "annotations/captions_train2014.json": b"{}"})
    m = write_manifest(tmp_path / "m.yaml", {
        "ade20k": auto_entry([file_entry(server, "ADEChallengeData2016.zip", zip_of(ade), checksum=False)], "ade20k",
                             "ade20k/ADEChallengeData2016", counts={"images/training": 1, "annotations/validation": 1}),
        "coco20k": auto_entry([file_entry(server, "coco_20k_filenames.txt", ("\n".join(listed) + "\n").encode(), checksum=False),
                               file_entry(server, "annotations_trainval2014.zip", coco_anns, checksum=False),
                               file_entry(server, "train2014.zip", coco_imgs, checksum=False)],
                              "coco20k", "COCO", counts={"images/train2014": 2}),
    })
    fetch.download("ade20k", manifest=m)
    fetch.download("coco20k", manifest=m)
    pairs = ade20k_pairs("val", data_dir=online)
    assert len(pairs) == 1 and read_ade20k_label(pairs[0][1]).tolist() == [[255, 0, 1], [149, 2, 255]]
    coco = open_box_dataset("COCO20k", online)
    assert [s.strip() for s in coco.files] == listed
    assert coco[0].boxes.tolist() == [[1, 2, 6, 6]]  # crowd box dropped, [x, y, w, h] -> xyxy rounded
    assert not (online / "COCO" / "images" / "train2014" / "COCO_train2014_000000000030.jpg").exists()


# --- transfers that fail ---------------------------------------------------------------------------
@pytest.mark.robustness("nothing lost")
def test_an_interrupted_transfer_resumes_with_a_range_request(server, online):
    data = bytes(range(256)) * 4000
    server.files["/big.bin"] = data
    server.cut["/big.bin"] = 300_000
    dest = online / "big.bin"
    with pytest.raises(download.DownloadError, match="kept"):
        download.fetch([f"{server.url}/big.bin"], dest, algorithm="md5", digest=md5(data))
    part = dest.with_name("big.bin.part")
    assert part.stat().st_size == 300_000 and not dest.exists()
    download.fetch([f"{server.url}/big.bin"], dest, algorithm="md5", digest=md5(data))
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("/big.bin", "bytes=300000-")


@pytest.mark.robustness("clear error")
def test_a_checksum_mismatch_names_the_file_and_both_hashes(server, online, tmp_path):
    archive = voc_tar("2007", VOC_TRAINVAL, "trainval.txt")
    entry = auto_entry([file_entry(server, "VOCtrainval_06-Nov-2007.tar", archive)], "voc", "VOCdevkit/VOC2007")
    entry["files"][0]["md5"] = md5(b"the published file")
    m = write_manifest(tmp_path / "m.yaml", {"voc07": entry})
    with pytest.raises(fetch.DataError) as err:
        fetch.download("voc07", manifest=m)
    text = str(err.value)
    assert "VOCtrainval_06-Nov-2007.tar" in text and md5(b"the published file") in text and md5(archive) in text
    assert not (online / "VOCdevkit").exists()
    assert not list((online / ".downloads").rglob("*.tar*"))  # the bad file is not kept to be trusted later


@pytest.mark.robustness("nothing lost")
def test_a_corrupt_archive_is_refused_and_nothing_is_moved_into_place(server, online, tmp_path):
    ade = zip_of({"ADEChallengeData2016/images/training/a.jpg": jpeg((1, 1, 1)) * 20,
                  "ADEChallengeData2016/annotations/training/a.png": png(np.zeros((4, 4), np.uint8))})
    broken = ade[:len(ade) // 2] + bytes(len(ade) - len(ade) // 2)  # no published checksum to catch it
    m = write_manifest(tmp_path / "m.yaml", {"ade20k": auto_entry(
        [file_entry(server, "ADEChallengeData2016.zip", broken, checksum=False)], "ade20k",
        "ade20k/ADEChallengeData2016", counts={"images/training": 1})})
    with pytest.raises(fetch.DataError, match="ADEChallengeData2016.zip") as err:
        fetch.download("ade20k", manifest=m)
    assert "nothing was moved into place" in str(err.value)
    assert not (online / "ade20k").exists() and not (online / ".staging").exists()


@pytest.mark.robustness("nothing lost")
def test_wrong_counts_are_refused_before_anything_is_moved(server, online, tmp_path):
    m = write_manifest(tmp_path / "m.yaml", {"voc07": auto_entry(
        [file_entry(server, "VOCtrainval_06-Nov-2007.tar", voc_tar("2007", VOC_TRAINVAL, "trainval.txt"))],
        "voc", "VOCdevkit/VOC2007", counts={"JPEGImages": 5011})})
    with pytest.raises(fetch.DataError, match="3 files, expected 5011"):
        fetch.download("voc07", manifest=m)
    assert not (online / "VOCdevkit").exists()


@pytest.mark.robustness("nothing lost")
def test_a_full_disk_while_unpacking_leaves_the_previous_state_and_the_download(server, online, tmp_path, monkeypatch):
    m = write_manifest(tmp_path / "m.yaml", {"voc07": auto_entry(
        [file_entry(server, "VOCtrainval_06-Nov-2007.tar", voc_tar("2007", VOC_TRAINVAL, "trainval.txt"))],
        "voc", "VOCdevkit/VOC2007")})
    previous = online / "VOCdevkit" / "VOC2007"
    (previous / "Annotations").mkdir(parents=True)
    (previous / "JPEGImages").mkdir()
    (previous / "mine.txt").write_text("the earlier copy")
    real_unpack = arrange.unpack

    def full(archive, dest):
        real_unpack(archive, dest)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(arrange, "unpack", full)
    with pytest.raises(fetch.DataError, match="No space left") as err:
        fetch.download("voc07", manifest=m, force=True)
    assert "nothing was moved into place" in str(err.value)
    assert (previous / "mine.txt").read_text() == "the earlier copy" and not (previous / "ImageSets").exists()
    assert (online / ".downloads" / "voc07" / "VOCtrainval_06-Nov-2007.tar").exists()  # nothing fetched is lost
    assert not (online / ".staging").exists()
    n = len(server.requests)
    monkeypatch.setattr(arrange, "unpack", real_unpack)
    fetch.download("voc07", manifest=m, force=True)  # the rerun uses the kept archive
    assert len(server.requests) == n and not (previous / "mine.txt").exists()
    assert (previous / "ImageSets" / "Main" / "trainval.txt").exists()


@pytest.mark.robustness("clear error")
def test_too_little_disk_stops_before_any_byte_is_fetched(server, online, tmp_path, monkeypatch):
    m = write_manifest(tmp_path / "m.yaml", {"voc07": auto_entry(
        [file_entry(server, "VOCtrainval_06-Nov-2007.tar", voc_tar("2007", VOC_TRAINVAL, "trainval.txt"))],
        "voc", "VOCdevkit/VOC2007", download_mb=460, disk_mb=460)})
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 10**8, 10**8))
    with pytest.raises(fetch.DataError, match=r"needs about 0.9 GB free .* only 0.1 GB"):
        fetch.download("voc07", manifest=m)
    assert server.requests == []


# --- offline, the run, the manual sets ----------------------------------------------------------------
@pytest.mark.robustness("handled")
def test_offline_nothing_is_fetched_and_the_command_is_named(server, online, tmp_path, monkeypatch, capsys):
    m = write_manifest(tmp_path / "m.yaml", {
        "voc07": auto_entry([file_entry(server, "v.tar", b"x")], "voc", "VOCdevkit/VOC2007"),
        "imagenet1k": {"title": "ImageNet", "used_by": ["t"], "get": "manual", "download_mb": 1, "disk_mb": 1,
                       "licence": "https://image-net.org", "where": "imagenet1k", "layout": "imagenet1k/{train,val}",
                       "how": "register at image-net.org"}})
    params = {"08_lost": {"datasets": ["VOC07", "synthetic"]}, "09_downstream": {"imagenet_root": None}}
    assert fetch.datasets_for(params, m) == {"voc07": ["08_lost"], "imagenet1k": ["09_downstream"]}
    monkeypatch.setenv("VITREG_OFFLINE", "1")
    assert fetch.fetch_for_run(params, manifest=m) == []
    out = capsys.readouterr().out
    assert "offline" in out and "`vitreg data download voc07`" in out and "imagenet1k (09_downstream)" in out
    monkeypatch.delenv("VITREG_OFFLINE")
    monkeypatch.setenv(fetch.FETCH_ENV, "none")
    assert fetch.fetch_for_run(params, manifest=m) == [] and server.requests == []
    with pytest.raises(fetch.NeedsYou, match="register at image-net.org"):
        fetch.download("imagenet1k", manifest=m)


def test_the_run_fetches_what_its_notebooks_read_after_saying_how_much(server, online, tmp_path, capsys):
    m = write_manifest(tmp_path / "m.yaml", {"voc07": auto_entry(
        [file_entry(server, "VOCtrainval_06-Nov-2007.tar", voc_tar("2007", VOC_TRAINVAL, "trainval.txt"))],
        "voc", "VOCdevkit/VOC2007", download_mb=460)})
    assert fetch.fetch_for_run({"08_lost": {"datasets": ["VOC07"]}}, manifest=m) == ["voc07"]
    out = capsys.readouterr().out
    assert out.index("~460 MB in all") < out.index("fetching VOCtrainval")
    assert fetch.fetch_for_run({"08_lost": {"datasets": ["VOC07"]}}, manifest=m) == []  # present now


def test_vitreg_data_list_works_offline_and_shows_every_dataset_with_its_state(tmp_path, monkeypatch, capsys):
    from vitreg.cli.main import main

    monkeypatch.setenv("VITREG_DATA", str(tmp_path))
    (tmp_path / "cub" / "train").mkdir(parents=True)
    (tmp_path / "cub" / "test").mkdir()
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    manifest = catalog.load_manifest()
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line and not line.startswith(" ")}
    assert set(manifest) <= set(rows)
    assert rows["cub"][0] == "present" and rows["imagenet1k"] == ["needs", "you"] and rows["voc07"][0] == "downloadable"
    assert main(["data", "where", "VOC07"]) == 0 and str(tmp_path / "VOCdevkit" / "VOC2007") in capsys.readouterr().out
    assert main(["data", "verify", "nope"]) == 2


# --- the manifest itself -------------------------------------------------------------------------------
def test_every_recorded_checksum_is_the_one_in_the_code_it_cites():
    import torchvision

    tv = Path(torchvision.__file__).parent
    manifest = catalog.load_manifest()
    cited = 0
    for e in manifest.values():
        for f in e.files:
            assert f.algorithm or "none published" in f.checksum_note, f"{e.name}/{f.name}: no checksum, no note"
            if f.algorithm:
                assert f.checksum_from.startswith("torchvision/datasets/"), f"{e.name}/{f.name}: who published it?"
                source = (tv / f.checksum_from.removeprefix("torchvision/")).read_text()
                assert f.digest in source and f.urls[0].rsplit("/", 1)[1] in source, f"{e.name}/{f.name}"
                cited += 1
    assert cited >= 5


def test_the_manifest_covers_every_dataset_the_notebooks_read():
    from vitreg.cli.runner import merged_parameters, planned_parameters
    from vitreg.data.datasets import DATASETS, PAPER_DATASETS
    from vitreg.experiments.params import load_order

    manifest = catalog.load_manifest()
    assert set(PAPER_DATASETS) <= set(manifest)
    names = [e["notebook"] for e in load_order()]
    merged = merged_parameters(planned_parameters(names, "real", repo_root() / "build" / "x"))
    read = fetch.datasets_for(merged, manifest)
    assert {"voc07", "voc12", "coco20k", "ade20k", "nyud", "imagenet1k", "cub", "sun"} <= set(read)
    assert read["voc07"] == ["08_lost", "10_test_time_registers"]
    for name, e in manifest.items():
        if name in DATASETS:  # the classification loader reads the same folder the manifest arranges
            assert e.where == name


@pytest.mark.robustness("clear error")
def test_a_checksum_without_its_publisher_is_refused(tmp_path):
    bad = auto_entry([{"name": "a.tar", "urls": ["http://x/a.tar"], "md5": "0" * 32}], "voc", "v")
    with pytest.raises(catalog.ManifestError, match="checksum_from"):
        write_manifest(tmp_path / "m.yaml", {"voc07": bad})
    bad["files"][0] = {"name": "a.tar", "urls": ["http://x/a.tar"]}
    with pytest.raises(catalog.ManifestError, match="none published"):
        write_manifest(tmp_path / "m.yaml", {"voc07": bad})


def test_the_readme_data_table_is_the_manifests():
    readme = (repo_root() / "README.md").read_text()
    assert catalog.render_table() in readme, "README's data table is not vitreg.data.catalog.render_table()"


def test_a_real_run_fetches_its_notebooks_sets_before_the_first_notebook_and_smoke_does_not(
        server, online, tmp_path, monkeypatch, capsys):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from vitreg.cli import runner
    from vitreg.experiments import catalog as catalog_experiments
    from vitreg.experiments.params import cell_experiment

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    nb = new_notebook(cells=[new_code_cell('profile = "real"\npretrained = False\ndevice = "auto"\nseed = 0\ndatasets = ["VOC07"]\n'
                                           'output_dir = ".."', metadata={"tags": ["parameters"]})])
    nbformat.write(nb, project / "notebooks" / "08_lost.ipynb")
    (project / "notebooks" / "order.yaml").write_text("- notebook: 08_lost\n")
    # the project's 08 is this small notebook (random weights), not the catalog's
    monkeypatch.setattr(catalog_experiments, "experiment",
                        lambda name: cell_experiment(project / "notebooks" / f"{name}.ipynb"))
    m = write_manifest(tmp_path / "m.yaml", {"voc07": auto_entry(
        [file_entry(server, "VOCtrainval_06-Nov-2007.tar", voc_tar("2007", VOC_TRAINVAL, "trainval.txt"))],
        "voc", "VOCdevkit/VOC2007", counts={"JPEGImages": 3})})
    monkeypatch.setattr(catalog, "load_manifest", lambda path=None: m)
    monkeypatch.setattr(fetch, "load_manifest", lambda path=None: m)
    monkeypatch.setattr(runner, "ensure_kernel", lambda: None)
    seen = []
    monkeypatch.setattr(runner, "_run_all", lambda *a: seen.append((online / "VOCdevkit" / "VOC2007").is_dir()))
    runner.run("smoke", root=project, out_dir=project / "out", report=False)
    assert seen == [False] and server.requests == []
    runner.run("real", root=project, out_dir=project / "out", report=False)
    assert seen == [False, True]
    assert "fetching 1 datasets the notebooks read" in capsys.readouterr().out


def test_nyud_labelled_frames_reach_the_loader_of_09_with_their_depths_in_millimetres(server, online, tmp_path):
    h5py = pytest.importorskip("h5py")  # a declared dependency (pyproject.toml); MATLAB v7.3 files are HDF5
    from scipy.io import savemat

    from vitreg.data.dense import nyud_pairs, read_nyud_depth

    rng = np.random.default_rng(0)
    n, w, h = 3, 8, 6
    images = rng.integers(0, 255, size=(n, 3, w, h), dtype=np.uint8)  # MATLAB's column-major order, as h5py reads it
    depths = np.round(rng.uniform(0.5, 9.5, size=(n, w, h)), 3).astype(np.float32)
    with h5py.File(tmp_path / "labelled.mat", "w") as f:
        f["images"], f["depths"] = images, depths
    savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [3]]), "testNdxs": np.array([[2]])})
    m = write_manifest(tmp_path / "m.yaml", {"nyud": auto_entry(
        [file_entry(server, "nyu_depth_v2_labeled.mat", (tmp_path / "labelled.mat").read_bytes(), checksum=False),
         file_entry(server, "splits.mat", (tmp_path / "splits.mat").read_bytes(), checksum=False)],
        "nyud", "nyud", counts={"train": 4, "test": 2})})
    fetch.download("nyud", manifest=m)
    test = nyud_pairs("test", data_dir=online)
    assert [(p.name, d.name) for p, d in test] == [("rgb_00002.jpg", "sync_depth_00002.png")]
    assert np.abs(read_nyud_depth(test[0][1]) - depths[1].T).max() < 1e-3 + 1e-6  # millimetres, frame upright
    with Image.open(test[0][0]) as im:
        assert im.size == (w, h)
    assert [p.name for p, _ in nyud_pairs("train", data_dir=online)] == ["rgb_00001.jpg", "rgb_00003.jpg"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_reproduce_data_none_reaches_the_run_and_plain_reproduce_fetches():
    import subprocess

    def run_line(*extra: str) -> str:
        out = subprocess.run(["make", "-n", "-C", str(repo_root()), "STAMP=README.md", "reproduce", *extra],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line for line in out if "vitreg run --profile real" in line)

    assert run_line("DATA=none").startswith(f"{fetch.FETCH_ENV}=none ")
    assert fetch.FETCH_ENV not in run_line()


@pytest.mark.robustness("nothing lost")
def test_a_full_disk_during_the_transfer_keeps_what_arrived_and_the_next_try_resumes(server, online, tmp_path,
                                                                                      monkeypatch):
    archive = voc_tar("2007", VOC_TRAINVAL, "trainval.txt")
    m = write_manifest(tmp_path / "m.yaml", {"voc07": auto_entry(
        [file_entry(server, "VOCtrainval_06-Nov-2007.tar", archive)], "voc", "VOCdevkit/VOC2007")})
    real_open = open

    class FullAfter:
        """A file that takes 1,000 bytes, then reports a full disk."""

        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, block):
            if self.n + len(block) > 1000:
                self.f.write(block[:1000 - self.n])
                self.n = 1000
                raise OSError(errno.ENOSPC, "No space left on device")
            self.n += len(block)
            return self.f.write(block)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(download, "CHUNK", 512)
    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: FullAfter(real_open(p, mode, *a, **k))
                        if str(p).endswith(".part") else real_open(p, mode, *a, **k))
    with pytest.raises(fetch.DataError, match="No space left.*next try resumes"):
        fetch.download("voc07", manifest=m)
    part = online / ".downloads" / "voc07" / "VOCtrainval_06-Nov-2007.tar.part"
    assert part.stat().st_size == 1000 and not (online / "VOCdevkit").exists()
    monkeypatch.setattr("builtins.open", real_open)
    fetch.download("voc07", manifest=m)
    assert server.requests[-1][1] == "bytes=1000-"
    assert (online / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").exists()
