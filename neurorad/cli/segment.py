"""``neurorad train | segment | model ... | dataset ...`` (learned segmentation layer).

* ``neurorad train CONFIG --out RUN``: train (progress bar with loss and validation Dice), resume
  with ``--resume``; the run's ``model/`` folder is a registry model.
* ``neurorad segment --model NAME[@VERSION] IMAGE... --out LABELS.nii.gz``: run a model.
* ``neurorad model list | show | verify | import | export-onnx | accept-bf16``: the model registry.
* ``neurorad dataset phantom``: phantom datasets in the nnU-Net raw layout with domain
  randomisation; ``neurorad dataset check DIR``: validate a raw dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from neurorad.errors import InputError

model_app = typer.Typer(help="The model registry: list, show, verify, import, export to ONNX.",
                        no_args_is_help=True)
dataset_app = typer.Typer(help="Training datasets in the nnU-Net raw layout.", no_args_is_help=True)


def _quiet() -> bool:
    from neurorad.cli import quiet

    return quiet()


def train_cmd(
    config: Path = typer.Argument(..., help="Training config (TOML or JSON; see docs/segment.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoints, curves, model/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
) -> None:
    """Train a segmentation network (or k-fold ensemble); the run folder's model/ is a registry model."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from neurorad.segment.train import load_config, train

    cfg = load_config(config)
    cmd = f"neurorad train {config} --out {out}"
    if _quiet():
        res = train(cfg, out, resume=resume, command=cmd)
    else:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False) as prog:
            tasks: dict = {}

            def progress(ev: dict) -> None:
                if ev["stage"] == "prepare":
                    if "prep" not in tasks:
                        tasks["prep"] = prog.add_task("preparing cases", total=ev["total"], info="")
                    prog.update(tasks["prep"], completed=ev["done"])
                    return
                key = ("fold", ev["fold"])
                if key not in tasks:
                    tasks[key] = prog.add_task(f"fold {ev['fold']}", total=cfg.max_epochs, info="")
                best = ev.get("best", -1.0)
                best_s = f"{best:.3f}" if best >= 0 else "-"
                if ev["stage"] == "train":
                    prog.update(tasks[key], info=f"epoch {ev['epoch']} it {ev['iteration']}/{ev['iterations']} "
                                                 f"loss {ev['loss']:.4f} best val Dice {best_s}")
                else:
                    prog.update(tasks[key], completed=ev["epoch"], total=ev["epoch"] if ev["done"] else cfg.max_epochs,
                                info=f"loss {ev['loss']:.4f} val Dice {ev['val_dice']:.3f} (best {best_s}) "
                                     f"lr {ev['learning_rate']:.2e}")

            res = train(cfg, out, resume=resume, progress=progress, command=cmd)
    typer.echo(f"trained {cfg.name} {cfg.version}: validation Dice {res.val_dice:.3f} "
               f"({len(res.folds)} fold(s)) -> model {res.model_dir}")


def segment_cmd(
    images: list[Path] = typer.Argument(..., help="Input images, one per contrast in the model's order."),
    model: str = typer.Option(..., "--model", "-m", help="Model name, name@version or model folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Label map (.nii.gz, uint8) on the first image's grid."),
    probabilities: Path | None = typer.Option(None, "--probabilities", help="Also write the class probabilities "
                                                                            "(4D .nii.gz)."),
    uncertainty: Path | None = typer.Option(None, "--uncertainty", help="Ensembles: write the member "
                                                                        "disagreement map (.nii.gz)."),
    engine: str = typer.Option("auto", "--engine", help="auto | torch | onnx | torch-bf16 "
                                                     "(auto: the fastest that export-onnx verified)."),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="Mirror test-time augmentation "
                                                                 "(default: as the model card says)."),
) -> None:
    """Segment images with a registered model (probabilities on the first image's grid)."""
    from neurorad.image.io import load_image
    from neurorad.image.nifti import save_nifti
    from neurorad.segment.engine import load_segmenter

    for p in [out, probabilities, uncertainty]:
        if p is not None and not (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
            raise InputError("output must end in .nii or .nii.gz", p)
    seg = load_segmenter(model, engine=engine, mirror_tta=tta)
    vols = []
    for p in images:
        if not p.exists():
            raise InputError("input image not found", p)
        vols.append(load_image(p))
    res = seg.predict(vols)
    if probabilities is not None:
        save_nifti(res.probabilities, probabilities)
    if uncertainty is not None:
        if res.uncertainty is None:
            raise InputError(f"model {seg.name} has one member: no uncertainty map (train with folds > 1)")
        save_nifti(res.uncertainty, uncertainty)
    save_nifti(res.label_map(), out)
    side = out.with_name(out.name.removesuffix(".gz").removesuffix(".nii") + ".json")
    side.write_text(json.dumps({"step": "segmentation", **res.record}, indent=2, default=str) + "\n")
    typer.echo(f"wrote {out} ({seg.name} {seg.version}, {seg.engine}, "
               f"{sum(res.record['seconds'].values()):.1f} s)")


@model_app.command("list")
def model_list() -> None:
    """Registered models (shipped and site registry)."""
    from neurorad.segment.registry import list_models, roots

    ms = list_models()
    if not ms:
        typer.echo(f"no models registered (looked in {', '.join(str(r) for r in roots())})")
        return
    for m in ms:
        where = "shipped" if m.shipped else "site"
        typer.echo(f"{m.name}@{m.version}\t{m.card.get('task', '')}\t{','.join(m.card['contrasts'])}\t{where}\t"
                   f"{m.path}")


@model_app.command("show")
def model_show(model: str = typer.Argument(..., help="name, name@version or folder.")) -> None:
    """Print a model's card (JSON)."""
    from neurorad.segment.registry import find_model

    info = find_model(model, check=False)
    typer.echo(json.dumps({**info.card, "path": str(info.path)}, indent=2, default=str))


@model_app.command("verify")
def model_verify(model: str = typer.Argument(..., help="name, name@version or folder.")) -> None:
    """Check every file of a model against the sha256 in its card (exit 3 on mismatch)."""
    from neurorad.errors import ProcessingError
    from neurorad.segment.registry import find_model, verify

    info = find_model(model, check=False)
    problems = verify(info.path)
    if problems:
        raise ProcessingError(f"model {info.name} {info.version} FAILED verification: {'; '.join(problems)}")
    typer.echo(f"{info.name} {info.version}: {len(info.card['files'])} files OK")


@model_app.command("import")
def model_import(
    folder: Path = typer.Argument(..., help="Model folder (e.g. a training run's model/)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the same name and version."),
) -> None:
    """Verify a model folder and copy it into the site registry ($NEURORAD_MODELS)."""
    from neurorad.segment.registry import import_model

    info = import_model(folder, overwrite=overwrite)
    typer.echo(f"imported {info.name}@{info.version} -> {info.path}")


@model_app.command("export-onnx")
def model_export_onnx(
    model: str = typer.Argument(..., help="name, name@version or folder (written in place)."),
    repeats: int = typer.Option(3, "--repeats", help="Timed runs per engine for the speed comparison."),
) -> None:
    """Export every member to ONNX, check outputs match torch, time torch, ONNX and (on CPUs with native
    bfloat16) torch-bf16, and record the fastest that reproduces float32 as the default engine."""
    from neurorad.segment.onnx_engine import export_model_onnx
    from neurorad.segment.registry import find_model

    info = find_model(model)
    rep = export_model_onnx(info.path, repeats=repeats)
    bf16 = (f", torch-bf16 {rep['bf16_s']:.3f} s (max probability diff {rep['bf16_max_prob_diff']:.3f}, "
            f"{'accepted' if rep['bf16_accepted'] else 'refused'})" if "bf16_s" in rep else "")
    typer.echo(f"{info.name} {info.version}: ONNX max |diff| {rep['max_abs_diff']:.2e}; torch {rep['torch_s']:.3f} s, "
               f"onnx {rep['onnx_s']:.3f} s{bf16} per window batch -> default engine {rep['preferred_engine']} "
               f"(without bfloat16: {rep['fallback_engine']})")


@model_app.command("accept-bf16")
def model_accept_bf16(
    model: str = typer.Argument(..., help="name, name@version or folder (written in place)."),
    evidence: str = typer.Option(..., "--evidence", help="The workflow-level check that bfloat16 leaves the "
                                 "results unchanged: the benchmark's command and outcome (recorded on the card)."),
) -> None:
    """Prefer torch-bf16 for a model whose export refused it on the voxel check, on the evidence of a check of
    its workflow's results; CPUs without native bfloat16 keep running the recorded float32 engine."""
    from neurorad.segment.onnx_engine import accept_bf16
    from neurorad.segment.registry import find_model

    info = find_model(model)
    rep = accept_bf16(info.path, evidence)
    typer.echo(f"{info.name} {info.version}: default engine torch-bf16 ({rep['bf16_s']:.3f} s per window batch; "
               f"without bfloat16: {rep['fallback_engine']})")


@dataset_app.command("check")
def dataset_check(folder: Path = typer.Argument(..., help="nnU-Net raw dataset folder.")) -> None:
    """Validate a dataset in the nnU-Net raw layout."""
    from neurorad.segment.dataset import read_dataset

    ds = read_dataset(folder)
    typer.echo(f"{folder}: {len(ds.cases)} cases, channels {', '.join(ds.channel_names)}, labels "
               f"{', '.join(f'{k}={v}' for k, v in ds.labels.items())}")


@dataset_app.command("phantom")
def dataset_phantom(
    kind: str = typer.Option(..., "--kind", help="ms-pair, wmh, glioma, cmb or ich-pair."),
    n: int = typer.Option(..., "--cases", "-n", help="Number of cases."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder (nnU-Net raw layout)."),
    target: str = typer.Option("lesion", "--target", help="lesion (the kind's lesion classes) or brain."),
    contrasts: str | None = typer.Option(None, "--contrasts", help="Comma list of channels (default: the kind's)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same dataset."),
    randomise: str = typer.Option("all", "--randomise", help="Comma list of contrast,bias,noise,resolution,"
                                                              "thickness,pose,warp, or all / none."),
    mix: bool = typer.Option(False, "--mix-contrasts", help="One channel (MRI) per case, the --contrasts taken in "
                                                            "turn (contrast-agnostic models)."),
    labels: str = typer.Option("truth", "--labels", help="truth, or weak (brain target only: MNI152 priors + "
                                                        "prior-guided Gaussian mixture, the skull-stripping paper's "
                                                        "SPM12-p labels rebuilt)."),
    weak_engine: str = typer.Option("prior-gmm", "--weak-engine", help="With --labels weak: the brain-extraction "
                                                                       "engine that makes the weak labels (prior-gmm, "
                                                                       "deepbet, ...)."),
    weak_from: str | None = typer.Option(None, "--weak-from", help="With --labels weak: compute the weak label on this "
                                                                   "contrast of the same case (e.g. t1, as the paper's "
                                                                   "labels from T1Gd), not on the written image."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset folder."),
) -> None:
    """Write phantom cases (real anatomy) with domain randomisation as an nnU-Net raw dataset."""
    from neurorad.cli._progress import bar
    from neurorad.phantom.randomise import RANDOMISATIONS, training_cases
    from neurorad.segment.dataset import write_dataset

    opts = set(RANDOMISATIONS) if randomise == "all" else (set() if randomise == "none" else
                                                          {s.strip() for s in randomise.split(",") if s.strip()})
    unknown = sorted(opts - set(RANDOMISATIONS))
    if unknown:
        raise InputError(f"unknown --randomise item(s) {', '.join(unknown)}; choose from {', '.join(RANDOMISATIONS)}")
    chans = tuple(c.strip().lower() for c in contrasts.split(",") if c.strip()) if contrasts else None
    if labels not in ("truth", "weak"):
        raise InputError(f"--labels must be truth or weak, got {labels!r}")
    if labels == "weak" and target != "brain":
        raise InputError("--labels weak is for --target brain")
    relabel = None
    if labels == "weak":
        import numpy as np

        from neurorad.preprocess.brain_extraction import extract_brain, get_extractor

        get_extractor(weak_engine)  # unknown engine: a clear error before any case is made

        def relabel(vols, truth):  # noqa: ANN001, ANN202
            return truth.with_data(np.asarray(extract_brain(vols[0], weak_engine).data, np.uint8))

    elif weak_from is not None or weak_engine != "prior-gmm":
        raise InputError("--weak-engine / --weak-from are for --labels weak")
    weak_desc = ("MNI152 priors + prior-guided GMM, summed tissue > 0.7, cleaned" if weak_engine == "prior-gmm"
                 else f"brain-extraction engine {weak_engine}")
    on = f", computed on the case's {weak_from}" if weak_from else ""
    source = "truth" if labels == "truth" else f"weak ({weak_desc}{on})"
    with bar(f"phantom dataset {kind}", n) as advance:
        tc = training_cases(kind, n, target=target, contrasts=chans, seed=seed, randomise=opts, progress=advance,
                            mix_contrasts=mix, relabel=relabel, label_source=source,
                            label_contrast=weak_from.strip().lower() if weak_from else None)
        ds = write_dataset(out, tc.cases, tc.channel_names, tc.labels, tc.description, overwrite=overwrite,
                           extra={"neurorad_cases": tc.records})
    typer.echo(f"wrote {len(ds.cases)} {kind} cases ({', '.join(ds.channel_names)}; labels "
               f"{', '.join(ds.labels.values())}) -> {out}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("train")(train_cmd)
    app.command("segment")(segment_cmd)
    app.add_typer(model_app, name="model")
    app.add_typer(dataset_app, name="dataset")
