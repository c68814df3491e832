"""The app compares like with like: queries come from the images every shown column holds, a column that lacks the
query says so, different collections are named with the build that makes them alike; no crash without models;
every column says what its distances mean, and P@k comes with its ceiling."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.builds import extract_config
from support.cli import repo_env
from support.data import REPO, make_tiny_layout
from support.waits import HANG_S

from app.comparison import CollectionImages, Comparison, IndexedImage, build_command
from benchmarks.synthetic import synthetic_meta

APP = str(REPO / "app" / "main.py")
BIG, SMALL = "timm:test_resnet", "timm:test_efficientnet"  # tiny timm nets, seeded random weights
N_PER_CLASS, CLASSES = 10, ("n01440764", "n01443537", "n01484850")
SMALL_LIMIT = 20


@pytest.fixture(scope="module")
def unequal_index(tmp_path_factory):
    """BIG indexes all 30 images, SMALL only the first 20 (a smaller --limit)."""
    from indexer.build import build
    from indexer.milvus_store import VectorStore

    base = tmp_path_factory.mktemp("unequal")
    root = make_tiny_layout(base / "data", n_per_class=N_PER_CLASS, classes=CLASSES)
    uri = str(base / "milvus.db")
    store = VectorStore(uri)
    for model, limit in ((BIG, None), (SMALL, SMALL_LIMIT)):
        cfg = extract_config(
            root, base / "emb", model=model, batch_size=10, limit=limit, shard_size=1024
        )  # a build as the suggested command runs it
        build(cfg, store, progress=False)
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    return {"uri": uri, "root": str(root), "emb": base / "emb"}


def _classes_in_order():
    """The class of each position: positions follow the sorted relative paths."""
    paths = sorted((f"images/val_{i}.JPEG", CLASSES[i // N_PER_CLASS]) for i in range(N_PER_CLASS * len(CLASSES)))
    return [c for _, c in paths]


def _app(index, monkeypatch, models=(BIG, SMALL)):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(
        sys,
        "argv",
        ["main.py", "--uri", index["uri"], "--data-root", index["root"], "--extra-models", ",".join(models)],
    )
    at = AppTest.from_file(APP, default_timeout=HANG_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.multiselect(key="models").set_value(list(models)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_unequal_collections_are_named_with_the_build_that_makes_them_alike(unequal_index, monkeypatch):
    at = _app(unequal_index, monkeypatch)
    warning = at.warning[0].value
    assert warning.startswith("Not like for like") and "30 images" in warning and f"{SMALL_LIMIT} images" in warning
    commands = at.code[0].value.splitlines()
    made = _identity(unequal_index)  # spelled out, so that the rebuilt collection has the same identity
    assert commands == [
        f"python -m indexer build --model {SMALL} --split val --data-root {unequal_index['root']} "
        f"--limit 30 --random-init --decode {made.decode} --precision {made.precision} "
        f"--uri {unequal_index['uri']}"
    ]
    # positions, classes and Random draw from the 20 images both columns hold
    assert at.number_input[0].max == SMALL_LIMIT - 1
    assert "among the 20 images every column holds" in at.number_input[0].label
    shared_classes = sorted(set(_classes_in_order()[:SMALL_LIMIT]))
    options = at.selectbox(key="class_filter").options[1:]
    assert len(options) == len(shared_classes) and all(c in o for c, o in zip(shared_classes, options))
    for _ in range(12):
        at.button(key="random").click().run()
        assert at.session_state["query_id"] < SMALL_LIMIT
    # and every column searches those 20 images only, unless the sidebar asks for each whole collection
    assert f"Every column searches only those {SMALL_LIMIT} images" in at.warning[0].value
    at.slider(key="k").set_value(20).run()
    assert _hit_ids(at, BIG) and max(_hit_ids(at, BIG) + _hit_ids(at, SMALL)) < SMALL_LIMIT
    at.toggle(key="search_whole").set_value(True).run()
    assert "Each column searches its whole collection" in at.warning[0].value
    assert max(_hit_ids(at, BIG)) >= SMALL_LIMIT, "20 of BIG's 29 other images: one at least beyond position 19"


def _hit_ids(at, model):
    return [int(b.key.rsplit("_", 1)[1]) for b in at.button if b.key and b.key.startswith(f"requery_{model}_")]


def _identity(index):
    from embed.common.identity import EmbeddingKey
    from embed.extraction.shards import EmbeddingStore

    manifest = EmbeddingStore(EmbeddingKey(SMALL, Path(index["root"]).name, "val").folder(index["emb"])).read_manifest()
    return manifest.identity


def test_a_column_that_lacks_the_query_says_so_instead_of_searching(unequal_index, monkeypatch):
    at = _app(unequal_index, monkeypatch)
    at.toggle(key="search_whole").set_value(True).run()  # else BIG's hits are the 20 images both hold
    at.slider(key="k").set_value(20).run()  # 20 of BIG's 29 other images: at least one beyond position 19
    button = next(
        b
        for b in at.button
        if b.key and b.key.startswith(f"requery_{BIG}_") and int(b.key.rsplit("_", 1)[1]) >= SMALL_LIMIT
    )
    target = int(button.key.rsplit("_", 1)[1])
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["query_id"] == target
    lacking = [w.value for w in at.warning if "is not in" in w.value]
    assert len(lacking) == 1 and f"is not in {SMALL}'s collection ({SMALL_LIMIT} images): not searched" in lacking[0]
    assert not [b for b in at.button if b.key and b.key.startswith(f"requery_{SMALL}_")], "no results in that column"
    assert [b for b in at.button if b.key and b.key.startswith(f"requery_{BIG}_")], "the other column answers"


def test_a_data_root_without_the_split_is_named_with_the_one_the_collections_were_built_from(
    unequal_index, monkeypatch, tmp_path
):
    from streamlit.testing.v1 import AppTest

    wrong = tmp_path / "moved"
    monkeypatch.setattr(sys, "argv", ["main.py", "--uri", unequal_index["uri"], "--data-root", str(wrong)])
    at = AppTest.from_file(APP, default_timeout=HANG_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    error = at.error[0].value
    assert f"The data root {wrong} has no 'val' folder" in error and unequal_index["root"] in error
    assert "uploads still work" in error and not at.subheader, "no column of unreadable images"
    at.radio(key="source").set_value("Upload").run()
    assert not at.exception and at.error[0].value == error, "an upload needs no indexed image: the page goes on"


def test_no_model_chosen_shows_a_hint_not_a_crash(unequal_index, monkeypatch):
    at = _app(unequal_index, monkeypatch)
    at.multiselect(key="models").set_value([]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Backbone retrieval: no model chosen"
    assert any("No model chosen" in i.value and "Models" in i.value for i in at.info)
    assert not at.subheader


def test_each_column_explains_its_distance_and_its_best_possible_precision(unequal_index, monkeypatch):
    at = _app(unequal_index, monkeypatch)
    captions = " ".join(c.value for c in at.caption)
    for model in (BIG, SMALL):
        assert f"squared L2 distance in {model}'s own" in captions
    assert "compare ranks across columns, not values" in captions
    ranks = [c.value.split(" ", 1)[0] for c in at.caption if c.value.startswith("**")]
    assert ranks == [f"**{r}.**" for r in range(1, 10)] * 2, "each hit numbered by its rank, in each column"
    # the query is position 0; its class has N_PER_CLASS images in BIG and as many in SMALL's first 20 as counted
    query_class = _classes_in_order()[0]
    k = 9

    def ceilings():
        return [
            m.value.split("(best possible ")[1].split(")")[0]
            for m in at.markdown
            if m.value.startswith("query latency") and f"P@{k}" in m.value
        ]

    shared = f"{min(k, _classes_in_order()[:SMALL_LIMIT].count(query_class) - 1) / k:.2f}"
    assert ceilings() == [shared, shared], "both columns search the 20 images they share"
    at.toggle(key="search_whole").set_value(True).run()
    whole = f"{min(k, _classes_in_order().count(query_class) - 1) / k:.2f}"
    columns = [h.value for h in at.subheader]  # the columns' order, each titled with its model
    expected = [whole if m == BIG else shared for m in columns]
    assert whole != shared and ceilings() == expected, "each whole collection sets its own ceiling"
    summary = next(m.value for m in at.markdown if m.value.startswith("Precision@9 for this query"))
    assert summary.count("best possible") == 2


@pytest.mark.slow
def test_the_suggested_build_runs_as_written_and_the_columns_become_alike(unequal_index, tmp_path, monkeypatch):
    uri = str(tmp_path / "copy.db")
    shutil.copytree(unequal_index["uri"], uri, ignore=shutil.ignore_patterns("LOCK"))
    index = {**unequal_index, "uri": uri}
    at = _app(index, monkeypatch)
    [command] = at.code[0].value.splitlines()
    env = repo_env(RETRIEVAL_EMBEDDINGS=str(index["emb"]))
    argv = shlex.split(command)
    assert argv[0] == "python"
    res = subprocess.run(
        [sys.executable] + argv[1:], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=HANG_S
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "extracting 10 images" in res.stderr, "only the images not embedded yet are embedded"
    at.run()  # the page's next run sees the build, with no click on Reload
    assert not at.exception, [e.value for e in at.exception]
    assert [i.value for i in at.info if "changed (20 → 30 images)" in i.value]
    assert not [w.value for w in at.warning if w.value.startswith("Not like for like")]
    assert at.number_input[0].max == N_PER_CLASS * len(CLASSES) - 1


# the comparison itself, on collections that differ in data rather than in --limit --------------------------


def _images(model, ids, dataset="ds", fingerprint="synthetic", relpath="img{}.jpg"):
    meta = synthetic_meta(model, 8, dataset, f"/data/{dataset}")
    if fingerprint != "synthetic":
        from dataclasses import replace

        meta.identity = replace(meta.identity, data_fingerprint=fingerprint)
    rows = [{"id": i, "class_id": "c", "relpath": relpath.format(i)} for i in ids]
    return CollectionImages.from_rows(model, model.upper(), meta, rows)


def test_different_file_lists_are_named_and_rebuilt_with_force():
    a, b = _images("a", range(5)), _images("b", range(5), fingerprint="0123456789abcdef", relpath="other{}.jpg")
    comparison = Comparison.of([a, b], "/db/milvus.db")
    assert comparison.shared == [], "same ids, other files: nothing in common"
    assert "different lists of files" in comparison.lines[0]
    assert all(c.endswith("--force --uri /db/milvus.db") for c in comparison.commands) and len(comparison.commands) == 2


def test_different_datasets_are_named_with_the_app_command_for_each():
    comparison = Comparison.of([_images("a", range(3), "tiny"), _images("b", range(3), "nette")], "db")
    assert "different datasets" in comparison.lines[0]
    assert comparison.commands == [
        "streamlit run app/main.py -- --data-root /data/tiny --split val --uri db",
        "streamlit run app/main.py -- --data-root /data/nette --split val --uri db",
    ]


def test_equal_collections_say_nothing_and_the_ceiling_counts_the_other_images():
    a, b = _images("a", range(4)), _images("b", range(4))
    comparison = Comparison.of([a, b], "db")
    assert not comparison.differs and [im.id for im in comparison.shared] == [0, 1, 2, 3]
    query = IndexedImage(0, "c", "img0.jpg")
    assert a.best_precision("c", query, 9) == 3 / 9, "three other images of the class, k = 9"
    assert a.best_precision("c", None, 2) == 1.0, "an upload: all four count, capped at k"
    assert build_command(a.meta, "db", limit=7).startswith(
        "python -m indexer build --model a --split val --data-root /data/ds --limit 7 --random-init"
    )
