"""A simulated lower-grade-glioma radiogenomics cohort with known truth.

Shaped like the radiogenomics paper's cohort (108 patients; IDH 85 mutant / 23 wild type,
1p/19q 27 codeleted / 81 intact, ATRX 43 mutant / 65 wild type; 1p/19q codeletion only in
IDH-mutant tumours and ATRX mutation mostly in IDH-mutant, non-codeleted ones, as in
TCGA-LGG), with about 20,000 genes:

- baseline gene means log-normal (median ~ 60 reads), library sizes log-normal;
- dispersion trend ``phi(mu) = phi_inf + b / mu`` (BCV ~ 0.4 at high counts, as in human tumour
  cohorts) with log-normal gene-wise scatter around it;
- ``n_de`` planted differentially expressed genes per target with log fold changes +-(0.2..0.6);
- tumour compartment volumes (ET, ED, NCR in ml) log-normal with means that depend on the
  mutations (IDH-wild-type: more enhancement and necrosis), turned into the paper's 8 ratio
  features;
- ``n_radiogenes`` genes per target whose NB mean also follows the log-linear radiomics model
  ``log mu_ij = ... + x_i^T beta_j`` (x: standardised log ratios), the structure the
  radiogenomics-NB classifier models.

Returned truth: which genes are DE for which target, the radiogenes and their betas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from neurorad.genomics.radiomics import FEATURES, features_table


@dataclass(frozen=True)
class SimulatedCohort:
    counts: pd.DataFrame  # genes x samples (int64)
    clinical: pd.DataFrame  # one row per sample: IDH, 1p19q, ATRX, sex
    radiomics: pd.DataFrame  # one row per sample: the 8 ratio features
    volumes: pd.DataFrame  # ET_ml, ED_ml, NCR_ml
    truth: dict = field(default_factory=dict)


def _labels(rng: np.random.Generator, n: int) -> pd.DataFrame:
    if n != 108:
        # keep the paper's proportions
        frac = np.array([85, 27, 43]) / 108
        n_idh, n_codel, n_atrx = (np.round(frac * n)).astype(int)
    else:
        n_idh, n_codel, n_atrx = 85, 27, 43
    idh = np.zeros(n, dtype=bool)
    idh[:n_idh] = True
    codel = np.zeros(n, dtype=bool)
    codel[:n_codel] = True  # codeleted tumours are IDH-mutant
    atrx = np.zeros(n, dtype=bool)
    n_atrx_mut_idh = min(n_atrx - max(n_atrx // 14, 0), n_idh - n_codel)
    atrx[n_codel : n_codel + n_atrx_mut_idh] = True  # IDH-mutant, non-codeleted
    rest = n_atrx - n_atrx_mut_idh
    atrx[n_idh : n_idh + rest] = True  # a few IDH-wild-type
    perm = rng.permutation(n)
    sex = rng.choice(["M", "F"], size=n, p=[0.56, 0.44])
    return pd.DataFrame({
        "IDH": np.where(idh, "mutant", "wildtype")[perm],
        "1p19q": np.where(codel, "codeleted", "intact")[perm],
        "ATRX": np.where(atrx, "mutant", "wildtype")[perm],
        "sex": sex,
    })


def simulate_cohort(
    n_samples: int = 108,
    n_genes: int = 20_000,
    n_de: int = 40,
    n_radiogenes: int = 10,
    effect: float = 1.0,
    seed: int = 0,
) -> SimulatedCohort:
    """Simulate counts, clinical labels and radiomics with planted signal (see module docstring).

    ``effect`` scales all planted log fold changes and radiomics effects (0 = no signal).
    """
    rng = np.random.default_rng(seed)
    ids = [f"SIM{i:04d}" for i in range(n_samples)]
    clin = _labels(rng, n_samples)
    clin.index = pd.Index(ids, name="sample_id")
    mut = {t: (clin[t].to_numpy() == v).astype(float) for t, v in
           (("IDH", "mutant"), ("1p19q", "codeleted"), ("ATRX", "mutant"))}

    # tumour compartments (ml): IDH-wild-type enhances and necroses more; codeleted tumours
    # less oedema; ATRX a little more oedema
    log_et = np.log(6.0) - 1.2 * effect * mut["IDH"] + rng.normal(0, 0.6, n_samples)
    log_ncr = np.log(8.0) - 0.8 * effect * mut["IDH"] + rng.normal(0, 0.6, n_samples)
    log_ed = np.log(30.0) - 0.5 * effect * mut["1p19q"] + 0.3 * effect * mut["ATRX"] + rng.normal(0, 0.5, n_samples)
    vols = pd.DataFrame({"ET_ml": np.exp(log_et), "ED_ml": np.exp(log_ed), "NCR_ml": np.exp(log_ncr)}, index=clin.index)
    rad = features_table(vols)
    z = np.log(rad.to_numpy())
    z = (z - z.mean(axis=0)) / z.std(axis=0)

    # genes
    base = np.exp(rng.normal(np.log(60.0), 1.8, n_genes))
    phi_trend = 0.15 + 1.0 / base
    phi = phi_trend * np.exp(rng.normal(0, 0.5, n_genes))
    lib = np.exp(rng.normal(0.0, 0.25, n_samples))  # relative library size
    log_mu = np.log(base)[None, :] + np.log(lib)[:, None]
    truth: dict = {"de_genes": {}, "log_fc": {}, "radiogenes": {}, "radio_beta": {}, "dispersion": phi}
    pool = rng.permutation(n_genes)
    cursor = 0
    for t in ("IDH", "1p19q", "ATRX"):
        g = pool[cursor : cursor + n_de]
        cursor += n_de
        lfc = effect * rng.uniform(0.2, 0.6, n_de) * rng.choice([-1.0, 1.0], n_de)
        log_mu[:, g] += mut[t][:, None] * lfc[None, :]
        truth["de_genes"][t] = g
        truth["log_fc"][t] = lfc
        rg = pool[cursor : cursor + n_radiogenes]
        cursor += n_radiogenes
        beta = effect * rng.normal(0, 1.0, (len(FEATURES), n_radiogenes)) / np.sqrt(len(FEATURES))
        # radiogenes: class-dependent log-linear link to radiomics (eq. 8a/8b) and a class shift
        log_mu[:, rg] += (z @ beta) * mut[t][:, None] + 0.3 * effect * mut[t][:, None]
        truth["radiogenes"][t] = rg
        truth["radio_beta"][t] = beta
    mu = np.exp(log_mu)
    # NB as gamma-Poisson
    lam = rng.gamma(shape=1.0 / phi[None, :], scale=mu * phi[None, :])
    counts = rng.poisson(lam).astype(np.int64)
    genes = [f"GENE{j:05d}" for j in range(n_genes)]
    counts_df = pd.DataFrame(counts.T, index=pd.Index(genes, name="gene_id"), columns=ids)
    return SimulatedCohort(counts_df, clin, rad, vols, truth)


def write_cohort(cohort: SimulatedCohort, out_dir) -> dict[str, str]:  # noqa: ANN001 - Path-like
    """Write counts.tsv, clinical.csv, radiomics.csv and volumes.csv into out_dir; returns the paths."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"counts": out / "counts.tsv", "clinical": out / "clinical.csv", "radiomics": out / "radiomics.csv",
             "volumes": out / "volumes.csv"}
    cohort.counts.to_csv(paths["counts"], sep="\t")
    cohort.clinical.to_csv(paths["clinical"])
    cohort.radiomics.to_csv(paths["radiomics"])
    cohort.volumes.to_csv(paths["volumes"])
    return {k: str(v) for k, v in paths.items()}
