"""The ``vitreg`` command: run the notebooks, fetch weights, build the report, strip notebooks.

Paper: all findings F1-F9 (the notebooks reproduce them; this is how they are run).

    vitreg run [--profile real|smoke|lecture] [--only 02 05 ...] [--keep-going] [--out DIR]
               [--params FILE] [--set NOTEBOOK.KEY=VALUE ...]
    vitreg weights download [--notebooks | --all | KEY ...]
    vitreg weights where KEY ...
    vitreg report RESULTS_DIR OUT_DIR [--figures DIR]
    vitreg strip
    vitreg book [--run auto|real|lecture|smoke] [--out DIR] [--collect BASETEMP] [--instructor]
    vitreg handout [--out DIR]
    vitreg extract NOTEBOOK ... [--profile real|smoke] [--params FILE] [--set NOTEBOOK.KEY=VALUE ...]
    vitreg scan MODEL [--weights FILE] [--images DIR] [--size PX] [--out DIR] [--json] [--random]
    vitreg data list | download NAME... [--force] | verify NAME... | where NAME...

``python -m vitreg ...`` is the same command. The Makefile's targets call it. Each subcommand is one
``_cmd_<name>(args) -> int`` function with its parser in ``_add_<name>``; a new subcommand (``vitreg
scan``) adds one such pair and one entry in :data:`SUBCOMMANDS`. Heavy modules (torch, timm, papermill)
are imported only by the subcommand that needs them, so ``vitreg --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vitreg import __version__
from vitreg.experiments.params import PROFILES

_EXAMPLES = """examples:
  vitreg run --profile smoke                 every notebook, offline, random weights (minutes, CPU)
  vitreg run --profile lecture --only 02      pretrained small models, 224 px, bundled photos (CPU, minutes)
  vitreg run --only 02 --out /tmp/run02      one notebook with its real parameters
  vitreg run --set 02_high_norm_tokens.n_images=512 --set common.device=cuda
  vitreg run --params my.yaml                override parameters from a file (profile format)
  vitreg weights download --notebooks        fill the weights folder on a connected machine
  vitreg report build/smoke/results build/smoke
  vitreg strip                               before committing notebooks
  vitreg estimate --set 09_downstream.seeds=1   the real run's expected time with one seed for Table 2
  torchrun --standalone --nproc_per_node 8 -m vitreg extract all   fill 05/06's feature caches on 8 GPUs
  vitreg scan dinov2_s_reg --images ~/photos   does this ViT have high-norm tokens? (report card)
  vitreg data list                           every dataset the notebooks read, and its state here
  vitreg data download voc07 ade20k cub      fetch, check and arrange datasets under $VITREG_DATA
"""


# --- vitreg run -----------------------------------------------------------------------------------
def _add_run(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="run the notebooks in order (papermill), then build the report",
        description="Run the notebooks of notebooks/order.yaml in order with papermill, then build the report. "
                    "Every notebook's parameters are checked before the first one runs; with pretrained weights "
                    "(real and lecture profiles) the weights of every model are looked up first (offline with weights missing: stop at once).",
        epilog="outputs: real -> figures/, results/, build/notebooks/, build/report.*; "
               "smoke -> build/smoke/ (or --out DIR). Exit status: 0 all ran, 1 a notebook failed, "
               "2 bad parameters, 130 interrupted (Ctrl-C or SIGTERM; the summary and report say what finished).")
    p.add_argument("--profile", choices=PROFILES, default="real",
                   help="real: the experiments' own defaults (pretrained weights, GPU, hours); smoke: each experiment's smoke "
                        "profile (random weights, CPU, offline, minutes); lecture: its lecture profile (pretrained small models, CPU, "
                        "minutes per notebook; weights downloaded once). Default: real")
    _add_only(p)
    p.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after one fails")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="folder for figures/, results/, notebooks/ and the report (default: by profile)")
    _add_overrides(p)
    return p


def _add_only(p: argparse.ArgumentParser) -> None:
    """``--only NOTEBOOK ...``: the notebooks ``vitreg run`` and ``vitreg estimate`` take (default: all)."""
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                   help="notebook numbers (02) or names (02_high_norm_tokens); default: all, in run order")


def _add_overrides(p: argparse.ArgumentParser) -> None:
    """``--params FILE`` and ``--set NOTEBOOK.KEY=VALUE``: the overrides ``vitreg run`` and ``vitreg extract``
    share (both checked by :mod:`vitreg.experiments.params` before anything runs)."""
    p.add_argument("--params", type=Path, metavar="FILE",
                   help="a YAML file in the profile format ('common:' and 'notebooks:' sections) whose values "
                        "override the profile's; checked like a profile before anything runs")
    p.add_argument("--set", action="append", default=[], metavar="NOTEBOOK.KEY=VALUE", dest="sets",
                   help="override one parameter, after --params (repeatable): 02_high_norm_tokens.n_images=512, "
                        "02.image_dir=/data/photos, common.device=cuda; VALUE is YAML (null, [a, b])")


def _cmd_run(args: argparse.Namespace) -> int:
    from vitreg.experiments.params import ParameterError
    from vitreg.cli.runner import run

    try:
        outcomes = run(args.profile, args.only, keep_going=args.keep_going, out_dir=args.out,
                       params_file=args.params, sets=args.sets)
    except ParameterError as err:
        print(f"parameter error, nothing was run:\n{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the first notebook started (the runner handles it after)
        print("interrupted before any notebook ran", file=sys.stderr)
        return 130
    if any(o.status == "interrupted" for o in outcomes):
        return 130
    return 1 if any(o.status == "failed" for o in outcomes) else 0


# --- vitreg estimate ------------------------------------------------------------------------------
def _add_estimate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "estimate", help="the real run's expected time on one H100 for your overrides (nothing runs)",
        description="Print the run-time table of the real profile (vitreg.experiments.timing: forwards, model loads "
                    "and the work besides forwards, per notebook) for the parameters a `vitreg run` with the same "
                    "--only, --params and --set would use. Nothing runs and nothing is written. An estimate: the "
                    "rates it assumes are listed under the table; `make benchmark-gpu` measures them on a GPU.")
    _add_only(p)
    p.add_argument("--rates", type=Path, metavar="JSON",
                   help="the file `python benchmarks/bench_gpu.py --json FILE` wrote on your GPU: its measured rates "
                        "(forward share, fp32 and memory shares, host-to-GPU, disk, kernel start) replace the assumed ones")
    _add_overrides(p)
    return p


def _cmd_estimate(args: argparse.Namespace) -> int:
    import json

    from vitreg.experiments.params import ParameterError
    from vitreg.experiments.timing import rates_from_benchmark
    from vitreg.cli.runner import estimate

    rates = None
    if args.rates is not None:
        try:
            rates = rates_from_benchmark(json.loads(args.rates.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as err:
            print(f"error: {args.rates} is not the JSON file bench_gpu.py --json writes ({err})", file=sys.stderr)
            return 2
        except ValueError as err:
            print(f"error: {args.rates}: {err}", file=sys.stderr)
            return 2
    try:
        table = estimate(args.only, params_file=args.params, sets=args.sets, rates=rates)
    except ParameterError as err:
        print(f"parameter error:\n{err}", file=sys.stderr)
        return 2
    used = f" with the rates measured in {args.rates}: " + ", ".join(f"{k} {v:.3g}" for k, v in rates.items()) if rates else ""
    print(f"expected run time on one H100-class GPU (estimate, vitreg.experiments.timing{used}):\n{table}")
    return 0


# --- vitreg weights -------------------------------------------------------------------------------
def _add_weights(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "weights", help="download pretrained weights, or show where they are found",
        description="Pretrained weights are looked up in the weights folder ($VITREG_WEIGHTS, default "
                    "data/weights in a checkout), then in timm's Hugging Face cache.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = actions.add_parser(
        "download", help="copy hub weights into the weights folder (needs internet once)",
        description="Download hub weights and copy them into the weights folder, which can then be copied "
                    "to offline machines. Models are zoo keys (dinov2_l_reg) or timm names.")
    d.add_argument("keys", nargs="*", metavar="KEY", help="models to download")
    which = d.add_mutually_exclusive_group()
    which.add_argument("--notebooks", action="store_true", help="every model the notebooks' defaults load")
    which.add_argument("--all", action="store_true", help="every model in the zoo")
    w = actions.add_parser(
        "where", help="where each model's weights are found, or every place looked",
        description="Say where the weights of each model are found on this machine (no network); a file whose "
                    "header says it is truncated or not a checkpoint is called broken. Exit status 1 if some are "
                    "missing or broken.")
    w.add_argument("keys", nargs="+", metavar="KEY", help="zoo keys (dinov2_l_reg) or timm names")
    return p


def _cmd_weights(args: argparse.Namespace) -> int:
    from vitreg.core.models import ZOO, UnknownModel

    try:
        if args.action == "download":
            return _download(args, list(ZOO))
        return _where(args.keys)
    except UnknownModel as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _download(args: argparse.Namespace, zoo: list[str]) -> int:
    from vitreg.cli.runner import notebook_models
    from vitreg.core.weights import download

    if args.keys and (args.all or args.notebooks):
        print("error: name models or pass --notebooks or --all, not both", file=sys.stderr)
        return 2
    keys = zoo if args.all else list(notebook_models()) if args.notebooks else args.keys
    if not keys:
        print("error: name the models to download, or pass --notebooks or --all", file=sys.stderr)
        return 2
    download(keys)
    return 0


def _where(keys: Sequence[str]) -> int:
    from vitreg.core.models import get_spec
    from vitreg.core.weight_files import check_weights_file
    from vitreg.core.weights import find_weights

    status = 0
    for key in keys:
        file, looked = find_weights(get_spec(key))
        problem = check_weights_file(file) if file else None  # the header, before calling the file found
        if problem:
            print(f"{key}: {file} is broken: {problem}; delete it and run `vitreg weights download {key}`")
        elif file:
            print(f"{key}: {file}")
        else:
            print(f"{key}: not found; looked in:\n" + "\n".join(f"  - {p}" for p in looked))
        status |= file is None or problem is not None
    return status


# --- vitreg report --------------------------------------------------------------------------------
def _add_report(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="build report.md and report.html from a run's results",
        description="Write report.md and report.html: every number of the paper beside the run's own. "
                    "`vitreg run` builds it already; this rebuilds it from existing results.")
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="the run's results/ folder of *.json")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where to write report.md and report.html")
    p.add_argument("--figures", type=Path, metavar="DIR", help="the run's figures (default RESULTS_DIR/../figures)")
    return p


def _cmd_report(args: argparse.Namespace) -> int:
    from vitreg.present.report import build_report

    try:
        written = build_report(args.results_dir, args.out_dir, figures_dir=args.figures)
    except (OSError, ValueError) as err:  # a results file that breaks the schema, a missing folder
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


# --- vitreg strip ---------------------------------------------------------------------------------
def _add_strip(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "strip", help="remove outputs from notebooks/*.ipynb (before committing)",
        description="Remove outputs, execution counts and run metadata from the checkout's notebooks/*.ipynb, "
                    "so commits hold the notebooks' sources only.")


def _cmd_strip(args: argparse.Namespace) -> int:
    from vitreg.cli.runner import strip_outputs

    for path in strip_outputs():
        print(f"stripped {path}")
    return 0


# --- vitreg scan ----------------------------------------------------------------------------------
def _add_scan(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "scan", help="check one ViT for the paper's artifacts and write a report card",
        description="Check one ViT for the artifacts of 'Vision Transformers Need Registers': pre-LayerNorm "
                    "patch norms per block and the block where high-norm tokens emerge, their share with a "
                    "bootstrap CI over images (the model's published cut-off, else a scale-free two-mode fit), "
                    "whether the norms are bimodal, the last block's [CLS] (or mean-pooled) attention artifact "
                    "score, what registers take, and massive activations per block. Writes "
                    "OUT/scan_<MODEL>.html, .png and .json and prints a one-line verdict.",
        epilog="MODEL is a zoo key (dino_s16, dinov2_l_reg; `vitreg weights where` lists places) or a timm ViT "
               "name (vit_small_patch16_224.augreg_in21k). Offline: pass --weights FILE or have the weights in "
               "the weights folder. Exit status: 0 scanned, 2 bad input (unknown or non-ViT model, missing "
               "weights, no images, bad size).")
    p.add_argument("model", metavar="MODEL", help="zoo key or timm ViT name")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="a local checkpoint (timm .safetensors/.pth or official DINOv2 .pth); works offline")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="folder of images (recursive, sorted); default: the 14 bundled photos")
    p.add_argument("--size", type=int, metavar="PX",
                   help="image side in pixels, a multiple of the patch size (default: the model's native size)")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="folder for scan_<MODEL>.html/.png/.json (default: the current folder)")
    p.add_argument("--json", action="store_true",
                   help="also print the card's JSON on stdout (progress and the estimate go to stderr)")
    p.add_argument("--random", action="store_true",
                   help="random weights instead of pretrained ones (tests the scan; every output says so)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="images per forward pass (lower it for large models; default 8)")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu, cuda, mps or auto (default cpu)")
    return p


def _cmd_scan(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from vitreg.core.images import SAMPLE_SOURCE, ImageError, image_folder, sample_photos
    from vitreg.core.models import NotAPlainViT, UnknownModel
    from vitreg.measure.scan import scan
    from vitreg.present.scan_render import write_card
    from vitreg.core.weights import BrokenWeights, WeightsNotFound, load_model

    if args.weights is not None and args.random:
        print("error: pass --weights FILE or --random, not both", file=sys.stderr)
        return 2
    if problem := _scan_options_problem(args.model, args.size, args.batch_size, args.device):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.images is not None:
            images, source = image_folder(args.images), str(args.images)
        else:
            images, source = [im for _, im in sample_photos()], SAMPLE_SOURCE
        if not images:
            raise ImageError("no bundled photos are installed here: pass --images DIR")
        loaded = load_model(args.model, pretrained=not args.random, weights=args.weights, image_size=args.size,
                            device=args.device)
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            report = scan(loaded, images, image_source=source, batch_size=args.batch_size)
            written = write_card(report, args.out)
    except WeightsNotFound as err:
        print(f"error: {err}\nFrom the command line: `vitreg scan {args.model} --weights FILE`, or --random to test "
              "the scan on random weights.", file=sys.stderr)
        return 2
    except (UnknownModel, NotAPlainViT, BrokenWeights, ImageError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(json.loads(written["json"].read_text())))
    print(report.verdict, file=sys.stderr if args.json else sys.stdout)
    for path in written.values():
        print(path, file=sys.stderr if args.json else sys.stdout)
    return 0


DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def _scan_options_problem(model: str, size: int | None, batch_size: int, device: str) -> str | None:
    """What is wrong with ``vitreg scan``'s ``--size``, ``--batch-size`` and ``--device`` before anything is
    loaded (None when nothing is): a batch below 1, a device torch does not know or that is not here, a size
    that is not positive or whose attention maps alone would not fit in the device's memory."""
    import re

    import torch

    from vitreg.core.models import get_spec

    if batch_size < 1:
        return f"--batch-size {batch_size}: give at least 1 image per forward pass (default 8)"
    if not re.fullmatch(DEVICE_PATTERN, device):
        return f"--device {device!r}: use cpu, cuda, cuda:N, mps or auto"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {device}: torch sees no CUDA GPU here; use --device cpu (or auto)"
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        return f"--device {device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "--device mps: torch sees no Apple GPU here; use --device cpu (or auto)"
    if size is None:
        return None
    spec = get_spec(model)
    if size <= 0:
        return (f"--size {size}: give a positive side in pixels, a multiple of {spec.patch_size} "
                f"(native {spec.native_resolution})")
    tokens = (size // spec.patch_size) ** 2
    need = 4.0 * batch_size * tokens * tokens  # one float32 attention map per image: a lower bound
    have = _device_memory(device)
    if need > have:
        return (f"--size {size}: {tokens:,} tokens per image; one attention map per image of a batch of {batch_size} "
                f"alone needs {need / 2**30:,.0f} GiB, more than the {have / 2**30:,.0f} GiB of {device}: pass a "
                f"smaller --size (native {spec.native_resolution}) or --batch-size")
    return None


def _device_memory(device: str) -> float:
    """Bytes of memory of ``device``: the GPU's total for cuda, else the machine's physical memory."""
    import os

    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        gpu = torch.device(device if device != "auto" else "cuda")
        return float(torch.cuda.get_device_properties(gpu).total_memory)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


# --- vitreg book, vitreg handout ------------------------------------------------------------------
def _add_book(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "book", help="build a Jupyter Book of the executed notebooks and the report (reads offline)",
        description="Build a Jupyter Book (1.x) of one run's executed notebooks: the real run's (build/notebooks) "
                    "when it exists, else the smoke run's (build/smoke/notebooks), each page labelled with the "
                    "run it shows, and the report as its last chapter. MathJax and every script are served from "
                    "the book's own folder: it reads offline. Needs the book extra (pip install -e '.[book]').")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default build/book; pages in DIR/html)")
    p.add_argument("--run", choices=("auto", "real", "lecture", "smoke"), default="auto",
                   help="which run's notebooks (default auto: real when it exists, else smoke; lecture: make lecture's)")
    p.add_argument("--collect", type=Path, metavar="BASETEMP",
                   help="first gather into build/smoke the smoke runs the notebook tests left under pytest's "
                        "--basetemp BASETEMP, when build/smoke has no executed notebooks")
    p.add_argument("--instructor", action="store_true",
                   help="the instructor's book: solutions shown open (default: folded under a Solution button)")
    return p


def _cmd_book(args: argparse.Namespace) -> int:
    import subprocess

    from vitreg.cli.book import NoExecutedNotebooks, build_book, collect_smoke
    from vitreg.utils.paths import repo_root

    if args.collect and not any((repo_root() / "build" / "smoke" / "notebooks").glob("*.ipynb")):
        print(f"gathered {collect_smoke(args.collect)} executed notebooks from {args.collect}")
    try:
        index = build_book(out=args.out, run=args.run, instructor=args.instructor)
    except (NoExecutedNotebooks, FileNotFoundError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(index)
    return 0


def _add_handout(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "handout", help="write student copies of the notebooks without their solution cells",
        description="Copy notebooks/*.ipynb without the cells tagged `solution` (and without outputs).")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default build/handout)")
    p.add_argument("--profile", default="lecture", choices=("lecture", "smoke", "real"),
                   help="the parameters the copies run with (default lecture: CPU-safe, small pretrained models; "
                        "real: the notebooks' own defaults); each solution leaves an empty answer cell")
    return p


def _cmd_handout(args: argparse.Namespace) -> int:
    from vitreg.cli.handout import make_handout

    for path in make_handout(out=args.out, profile=args.profile):
        print(path)
    return 0


# --- vitreg extract -------------------------------------------------------------------------------
def _add_extract(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "extract", help="fill a notebook's feature cache from its parameters (all GPUs under torchrun)",
        description="Make a notebook's cached feature extractions (05, 06, 09) from its parameters, so the notebook "
                    "then only reads the cache. Under `torchrun --nproc_per_node N -m vitreg extract ...` the ranks "
                    "share the missing chunks (vitreg.utils.distributed). Other notebooks say they have nothing to "
                    "pre-extract.",
        epilog="multi-node: the same torchrun command on every node with --nnodes, --rdzv_backend c10d, "
               "--rdzv_endpoint HOST:PORT, and the cache ($VITREG_CACHE) on storage every node sees. "
               "Exit status: 0 done, 2 bad parameters or notebook.")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK",
                   help="notebook numbers (06), names, or 'all' (every notebook with a cached extraction)")
    p.add_argument("--profile", choices=PROFILES, default="real", help="parameters profile (default real)")
    _add_overrides(p)
    return p


def _cmd_extract(args: argparse.Namespace) -> int:
    from vitreg.experiments.params import ParameterError
    from vitreg.cli.prefill import extract_notebooks
    from vitreg.core.weights import BrokenWeights, WeightsNotFound

    try:
        extract_notebooks(args.notebooks, args.profile, params_file=args.params, sets=args.sets)
    except ParameterError as err:
        print(f"error, nothing was extracted:\n{err}", file=sys.stderr)
        return 2
    except (WeightsNotFound, BrokenWeights) as err:  # what was extracted before stays in the cache
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


# --- vitreg data ----------------------------------------------------------------------------------
def _add_data(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "data", help="list, download, verify or locate the datasets the notebooks read",
        description="Every dataset the notebooks read, from the manifest data/datasets.yaml: its notebooks and "
                    "tables, size, source, licence and state here (present / downloadable / needs you). "
                    "Downloads resume, are checked against published checksums (or file counts where none is "
                    "published) and are moved into $VITREG_DATA (default data/datasets) only when complete.",
        epilog="Exit status: 0 done, 1 a download failed, a set needs you or a check found problems, 2 unknown name.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every dataset with its notebooks, size, source, licence and state here")
    d = actions.add_parser("download", help="fetch, check and arrange datasets into the layout the loaders read")
    d.add_argument("names", nargs="+", metavar="NAME", help="manifest names (voc07 ade20k cub ...)")
    d.add_argument("--force", action="store_true", help="arrange again even when the folder is already here")
    v = actions.add_parser("verify", help="check datasets here against the manifest's counts and checksums")
    v.add_argument("names", nargs="+", metavar="NAME")
    w = actions.add_parser("where", help="the folder each dataset's loader reads, and its state")
    w.add_argument("names", nargs="+", metavar="NAME")
    return p


def _cmd_data(args: argparse.Namespace) -> int:
    from vitreg.data.catalog import UnknownDataset, list_lines
    from vitreg.data import fetch

    try:
        if args.action == "list":
            print("\n".join(list_lines()))
            return 0
        if args.action == "download":
            return fetch.download_many(args.names, force=args.force)
        if args.action == "where":
            print("\n".join(f"{n}: {fetch.where(n)}" for n in args.names))
            return 0
        status = 0
        for name in args.names:
            problems = fetch.verify(name)
            print(f"{name}: ok" if not problems else f"{name}: " + "\n  ".join(["PROBLEMS", *problems]))
            status |= bool(problems)
        return status
    except UnknownDataset as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


#: name -> (add the subcommand's parser, run it). Order is the order of ``vitreg --help``.
SUBCOMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
                             Callable[[argparse.Namespace], int]]] = {
    "run": (_add_run, _cmd_run),
    "estimate": (_add_estimate, _cmd_estimate),
    "weights": (_add_weights, _cmd_weights),
    "report": (_add_report, _cmd_report),
    "strip": (_add_strip, _cmd_strip),
    "scan": (_add_scan, _cmd_scan),
    "book": (_add_book, _cmd_book),
    "handout": (_add_handout, _cmd_handout),
    "extract": (_add_extract, _cmd_extract),
    "data": (_add_data, _cmd_data),
}


def parser() -> argparse.ArgumentParser:
    """The ``vitreg`` argument parser with every subcommand."""
    top = argparse.ArgumentParser(
        prog="vitreg", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EXAMPLES,
        description="Reproduce 'Vision Transformers Need Registers' (Darcet et al., ICLR 2024): run the "
                    "notebooks, fetch weights, build the report. `vitreg COMMAND --help` for each command.")
    top.add_argument("--version", action="version", version=f"vitreg {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add, run) in SUBCOMMANDS.items():
        add(sub).set_defaults(handler=run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vitreg`` console script and of ``python -m vitreg``; returns the exit status.

    The one error boundary of every subcommand: bad input (the project's own errors, an unreadable or
    unwritable file) is one line naming the culprit and what to do, exit 2; Ctrl-C is one line, exit 130;
    anything else is a bug, shown with its traceback and a line saying so, exit 1.
    """
    args = parser().parse_args(argv)
    try:
        problem = (_params_file_problem(getattr(args, "params", None))
                   or _profile_problem(getattr(args, "profile", None)))
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"vitreg {args.command}: interrupted (Ctrl-C); what was finished is kept", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the boundary: a message for bad input, a traceback for a bug
        message = user_error(err)
        if message is None:
            import traceback

            traceback.print_exc()
            print(f"vitreg {args.command}: this is a bug in vitreg, not a problem with your input; please report it "
                  "with the traceback above", file=sys.stderr)
            return 1
        print(f"error: {message}", file=sys.stderr)
        return 2


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error caused by the user's input or machine, or None for a bug.

    Bad input: an exception defined by vitreg itself (unknown model, not a plain ViT, weights that are
    broken or do not match, a bad parameter, an image or report schema error, a busy output folder) and an
    ``OSError`` (a file that is missing, unreadable, read-only or on a full disk), named with its path.
    """
    if isinstance(err, OSError) and not type(err).__module__.startswith("vitreg."):
        what = err.strerror or str(err)
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return (f"{where}: {what}" if where else what) + (
            ": check the path and its permissions (and the free space), or pass another folder")
    if any(cls.__module__.startswith("vitreg.") for cls in type(err).__mro__):
        text = err.args[0] if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str) else str(err)
        return text.strip() or type(err).__name__
    return None


def _profile_problem(profile: str | None) -> str | None:
    """What is wrong with the profile file of ``profile`` (``params/<profile>.yaml``) when it is empty (an empty
    profile would silently run the notebooks' real defaults), or None."""
    from vitreg.utils.paths import repo_root

    if profile in (None, "real"):
        return None
    path = repo_root() / "params" / f"{profile}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # named by the parameter checks
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        return (f"the {profile} profile {path} is empty: restore it (git checkout -- params/{profile}.yaml); "
                "without it the notebooks would run their real defaults")
    return None


def _params_file_problem(path: Path | None) -> str | None:
    """What is wrong with a ``--params`` file that cannot be read as UTF-8 text (its other problems are the
    parameter checks'), or None."""
    if path is None:
        return None
    try:
        path.read_bytes().decode("utf-8")
    except OSError:
        return None  # a missing file is named by the parameter checks
    except UnicodeDecodeError as err:
        return (f"--params {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at position {err.start}): "
                "save it as UTF-8 (a YAML file in the profile format)")
    return None
