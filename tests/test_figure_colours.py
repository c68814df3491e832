"""A model has one colour in every figure: the report's interval bars, its precision@k curves (raw and
normalized alike) and the robustness panels, drawn here from the committed Tiny-ImageNet report."""

import matplotlib
import pytest
from matplotlib.colors import to_hex, to_rgba_array
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from support.data import REPO

from indexer.evaluation.colours import model_colours
from indexer.evaluation.document import Evaluation, ReportDocument

matplotlib.use("Agg")
REPORT = REPO / "docs" / "report"


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved meanwhile, as matplotlib drew it."""
    figures = []
    real = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _legend_colours(figure):
    """label -> colour of each legend entry (a line's, an error bar's, a bar's face)."""
    legend = next(ax.get_legend() for ax in figure.axes if ax.get_legend())
    colours = [
        to_rgba_array(h.get_facecolor() if isinstance(h, Rectangle) else h.get_color())[0]
        for h in legend.legend_handles
    ]
    return {t.get_text(): to_hex(c) for t, c in zip(legend.get_texts(), colours)}


def test_each_model_keeps_its_colour_across_the_reports_figures(drawn, tmp_path):
    from indexer.evaluation.evaluate import write_plot
    from indexer.evaluation.report import ci_plot
    from indexer.evaluation.robustness import plot_measures

    doc = ReportDocument.from_json((REPORT / "report.json").read_text())
    write_plot(Evaluation(doc.protocol, doc.results), tmp_path / "pk.png")
    ci_plot([mi for mi in doc.intervals if mi.features == doc.variant_compared], tmp_path / "ci.png")
    assert doc.robustness is not None
    plot_measures(doc.robustness, tmp_path)
    curves, bars, *panels = (_legend_colours(f) for f in drawn)
    assert len(doc.models) == 3 and panels
    for model in doc.models:
        raw, normalized = curves[f"{model} (raw)"], curves[f"{model} (normalized)"]
        assert raw == normalized == bars[model], f"{model}: one colour whatever the figure or the features"
        assert all(panel[model] == raw for panel in panels if model in panel)
    assert len(set(bars.values())) == 3, "three models, three colours"
    records = doc.robustness["records"]
    for figure in drawn[2:]:  # each panel's ticks are the severities its family measured, no others
        for ax in (a for a in figure.axes if a.get_visible()):
            family = [r for r in records if r["family"] == ax.get_title()]
            assert list(ax.get_xticks()) == pytest.approx(sorted({r[r["param"]] for r in family})), ax.get_title()


def test_catalog_models_always_get_the_same_colour_and_others_a_free_one():
    a, b = model_colours(["effnet-lite2", "vit"]), model_colours(["vit", "gresnet", "effnet-lite2"])
    assert a["effnet-lite2"] == b["effnet-lite2"] and a["vit"] == b["vit"], "a subset or another order: same colours"
    mixed = model_colours(["timm:resnet50d", "gresnet", "timm:test_resnet", "convnext"])
    assert len(set(mixed.values())) == 4 and mixed["gresnet"] == model_colours(["gresnet"])["gresnet"]
    assert mixed["timm:resnet50d"] not in {model_colours([m])[m] for m in ("gresnet", "convnext")}
