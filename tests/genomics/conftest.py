"""Real RNA-seq count sets (pasilla, airway, Marioni) and a small simulated cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurorad import resources
from neurorad.genomics.counts import CountTable, read_counts


@pytest.fixture(scope="session")
def pasilla() -> tuple[CountTable, np.ndarray]:
    """pasilla gene counts (14,599 x 7) with the treated/untreated condition per sample."""
    folder = resources.rnaseq("pasilla")
    table = read_counts(folder / "pasilla_gene_counts.tsv")
    ann = pd.read_csv(folder / "pasilla_sample_annotation.csv")
    cond = {f.removesuffix("fb"): c for f, c in zip(ann["file"], ann["condition"], strict=True)}
    return table, np.array([cond[s] for s in table.sample_ids])


@pytest.fixture(scope="session")
def airway() -> tuple[CountTable, np.ndarray]:
    """airway (64,102 x 8), dexamethasone-treated vs untreated."""
    import anndata

    path = resources.rnaseq("airway") / "airway.h5ad"
    table = read_counts(path)
    ad = anndata.read_h5ad(path)
    dex = ad.obs.loc[list(table.sample_ids), "dex"].astype(str).to_numpy()
    return table, dex


@pytest.fixture(scope="session")
def marioni() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Marioni et al. (2008) kidney vs liver counts (5,088 x 10) and the sample factors."""
    import rdata

    d = rdata.read_rda(str(resources.rnaseq("Marioni.RData")))
    return d["mycounts"], d["myfactors"]


@pytest.fixture(scope="session")
def small_cohort():
    from neurorad.genomics.simulate import simulate_cohort

    return simulate_cohort(n_samples=108, n_genes=1500, n_de=40, seed=3)
