import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.data import make_imagenet_flat_layout, make_tiny_layout

from embed.sources.datasets import (
    DatasetError,
    class_name,
    load_split,
    parse_imagenet_solution_row,
    parse_tiny_annotation_line,
)


def test_imagefolder_layout_order_and_classes(imagefolder):
    images = load_split(imagefolder, "val")
    assert images.layout == "imagefolder"
    rels = [r.relpath for r in images.records]
    assert rels == sorted(rels)
    assert [r.position for r in images.records] == list(range(len(rels)))
    # 12 good + 4 bad files with image extensions: the loader, not the lister, rejects bad ones
    assert len(images) == 16
    assert set(images.class_ids()) == {"n01440764", "n01443537", "zebra crossings"}
    assert images.limited(5).records == images.records[:5]


def test_tiny_imagenet_layout(tmp_path):
    root = make_tiny_layout(tmp_path / "tiny")
    images = load_split(root, "val")
    assert images.layout == "tiny-imagenet"
    assert len(images) == 6
    assert images.records[0].relpath.startswith("images/")
    assert {r.class_id for r in images.records} == {"n01440764", "n01443537"}


@pytest.mark.parametrize("inside", [False, True])
def test_imagenet_flat_val_layout(tmp_path, inside):
    root = make_imagenet_flat_layout(tmp_path / "inet", inside=inside)
    images = load_split(root, "val")
    assert images.layout == "imagenet-val"
    assert [r.class_id for r in images.records] == ["n01440764", "n01443537", "n01440764"]


def test_shared_tiny_imagenet_is_detected(tiny_root):
    images = load_split(tiny_root, "val")
    assert images.layout == "tiny-imagenet"
    assert len(images) == 10000
    assert len(images.class_ids()) == 200
    assert images.records[0].relpath == "images/val_0.JPEG"  # sorted path order, not numeric


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(tmp_path / "nope", "val")
    (tmp_path / "root" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="splits found: train"):
        load_split(tmp_path / "root", "val")
    with pytest.raises(DatasetError, match="no images"):
        load_split(tmp_path / "root", "train")
    with pytest.raises(DatasetError, match="invalid split"):
        load_split(tmp_path / "root", "../etc")


def test_class_names_come_from_timm_for_synsets():
    assert class_name("n01440764") == "tench"
    assert class_name("zebra crossings") == "zebra crossings"


def test_annotation_paths_cannot_escape_the_split(tmp_path):
    with pytest.raises(ValueError):
        parse_tiny_annotation_line("../../etc/passwd\tn01440764\t0\t0\t1\t1")
    with pytest.raises(ValueError):
        parse_imagenet_solution_row(["../x", "n01440764 1 2 3 4"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_tiny_annotation_parser_fuzz(line):
    try:
        parsed = parse_tiny_annotation_line(line)
    except ValueError:
        return
    if parsed is not None:
        name, cls = parsed
        assert name and cls and "/" not in name and "\t" not in name


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=4))
def test_imagenet_solution_parser_fuzz(row):
    try:
        parsed = parse_imagenet_solution_row(row)
    except ValueError:
        return
    if parsed is not None:
        image_id, synset = parsed
        assert image_id and synset and " " not in synset and "/" not in image_id


def test_class_names_are_timms_imagenet_descriptions():
    from timm.data import ImageNetInfo

    from embed.sources.datasets import class_name

    for synset, description in ImageNetInfo().label_descriptions(as_dict=True).items():
        assert class_name(synset) == description.split(",")[0].strip()
    assert class_name("zebra crossings") == "zebra crossings"


# a build from a fresh clone whose data set cannot be had ------------------------------------------------


def _fresh_clone_build(clone, *argv):
    """``python -m indexer build ...`` run in ``clone`` as in a fresh checkout: default datasets folders and database
    (relative to it), and the data set's address a closed local port, so that its download fails without a network."""
    import subprocess
    import sys

    from support.cli import repo_env
    from support.data import free_port

    environ = repo_env(RETRIEVAL_DATASET_URL_TINY_IMAGENET=f"http://127.0.0.1:{free_port()}/tiny-imagenet-200.zip")
    for name in ("RETRIEVAL_DATASETS", "RETRIEVAL_MILVUS_URI", "RETRIEVAL_DATA_ROOT"):
        environ.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "indexer", "build", *argv, "--no-progress"],
        cwd=clone,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


QUICK_START = ("--model", "all", "--dataset", "tiny-imagenet", "--split", "val", "--limit", "300")


def test_a_failed_dataset_download_names_the_variable_and_absolute_folders_and_creates_no_database(
    tmp_path, monkeypatch
):
    clone = tmp_path / "clone"
    clone.mkdir()
    res = _fresh_clone_build(clone, *QUICK_START)
    assert res.returncode == 2, res.stderr
    searched = f"{clone / 'data' / 'datasets'}, {tmp_path / 'shared' / 'datasets'}"
    assert f"tiny-imagenet (tiny-imagenet-200/) was looked for in {searched}." in res.stderr
    assert "set RETRIEVAL_DATASETS to the folder holding tiny-imagenet-200/" in res.stderr
    assert "--data-root DIR/tiny-imagenet-200" in res.stderr and "Traceback" not in res.stderr
    assert not (clone / "data" / "milvus.db").exists(), "nothing was stored: no database"
    assert not (clone / "data" / "datasets").exists(), "the failed download left no empty folder behind"

    # doing what it says: the data set in a folder named by the variable is found there, nothing downloaded
    from embed.sources.dataset_download import ensure_dataset

    elsewhere = make_tiny_layout(tmp_path / "elsewhere" / "tiny-imagenet-200")
    monkeypatch.setenv("RETRIEVAL_DATASETS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("RETRIEVAL_DATASET_URL_TINY_IMAGENET", "http://127.0.0.1:9/never-fetched.zip")
    assert ensure_dataset("tiny-imagenet", progress=False) == elsewhere.resolve()


def test_a_failed_build_leaves_an_existing_database_as_it_was(tmp_path):
    import json

    import numpy as np

    from benchmarks.synthetic import synthetic_meta
    from embed.common.identity import EmbeddingKey
    from indexer.milvus_store import VectorStore

    clone = tmp_path / "clone"
    root = make_tiny_layout(clone / "tiny")
    store = VectorStore(str(clone / "data" / "milvus.db"))
    name = EmbeddingKey("effnet-lite0", "tiny", "val").collection_name
    store.ensure_collection(name, synthetic_meta("effnet-lite0", 4, "tiny", str(root), rows=2, complete=True))
    store.upsert(name, np.arange(2), np.ones((2, 4), np.float32), ["a", "b"], ["x.jpg", "y.jpg"], progress=False)
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()

    assert _fresh_clone_build(clone, *QUICK_START).returncode == 2
    from support.cli import run

    status = run(["indexer", "status", "--json"], cwd=clone)
    assert status.returncode == 0, status.stderr
    assert [c["collection"] for c in json.loads(status.stdout)["collections"]] == [name]


def test_a_build_without_weights_creates_no_database(tmp_path):
    clone = tmp_path / "clone"
    root = make_tiny_layout(clone / "tiny")
    res = _fresh_clone_build(clone, "--model", "timm:resnet18", "--split", "val", "--data-root", str(root))
    assert res.returncode == 2 and "--checkpoint PATH" in res.stderr, res.stderr
    assert not (clone / "data" / "milvus.db").exists()
