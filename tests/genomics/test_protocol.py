"""Protocol, leakage, metrics, radiomics ratios, CLI end to end on real counts, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurorad.cli import app
from neurorad.errors import InputError
from neurorad.genomics import protocol as P
from neurorad.genomics import radiomics as R
from neurorad.genomics.counts import (
    align_samples,
    quantile_filter,
    read_clinical,
    read_counts,
    size_factors,
    target_labels,
)
from neurorad.genomics.simulate import simulate_cohort

runner = CliRunner()

# -- metrics and splits --------------------------------------------------------------------------


def test_metrics_match_sklearn():
    from sklearn import metrics as M

    rng = np.random.default_rng(0)
    t = rng.choice(["mutant", "wildtype"], 50)
    p = np.where(rng.uniform(size=50) < 0.7, t, rng.choice(["mutant", "wildtype"], 50))
    m = P.binary_metrics(t, p, "mutant")
    assert m["accuracy"] == pytest.approx(M.accuracy_score(t, p))
    assert m["balanced_accuracy"] == pytest.approx(M.balanced_accuracy_score(t, p))
    assert m["f1"] == pytest.approx(M.f1_score(t, p, pos_label="mutant"))
    assert m["sensitivity"] == pytest.approx(M.recall_score(t, p, pos_label="mutant"))
    assert m["specificity"] == pytest.approx(M.recall_score(t, p, pos_label="wildtype"))
    assert m["ppv"] == pytest.approx(M.precision_score(t, p, pos_label="mutant"))
    assert m["npv"] == pytest.approx(M.precision_score(t, p, pos_label="wildtype"))


def test_splits_are_stratified_seeded_and_disjoint():
    y = np.array(["mutant"] * 85 + ["wildtype"] * 23)
    a = P.make_splits(y, 5, 0.2, seed=7)
    b = P.make_splits(y, 5, 0.2, seed=7)
    for (tr, te), (_tr2, te2) in zip(a, b, strict=True):
        assert np.array_equal(te, te2) and not set(tr) & set(te)
        assert 4 <= np.sum(y[te] == "wildtype") <= 5
    assert P.positive_class(y) == "mutant"
    assert P.positive_class(np.array(["codeleted", "intact"])) == "codeleted"


def test_no_leakage():
    """On pure-noise counts, DERs chosen in training only give chance accuracy; chosen on all
    samples (the leak) they give near-perfect accuracy on the same splits. The protocol must be
    the former, so this test would fail if the protocol selected DERs on all samples."""
    from neurorad.genomics.classifiers import NBLDA
    from neurorad.genomics.de import classic_de

    co = simulate_cohort(n_samples=40, n_genes=3000, effect=0.0, seed=11)
    x = co.counts.to_numpy().T
    y = co.clinical["IDH"].to_numpy()
    cfg = P.ProtocolConfig(n_splits=12, der_sizes=(10,), classifiers=("NBLDA",), n_jobs=1)
    honest = P.run_protocol(x, y, None, cfg)["balanced_accuracy"].mean()
    keep = quantile_filter(x.T)
    leaky_de = classic_de(x[:, keep].T, y, q2q="wilson-hilferty")  # all samples: the leak
    leaky = []
    for tr, te in P.make_splits(y, 12, 0.2, 0):
        est = NBLDA(n_genes=10).fit(x[tr][:, keep], y[tr], de_result=leaky_de)
        leaky.append(P.binary_metrics(y[te], est.predict(x[te][:, keep]), "mutant")["balanced_accuracy"])
    assert honest < 0.65
    assert np.mean(leaky) > 0.8


def test_protocol_outputs_and_anova(small_cohort):
    x = small_cohort.counts.to_numpy().T
    y = small_cohort.clinical["1p19q"].to_numpy()
    cfg = P.ProtocolConfig(n_splits=3, der_sizes=(10, 30), n_jobs=1, rf_n_estimators=20)
    res = P.run_protocol(x, y, small_cohort.radiomics.to_numpy(), cfg)
    assert len(res) == 3 * 2 * 6
    assert set(P.METRICS) <= set(res.columns)
    summ = P.summarize(res)
    assert len(summ) == 6 * 2 * len(P.METRICS)
    row = summ[(summ.classifier == "NBLDA") & (summ.n_genes == 10) & (summ.metric == "accuracy")].iloc[0]
    vals = res[(res.classifier == "NBLDA") & (res.n_genes == 10)]["accuracy"]
    assert row["mean"] == pytest.approx(vals.mean()) and row["sd"] == pytest.approx(vals.std())
    an = P.anova_between_classifiers(res)
    from scipy import stats

    sub = res[res.n_genes == 30]
    ref = stats.f_oneway(*[g["accuracy"].to_numpy() for _, g in sub.groupby("classifier")])
    got = an[(an.n_genes == 30) & (an.metric == "accuracy")].iloc[0]
    if np.isfinite(ref.pvalue):
        assert got["p_value"] == pytest.approx(ref.pvalue)
    tab = P.paper_table(summ, an, 10)
    assert list(tab.columns) == list(P.METRICS) and tab.index[-1] == "ANOVA p"


def test_compact_features_give_the_same_results(small_cohort):
    """Top DERs + one 'rest of the counts' column: every classifier's metrics equal the all-genes path."""
    x = small_cohort.counts.to_numpy().T
    y = small_cohort.clinical["ATRX"].to_numpy().astype(str)
    rad = small_cohort.radiomics.to_numpy()
    for i, (tr, te) in enumerate(P.make_splits(y, 3, 0.2, 5)):
        rows = {}
        for compact in (True, False):
            cfg = P.ProtocolConfig(der_sizes=(5, 40), n_jobs=1, rf_n_estimators=10, q2q="wilson-hilferty",
                                   compact=compact)
            rows[compact] = pd.DataFrame(P.evaluate_split(x, rad, y, tr, te, cfg, "mutant", i))
        assert len(rows[True]) == 12
        pd.testing.assert_frame_equal(rows[True], rows[False])


# -- radiomics -----------------------------------------------------------------------------------


def test_ratio_features_from_label_map():
    lab = np.zeros((20, 20, 20), dtype=np.int16)
    lab[:5] = 4  # ET: 2000 voxels
    lab[5:15] = 2  # ED: 4000
    lab[15:16] = 1  # NCR: 400
    f = R.features_from_labels(lab, voxel_volume_mm3=8.0)
    et, ed, ncr = 2000 * 8e-3, 4000 * 8e-3, 400 * 8e-3
    wt = et + ed + ncr
    expect = [et / ncr, et / (et + ncr), et / ed, et / wt, ed / ncr, ed / (et + ncr), ed / wt, ncr / wt]
    np.testing.assert_allclose([f[k] for k in R.FEATURES], expect, rtol=1e-12)


def test_empty_compartments():
    f = R.ratio_features(2.0, 5.0, 0.0, voxel_volume_ml=0.001)
    assert f["ET_NCR"] == pytest.approx(2000.0) and f["NCR_WT"] == 0.0 and np.isfinite(f["ED_NCR"])
    with pytest.raises(InputError, match="no tumour"):
        R.ratio_features(0.0, 0.0, 0.0)
    cut = R.thresholds(np.array([[1.0], [2.0], [10.0]]), "median")
    assert R.ordinal(np.array([[1.5], [2.5]]), cut).ravel().tolist() == [0.0, 1.0]


def test_anova_pvalues(small_cohort):
    from scipy import stats

    p = R.anova_pvalues(small_cohort.radiomics, small_cohort.clinical[["IDH", "1p19q"]])
    lab = small_cohort.clinical["IDH"]
    ref = stats.f_oneway(*[small_cohort.radiomics["ET_WT"][lab == v] for v in sorted(lab.unique())]).pvalue
    assert p.loc["ET_WT", "IDH"] == pytest.approx(ref)
    assert p.loc["ET_WT", "IDH"] < 1e-3  # planted: IDH-wild-type enhances more


# -- counts I/O and validation -------------------------------------------------------------------


def test_read_counts_formats(tmp_path, airway):
    table, _ = airway
    assert table.counts.shape == (64102, 8) and table.counts.dtype == np.int64
    df = pd.DataFrame(table.counts[:50], index=table.gene_ids[:50], columns=table.sample_ids)
    df.to_csv(tmp_path / "c.csv")
    t2 = read_counts(tmp_path / "c.csv")
    assert np.array_equal(t2.counts, table.counts[:50])


@pytest.mark.parametrize("bad, msg", [(1.5, "non-integer"), (-3, "negative"), (np.nan, "missing")])
def test_bad_counts(tmp_path, bad, msg):
    df = pd.DataFrame({"s1": [1.0, 2.0], "s2": [3.0, bad]}, index=["g1", "g2"])
    df.to_csv(tmp_path / "c.tsv", sep="\t")
    with pytest.raises(InputError, match=msg) as err:
        read_counts(tmp_path / "c.tsv")
    assert "c.tsv" in str(err.value)


def test_duplicate_genes_and_mismatched_samples(tmp_path):
    pd.DataFrame({"s1": [1, 2], "s2": [3, 4]}, index=["g1", "g1"]).to_csv(tmp_path / "d.tsv", sep="\t")
    with pytest.raises(InputError, match="duplicated gene"):
        read_counts(tmp_path / "d.tsv")
    pd.DataFrame({"s1": [1, 2], "s2": [3, 4]}, index=["g1", "g2"]).to_csv(tmp_path / "c.tsv", sep="\t")
    pd.DataFrame({"IDH": ["mutant", "wildtype"]}, index=["s1", "sX"]).to_csv(tmp_path / "k.csv")
    with pytest.raises(InputError, match="no row in the clinical table"):
        align_samples(read_counts(tmp_path / "c.tsv"), read_clinical(tmp_path / "k.csv"))
    clin = pd.DataFrame({"IDH": ["mutant", None]}, index=["s1", "s2"])
    with pytest.raises(InputError, match="missing for 1"):
        target_labels(clin, "IDH")


def test_one_class_in_training_split():
    y = np.array(["mutant"] * 30 + ["wildtype"])
    with pytest.raises(InputError, match="fewer than 2"):
        P.make_splits(y, 3, 0.2, 0)
    with pytest.raises(InputError, match="single class"):
        P.evaluate_split(np.ones((31, 5)), None, y, np.arange(30), np.array([30]), P.ProtocolConfig(), "mutant")


def test_size_factors_reference_training_only():
    rng = np.random.default_rng(0)
    tr = rng.poisson(50, (300, 6)).astype(float)
    te = tr[:, :2] * 3
    for method in ("total", "median-ratio", "upper-quartile"):
        s_tr, s_te = size_factors(tr, te, method)
        assert s_tr.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(s_te, 3 * s_tr[:2], rtol=1e-12)
        # test samples do not change training factors
        s_tr2, _ = size_factors(tr, te * 10, method)
        np.testing.assert_allclose(s_tr, s_tr2)
    keep = quantile_filter(tr, 0.25)
    means = tr.mean(axis=1)
    assert np.array_equal(keep, means > np.quantile(means, 0.25))


# -- CLI -----------------------------------------------------------------------------------------


@pytest.fixture()
def marioni_files(tmp_path, marioni):
    counts, factors = marioni
    counts.to_csv(tmp_path / "counts.tsv", sep="\t")
    clin = pd.DataFrame({"tissue": factors["Tissue"].astype(str)}, index=factors.index)
    clin.to_csv(tmp_path / "clinical.csv")
    return tmp_path


@pytest.mark.slow
def test_marioni_end_to_end(marioni_files):
    d = marioni_files
    r = runner.invoke(app, ["--quiet", "radiogenomics", "de", "--counts", str(d / "counts.tsv"), "--clinical",
                            str(d / "clinical.csv"), "--target", "tissue", "--out", str(d / "de")])
    assert r.exit_code == 0, r.output
    de = pd.read_csv(d / "de" / "de_genes.csv")
    assert list(de.columns) == ["gene", "logFC", "logCPM", "p_value", "FDR"]
    assert (np.diff(de["p_value"]) >= 0).all() and (de["FDR"] < 0.05).mean() > 0.3  # kidney vs liver differ
    r = runner.invoke(app, ["--quiet", "radiogenomics", "run", "--counts", str(d / "counts.tsv"), "--clinical",
                            str(d / "clinical.csv"), "--target", "tissue", "--out", str(d / "run"), "--splits", "3",
                            "--der-sizes", "10,50", "--jobs", "1", "--rf-trees", "20", "--positive", "Liver"])
    assert r.exit_code == 0, r.output
    res = pd.read_csv(d / "run" / "results.csv")
    # all classifiers that need no radiomics ran, on every split and size
    assert set(res["classifier"]) == {"RadiogenomicsNB", "NBLDA", "PLDA", "VoomNSC", "RF-genomics"}
    assert len(res) == 3 * 2 * 5
    assert res["accuracy"].mean() > 0.9  # kidney vs liver is easy
    for f in ("summary.csv", "anova.csv", "report.html", "bar_accuracy.png"):
        assert (d / "run" / f).exists()


def test_cli_simulate_and_run_with_radiomics_by_sex(tmp_path):
    r = runner.invoke(app, ["--quiet", "radiogenomics", "simulate", "--out", str(tmp_path / "sim"), "--genes", "800",
                            "--seed", "2"])
    assert r.exit_code == 0, r.output
    s = tmp_path / "sim"
    args = ["--quiet", "radiogenomics", "run", "--counts", str(s / "counts.tsv"), "--clinical", str(s / "clinical.csv"),
            "--radiomics", str(s / "radiomics.csv"), "--target", "ATRX", "--splits", "2", "--der-sizes", "10",
            "--jobs", "1", "--rf-trees", "10", "--by", "sex", "--out", str(tmp_path / "run")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    res = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(res["group"]) == {"F", "M"} and "RF-radiogenomics" in set(res["classifier"])
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Group comparison" in html and "Radiomics features" in html
    ra = pd.read_csv(tmp_path / "run" / "radiomics_anova.csv", index_col=0)
    assert list(ra.index) == list(R.FEATURES) and ra["ATRX"].between(0, 1).all()


def test_cli_bad_inputs(tmp_path):
    co = simulate_cohort(n_samples=30, n_genes=300, seed=1)
    co.counts.to_csv(tmp_path / "counts.tsv", sep="\t")
    co.clinical.to_csv(tmp_path / "clinical.csv")
    co.radiomics.iloc[:-2].to_csv(tmp_path / "rad_missing.csv")
    base = ["radiogenomics", "run", "--counts", str(tmp_path / "counts.tsv"), "--clinical",
            str(tmp_path / "clinical.csv"), "--out", str(tmp_path / "o"), "--splits", "1", "--jobs", "1"]
    from neurorad.cli import main  # noqa: F401 - main turns InputError into exit code 2

    r = runner.invoke(app, [*base, "--target", "IDH", "--radiomics", str(tmp_path / "rad_missing.csv")])
    assert isinstance(r.exception, InputError) and "lacks 2 of 30 patients" in str(r.exception)
    r = runner.invoke(app, [*base, "--target", "grade"])
    assert isinstance(r.exception, InputError) and "not in table" in str(r.exception)
    assert not (tmp_path / "o").exists()
