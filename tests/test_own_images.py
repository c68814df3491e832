"""Any folder of images (--images DIR), labelled or not: listing, labels, and every command on real files."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.data import bomb_png, gradient

from benchmarks.own_images import awkward_files
from embed.common.identity import EmbeddingKey
from embed.sources.datasets import (
    DatasetError,
    LabelSource,
    labelled,
    list_folder,
    load_folder,
    load_split,
    read_label_file,
)
from embed.sources.imaging import BadImage, load_rgb


def write_jpegs(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gradient(48 + 8 * (i % 4), 40, seed + i)).save(path, "JPEG")


def cli(argv):
    """(exit status, stdout) of ``python -m indexer ARGV`` run in this process."""
    from indexer.cli import main

    out = io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue() + err.getvalue()


# listing and labels (no model) -----------------------------------------------------------------------


def test_a_flat_folder_is_listed_unlabelled_and_named_after_itself(tmp_path):
    folder = tmp_path / "Pictures" / "shop"
    write_jpegs(folder, [f"p{i}.jpg" for i in range(5)])
    images = load_folder(folder)
    assert images.layout == "folder" and images.labels.kind == "none"
    assert [r.relpath for r in images.records] == [f"p{i}.jpg" for i in range(5)]
    assert all(r.class_id == "" for r in images.records) and not images.is_labelled
    assert images.labels_line() == "unlabelled (--labels none): 5 images"
    key = EmbeddingKey("effnet-lite0", images.dataset_name, images.split)
    assert key.collection_name == "effnet_lite0__pictures__shop"


def test_every_awkward_file_is_embedded_or_listed_with_its_reason(tmp_path):
    folder = tmp_path / "mixed"
    expected = awkward_files(folder)
    relpaths, left_out = list_folder(folder)
    reasons = dict(left_out)
    for rel, outcome in expected.items():
        if outcome == "embedded":
            assert rel in relpaths
            im = load_rgb(folder / rel)
            assert im.mode == "RGB" and min(im.size) >= 1
        elif outcome in ("corrupt image", "empty file"):  # listed: the loader refuses it, with the reason
            assert rel in relpaths
            with pytest.raises(BadImage, match=outcome.split()[0]):
                load_rgb(folder / rel)
        else:
            assert outcome in reasons[rel], (rel, reasons.get(rel))
    assert set(relpaths) | set(reasons) == set(expected)  # nothing unaccounted for
    assert load_rgb(folder / "phone/rotated.jpg").size == (40, 56)  # EXIF orientation applied: portrait
    assert load_rgb(folder / "alpha.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    grey = np.asarray(load_rgb(folder / "scans/grey 16-bit.png"))
    assert grey.max() >= 250 and grey.min() <= 5  # 16-bit scaled to 8 bits, not clipped


def test_a_50_megapixel_header_is_listed_and_refused_by_the_pixel_limit(tmp_path):
    folder = tmp_path / "big"
    write_jpegs(folder, ["ok.jpg"])
    (folder / "huge.png").write_bytes(bomb_png(8000, 6400))  # 51.2 MP declared
    images = load_folder(folder)
    assert "huge.png" in [r.relpath for r in images.records]
    with pytest.raises(BadImage, match="too many pixels: 8,000 x 6,400 = 51,200,000; the limit is 50,000,000"):
        load_rgb(folder / "huge.png")


def test_a_label_file_reports_every_problem_with_its_line(tmp_path):
    folder = tmp_path / "tree"
    write_jpegs(folder, ["a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg", "c/5.jpg"])
    (folder / "notes.txt").write_text("x")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label\na/1.jpg,cat\n./a/2.jpg,cat\nb/3.jpg,dog\na/1.jpg,dog\nb/9.jpg,dog\nnotes.txt,x\nc/5.jpg,\n"
    )
    with pytest.raises(DatasetError) as e:
        load_folder(folder, LabelSource("file", csv))
    text = str(e.value)
    assert "line 5: a/1.jpg is listed again (first on line 2)" in text
    assert "line 6: b/9.jpg: no such file" in text
    assert "line 7: notes.txt is in the folder but left out (not an image file name" in text
    assert "line 8: c/5.jpg: empty label" in text
    assert "2 image(s) of the folder have no row: b/4.jpg, c/5.jpg" in text
    assert "5 problem(s)" in text


def test_a_tsv_label_file_labels_the_tree(tmp_path):
    folder = tmp_path / "tree"
    names = ["x/1.jpg", "x/2.jpg", "y/3.jpg", "y/café 4.jpg"]
    write_jpegs(folder, names)
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("".join(f"{n}\t{'red' if i % 2 else 'blue'}\n" for i, n in enumerate(names)))
    images = load_folder(folder, LabelSource("file", tsv))
    assert [r.class_id for r in images.records] == ["blue", "red", "blue", "red"]
    assert images.is_labelled and "labelled by" in images.labels_line() and "2 classes" in images.labels_line()
    assert read_label_file(tsv, folder, names) == {r.relpath: r.class_id for r in images.records}


def test_images_beside_class_folders_are_refused_or_labelled_by_the_stated_rule(tmp_path):
    folder = tmp_path / "shop"
    write_jpegs(folder, ["cups/1.jpg", "cups/2.jpg", "plates/3.jpg", "loose.jpg"])
    with pytest.raises(DatasetError, match=r"1 image\(s\) lie beside the class folders .*loose\.jpg"):
        load_folder(folder, LabelSource("folders"))
    images = load_folder(folder, LabelSource("folders", loose="folder-name"))
    assert {r.relpath: r.class_id for r in images.records}["loose.jpg"] == "shop"
    assert "folder's own name" in images.labels_line()
    # the benchmark ImageFolder layout no longer ignores them silently either
    with pytest.raises(DatasetError, match="beside the class folders"):
        load_split(tmp_path, "shop")


def test_one_class_is_no_labels():
    assert not labelled(["a", "a", "a"]) and not labelled(["a", ""]) and labelled(["a", "b"])


def test_label_source_round_trips_as_stored(tmp_path):
    for source in (LabelSource(), LabelSource("none"), LabelSource("folders", loose="folder-name")):
        assert LabelSource.parse(source.text) == source
    assert LabelSource.parse(LabelSource("file", tmp_path / "l.csv").text).file == tmp_path / "l.csv"


@pytest.mark.parametrize("make", ["missing", "empty", "only-notes"])
def test_a_missing_or_empty_folder_fails_naming_it_before_any_model_loads(tmp_path, monkeypatch, make):
    import embed.extraction.embedder
    import indexer.build

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(indexer.build, "load_embedder", no_model)
    monkeypatch.setattr(embed.extraction.embedder, "build_embedder", no_model)
    folder = tmp_path / "photos"
    if make != "missing":
        folder.mkdir()
    if make == "only-notes":
        (folder / "readme.txt").write_text("x")
        (folder / ".DS_Store").write_text("x")
    rc, out = cli(["build", "--model", "effnet-lite0", "--images", folder, "--uri", tmp_path / "m.db"])
    assert rc == 2 and str(folder) in out
    assert ("does not exist" if make == "missing" else "no images found") in out
    if make == "only-notes":
        assert "hidden file (.DS_Store)" in out and "not an image file name" in out
    assert not (tmp_path / "m.db").exists()


def test_images_and_split_together_are_refused(tmp_path):
    write_jpegs(tmp_path / "p", ["a.jpg"])
    rc, out = cli(["search", "--model", "effnet-lite0", "--images", tmp_path / "p", "--split", "val", "--image", "x"])
    assert rc == 2 and "--images DIR names the folder itself" in out


def test_help_says_how_images_are_labelled():
    from embed.common.settings import RetrievalSettings
    from indexer.cli import build_parser

    text = build_parser(RetrievalSettings())._subparsers._group_actions[0].choices["build"].format_help()
    for words in ("--images DIR", "none (unlabelled", "folders (the first sub-folder", "CSV/TSV", "--loose-images"):
        assert words in text


# end to end with real weights --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Three folders as people have them, built with effnet-lite0 and -1 (real weights): a flat unlabelled one with
    every awkward kind of file, a tree with a CSV of labels, a tree with images beside its class folders."""
    from support.data import have_effnet_package

    if not have_effnet_package():
        pytest.skip("effnet-lite weights package not installed")
    base = tmp_path_factory.mktemp("own")
    flat = base / "Pictures" / "flat photos"
    write_jpegs(flat, [f"IMG_{i:03d}.jpg" for i in range(10)] + ["été.jpg"])
    expected = awkward_files(flat)
    (flat / "huge.png").write_bytes(bomb_png(8000, 6400))
    tree = base / "catalogue"
    names = [f"{c}/{i}.jpg" for c in ("mugs", "plates", "bowls") for i in range(4)]
    write_jpegs(tree, names, seed=50)
    csv = base / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{n},{n.split('/')[0]}\n" for n in names))
    loose = base / "loose"
    write_jpegs(loose, ["red/1.jpg", "red/2.jpg", "red/3.jpg", "blue/4.jpg", "blue/5.jpg", "stray.jpg", "odd.jpg"])
    uri, emb = base / "milvus.db", base / "emb"
    common = ["--uri", uri, "--out", emb, "--no-progress", "--workers", "0"]
    lines = {}
    for name, folder, extra in (
        ("flat", flat, []),
        ("tree", tree, ["--labels", csv]),
        ("loose", loose, ["--labels", "folders", "--loose-images", "folder-name"]),
    ):
        for model in ("effnet-lite0", "effnet-lite1"):
            rc, out = cli(["build", "--model", model, "--images", folder, *extra, *common])
            assert rc == 0, out
            lines[(name, model)] = json.loads(out.strip().splitlines()[-1])
    return {
        "base": base,
        "flat": flat,
        "tree": tree,
        "loose": loose,
        "uri": uri,
        "emb": emb,
        "lines": lines,
        "expected": expected,
        "csv": csv,
    }


def evaluate_two(own, folder, report):
    """``indexer evaluate --report`` of effnet-lite0 and -1 on ``folder``, with a small label-free part."""
    models = ["--models", "effnet-lite0,effnet-lite1", "--uri", own["uri"], "--embeddings", own["emb"]]
    return cli(["evaluate", *models, "--images", folder, "--report", report, "--no-progress", *LABEL_FREE])


LABEL_FREE = ["--copy-queries", "4", "--copy-families", "jpeg", "--copy-severities", "1", "--bootstrap", "1000"]


@pytest.mark.slow
def test_builds_say_what_was_labelled_and_skip_bad_files_by_name(own):
    flat = own["lines"][("flat", "effnet-lite0")]
    assert flat["collection"] == "effnet_lite0__pictures__flat_photos"
    assert flat["labels"] == "unlabelled (--labels none)"
    embedded = sum(1 for v in own["expected"].values() if v == "embedded")
    assert flat["rows"] == 11 + embedded and flat["skipped_images"] == 3  # corrupt, empty, 51 MP
    tree = own["lines"][("tree", "effnet-lite0")]
    assert tree["labels"] == f"labelled by {own['csv']} (--labels FILE), 3 classes"
    loose = own["lines"][("loose", "effnet-lite0")]
    assert "images beside the class folders take the folder's own name" in loose["labels"]
    assert loose["rows"] == 7


@pytest.mark.slow
def test_search_on_a_folder_says_it_is_unlabelled(own):
    rc, out = cli(
        [
            "search",
            "--model",
            "effnet-lite0",
            "--images",
            own["flat"],
            "--uri",
            own["uri"],
            "--image",
            own["flat"] / "IMG_003.jpg",
            "-k",
            "3",
        ]
    )
    assert rc == 0, out
    assert "unlabelled (--labels none)" in out and "left out of its own hits" in out
    assert out.count(str(own["flat"])) >= 3


@pytest.mark.slow
def test_unlabelled_evaluate_writes_the_label_free_report_and_no_precision(own, tmp_path):
    report = tmp_path / "report"
    rc, out = evaluate_two(own, own["flat"], report)
    assert rc == 0, out
    assert "unlabelled (--labels none)" in out and "P@1" not in out and "MAP@R" not in out
    assert "Computed: copy retrieval and neighbour-list stability under transforms, agreement between models" in out
    assert "absent: precision, recall and kNN accuracy need labels" in out
    doc = json.loads((report / "label_free.json").read_text())
    assert doc["images"] == own["lines"][("flat", "effnet-lite0")]["rows"]
    measures = {(m["model"], m["measure"]) for m in doc["measures"]}
    k = min(10, doc["images"] // 2 - 1)  # at most half the images, as scikit-learn allows
    assert {("effnet-lite0", f"map trustworthiness@{k}"), ("effnet-lite1", f"map trustworthiness@{k}")} <= measures
    for v in [m["value"] for m in doc["measures"]] + [d["with_duplicate"] for d in doc["duplicates"]]:
        assert v["low"] <= v["mean"] <= v["high"]
    assert {p["measure"] for p in doc["pairs"]} >= {"share of images with a near-duplicate"}
    assert doc["overlaps"][0]["a"] == "effnet-lite0" and 0 <= doc["overlaps"][0]["value"]["mean"] <= 1
    assert "copy_r1" in doc["robustness"]["records"][0]
    assert any(g["png"].startswith("galleries/disagree_") for g in doc["galleries"])
    page = (report / "label_free.html").read_text()
    assert "unlabelled (--labels none)" in page and "data:image/png;base64," in page
    assert not (report / "report.json").exists()


@pytest.mark.slow
def test_labelled_evaluate_adds_the_precision_report_and_says_how(own, tmp_path):
    report = tmp_path / "report"
    rc, out = evaluate_two(own, own["tree"], report)
    assert rc == 0, out
    assert f"labelled by {own['csv']} (--labels FILE), 3 classes" in out
    assert "| effnet-lite0 | raw |" in out  # the precision table
    assert (report / "report.html").is_file() and (report / "label_free.html").is_file()
    assert "the precision measures (report.html beside this one)" in out


@pytest.mark.slow
def test_one_class_is_evaluated_as_unlabelled_never_as_a_perfect_score(own, tmp_path):
    one = own["base"] / "one class"
    write_jpegs(one, [f"all/{i}.jpg" for i in range(6)])
    rc, out = cli(
        [
            "build",
            "--model",
            "effnet-lite0",
            "--images",
            one,
            "--labels",
            "folders",
            "--uri",
            own["uri"],
            "--out",
            own["emb"],
            "--no-progress",
            "--workers",
            "0",
        ]
    )
    assert rc == 0, out
    assert "but fewer than two classes: evaluated as unlabelled" in out
    rc, out = cli(
        [
            "evaluate",
            "--models",
            "effnet-lite0",
            "--images",
            one,
            "--uri",
            own["uri"],
            "--embeddings",
            own["emb"],
            "--copy-queries",
            "0",
            "--no-progress",
            "--bootstrap",
            "1000",
        ]
    )
    assert rc == 0, out
    assert "evaluated as unlabelled" in out and "1.0000" not in out and "P@1" not in out
    assert "agreement between models needs two or more models" in out


@pytest.mark.slow
def test_maps_of_a_folder(own, tmp_path):
    rc, out = cli(
        [
            "maps",
            "--images",
            own["loose"],
            "--method",
            "pca",
            "--uri",
            own["uri"],
            "--report-dir",
            tmp_path,
            "--no-progress",
        ]
    )
    assert rc == 0, out
    assert out.count("trustworthiness@") == 2


def _app_page(monkeypatch, page, *argv):
    """(the app page ``page`` run once in Streamlit's AppTest with ``argv`` after ``--``, its texts joined)."""
    import sys

    from streamlit.testing.v1 import AppTest
    from support.data import REPO

    monkeypatch.setattr(sys, "argv", [Path(page).name, *[str(a) for a in argv]])
    at = AppTest.from_file(str(REPO / page), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    texts = " ".join(
        [m.value for m in at.markdown]
        + [c.value for c in at.caption]
        + [i.value for i in at.info]
        + [w.value for w in at.warning]
    )
    return at, texts


@pytest.mark.slow
def test_the_app_on_an_unlabelled_folder(own, monkeypatch):
    at, texts = _app_page(monkeypatch, "app/main.py", "--uri", own["uri"], "--images", own["flat"])
    assert "This data set is unlabelled (--labels none): no precision figures" in texts
    assert "Labels:** none (unlabelled data set)" in texts
    assert "Precision@" not in texts
    assert ":green[**HIT**]" not in texts and ":red[miss]" not in texts  # no marks (not zeros)
    assert [t.label for t in at.text_input] == ["Filter by file name"]
    assert not [s for s in at.selectbox if s.label == "Filter by class"]
    at.text_input[0].input("IMG_00").run()
    assert "IMG_00" in next(m.value for m in at.markdown if m.value.startswith("**Query:**"))


@pytest.mark.slow
def test_the_app_on_a_labelled_tree_marks_hits(own, monkeypatch):
    at, texts = _app_page(monkeypatch, "app/main.py", "--uri", own["uri"], "--images", own["tree"])
    assert "unlabelled" not in texts and "Precision@" in texts
    assert [s for s in at.selectbox if s.label == "Filter by class"]


@pytest.mark.slow
def test_the_maps_page_colours_an_unlabelled_folder_by_folder(own, monkeypatch, tmp_path):
    rc, out = cli(
        [
            "maps",
            "--images",
            own["flat"],
            "--method",
            "pca",
            "--uri",
            own["uri"],
            "--report-dir",
            tmp_path,
            "--no-progress",
        ]
    )
    assert rc == 0, out
    _, texts = _app_page(
        monkeypatch, "app/views/maps.py", "--uri", own["uri"], "--images", own["flat"], "--report-dir", tmp_path
    )
    assert "This data set is unlabelled" in texts
    assert "colours: folders" in texts and "silhouette in the original space" not in texts


@pytest.mark.slow
def test_a_real_browser_shows_an_unlabelled_folder(own, tmp_path):
    import os
    import time

    from support.browser import have_chromium, streamlit_in_chromium

    if not have_chromium:
        pytest.skip("Debian chromium + chromium-driver not installed")
    from milvus_lite.server_manager import server_manager_instance
    from selenium.webdriver.common.by import By

    server_manager_instance.release_all()  # the app is another process: it gets a copy of the database
    uri = tmp_path / "browser.db"
    shutil.copytree(own["uri"], uri, ignore=shutil.ignore_patterns("LOCK"))
    with streamlit_in_chromium(["--uri", str(uri), "--images", str(own["flat"])], tmp_path) as (driver, url):
        driver.get(url)
        deadline = time.time() + 240
        body = ""
        while time.time() < deadline:
            body = driver.find_element(By.TAG_NAME, "body").text
            imgs = [
                i
                for i in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
                if i.get_attribute("naturalWidth") not in (None, "0")
            ]
            # everything the assertions read, so that a slow rerun is waited for, not judged half drawn
            if "This data set is unlabelled" in body and "Filter by file name" in body and len(imgs) >= 19:
                break
            time.sleep(1)
        shot = tmp_path / "unlabelled.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("APP_SCREENSHOT"):
            shutil.copy(shot, os.environ["APP_SCREENSHOT"])
        assert "This data set is unlabelled" in body and "Filter by file name" in body
        assert "Precision@" not in body and "HIT" not in body
        assert len(imgs) >= 19, f"query + 2x9 result images expected, saw {len(imgs)}"


# the label-free measures against their definitions ------------------------------------------------------------


def test_per_image_trustworthiness_averages_to_scikit_learns():
    from sklearn.manifold import trustworthiness

    from indexer.evaluation.label_free import trustworthiness_per_point

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16))
    coords = x[:, :2] + rng.normal(scale=0.3, size=(60, 2))
    per_point = trustworthiness_per_point(x, coords, 5)
    assert per_point.shape == (60,)
    assert per_point.mean() == pytest.approx(trustworthiness(x, coords, n_neighbors=5), abs=1e-12)


def test_near_duplicates_are_pairs_within_the_distance_grouped_transitively():
    from indexer.evaluation.label_free import groups_of, near_duplicates, overlap

    unit = np.asarray([[1, 0], [0.999, 0.0447], [0.995, 0.0999], [0, 1], [-1, 0]], np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    pairs = near_duplicates(unit, 0.005)  # 2 - 2 cos <= 0.005: within about 5.7 degrees
    assert pairs == [(0, 1), (0, 2), (1, 2)] or pairs == [(0, 1), (1, 2)]
    assert groups_of(5, pairs) == [[0, 1, 2]]
    assert groups_of(5, [(0, 1), (3, 4), (1, 2)]) == [[0, 1, 2], [3, 4]]
    assert overlap(np.asarray([[1, 2, 3], [4, 5, 6]]), np.asarray([[3, 2, 9], [7, 8, 9]])).tolist() == [2 / 3, 0.0]


@pytest.mark.slow
def test_embed_extract_takes_a_folder_and_keeps_the_vectors_when_only_the_labels_change(tmp_path, caplog):
    import logging

    from embed.cli import main
    from embed.extraction.shards import EmbeddingStore

    folder = tmp_path / "shop"
    write_jpegs(folder, ["cups/1.jpg", "cups/2.jpg", "plates/3.jpg"])
    common = [
        "--model",
        "timm:test_resnet",
        "--random-init",
        "--images",
        str(folder),
        "--out",
        str(tmp_path / "e"),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(["extract", *common]) == 0
    store = EmbeddingStore(EmbeddingKey("timm:test_resnet", tmp_path.name, "shop").folder(tmp_path / "e"))
    before = store.read_manifest()
    assert before.labels == "none" and before.class_ids == ["", "", ""]
    _, vectors, _ = store.load(3)
    with caplog.at_level(logging.INFO):
        assert main(["extract", *common, "--labels", "folders"]) == 0
    after = store.read_manifest()
    assert after.labels == "folders" and after.class_ids == ["cups", "cups", "plates"]
    assert after.identity.data_fingerprint != before.identity.data_fingerprint  # the labels are compared on
    assert "the vectors are kept" in caplog.text and "nothing to do: 3/3 images already embedded" in caplog.text
    np.testing.assert_array_equal(store.load(3)[1], vectors)


def test_unlabelled_maps_are_coloured_by_agreement_then_folder_then_file_type(tmp_path):
    from app.maps_view import unlabelled_colours
    from benchmarks.synthetic import synthetic_meta
    from indexer.evaluation.maps import MapParams, MapQuality, MapResult

    def result(relpaths):
        n = len(relpaths)
        quality = MapQuality(1.0, 1, n, float("nan"), n, [])
        ident = synthetic_meta("effnet-lite0", 2, "own", "/nowhere", "shop").identity
        ids, coords = np.arange(n), np.zeros((n, 2))
        return MapResult(
            "c", "effnet-lite0", ident, n, MapParams(method="pca"), {}, ids, coords, [""] * n, relpaths, quality, 0.0
        )

    flat = {"effnet-lite0": result(["a.jpg", "b.png", "c.PNG"])}
    maps, what = unlabelled_colours(flat, tmp_path, "shop")
    assert maps["effnet-lite0"].class_ids == ["jpg", "png", "png"] and what.startswith("file types")
    tree = {"effnet-lite0": result(["cups/a.jpg", "b.jpg", "plates/x/c.jpg"])}
    maps, what = unlabelled_colours(tree, tmp_path, "shop")
    assert maps["effnet-lite0"].class_ids == ["cups", "(top level)", "plates/x"] and what.startswith("folders")
    (tmp_path / "label_free.json").write_text(
        json.dumps({"dataset": "own", "split": "shop", "agreement": {"0": 0.1, "1": 0.5, "2": 0.9}})
    )
    maps, what = unlabelled_colours(tree, tmp_path, "shop")
    assert maps["effnet-lite0"].class_ids == ["models agree on < 30% of the top 10", "30-60%", ">= 60%"]
    assert what.startswith("agreement between the models")
    maps, what = unlabelled_colours(tree, tmp_path, "another split")  # another data set's report is not used
    assert what.startswith("folders")


@pytest.mark.slow
def test_build_relabels_a_collection_from_the_same_vectors(tmp_path):
    folder = tmp_path / "shop"
    write_jpegs(folder, ["cups/1.jpg", "cups/2.jpg", "plates/3.jpg", "plates/4.jpg"])
    common = ["--model", "timm:test_resnet", "--random-init", "--images", folder, "--uri", tmp_path / "m.db"]
    common += ["--out", tmp_path / "e", "--workers", "0", "--no-progress"]
    rc, out = cli(["build", *common])
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["labels"] == "unlabelled (--labels none)", out
    rc, out = cli(["build", *common, "--labels", "folders"])
    line = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and line["labels"] == "labelled by sub-folder name (--labels folders), 2 classes", out
    assert line["rows"] == 4 and line["inserted"] == 4  # the collection was rebuilt with the new labels
    rc, out = cli(
        [
            "search",
            "--model",
            "timm:test_resnet",
            "--images",
            folder,
            "--uri",
            tmp_path / "m.db",
            "--image",
            folder / "cups/1.jpg",
            "-k",
            "1",
            "--json",
        ]
    )
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["hits"][0]["class_id"] in ("cups", "plates"), out
