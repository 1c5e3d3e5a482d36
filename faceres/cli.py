"""The `faceres` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .allocator import tune_allocator


def fail(message: str, code: int = 2) -> int:
    print(f"faceres: error: {message}", file=sys.stderr)
    return code


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' with 0 <= i < n; 'auto' reads RANK/WORLD_SIZE (torchrun)."""
    if text == "auto":
        text = f"{os.environ.get('RANK', 0)}/{os.environ.get('WORLD_SIZE', 1)}"  # RANK/WORLD_SIZE checked as i/n
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects i/n, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text} (RANK/WORLD_SIZE for auto): need 0 <= i < n")
    return i, n


FLIP_CHOICES = {"auto": None, "on": True, "off": False}


def add_network_arguments(p):
    p.add_argument(
        "--flip-ensemble",
        default="auto",
        choices=list(FLIP_CHOICES),
        help="average each face with its restored mirror image (2x network time); auto: the model's default",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="network precision; auto: bf16 where the hardware computes it natively",
    )


def add_restore_parser(sub):
    p = sub.add_parser("restore", help="restore faces in photos (files, folders or globs)")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default=None, help="registry name or checkpoint path (default: faceres's shipped model)")
    p.add_argument("--detector", default="auto", help="auto | retinaface_resnet50 | retinaface_mobile0.25 | yunet | dlib")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("-s", "--upscale", type=float, default=2, help="output scale of the whole photo (default 2)")
    p.add_argument(
        "--fidelity",
        type=float,
        default=1.0,
        help="0..1, 1 = most faithful (default). Lower: a model with an adversarial stage blends it in (sharper); "
        "the StyleGAN2-prior models let less of the input's features reach the prior",
    )
    add_network_arguments(p)
    p.add_argument("--aligned", action="store_true", help="inputs are already aligned face crops")
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    p.add_argument("--min-eye-distance", type=float, default=5.0, help="ignore faces smaller than this (pixels between eyes)")
    p.add_argument("--batch-size", type=int, default=4, help="faces per network call")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "webp", "tif"], help="format of restored_imgs")
    p.add_argument("--suffix", default="", help="suffix added to restored file names")
    p.add_argument("--overwrite", action="store_true", help="redo images whose output already exists")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="i/n", help="process every n-th file from i (0-based)")
    p.add_argument("--no-faces", action="store_true", help="write restored_imgs only (no per-face outputs)")
    p.add_argument("--max-pixels", type=float, default=80e6, help="reject larger images (default 80 MP)")
    p.add_argument("--max-output-pixels", type=float, default=100e6, help="reject photos whose result would be larger (default 100 MP)")
    p.add_argument("--bg-upsampler", default="none", choices=["none", "realesrgan"], help="upsample the background (Real-ESRGAN x2)")
    p.add_argument(
        "--on-drift",
        default="flag",
        choices=["off", "flag", "fallback"],
        help="identity-drift guard: flag faces whose identity moved (report), or fall back to fidelity 1 / the input face",
    )
    p.add_argument("--drift-threshold", type=float, default=None, help="similarity below which a face counts as drifted")
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="photo of the same person: restore faces by SAIR toward its identity (dlib's face ResNet)",
    )
    p.add_argument("--reference-steps", type=int, default=400, help="SAIR optimisation steps")
    p.add_argument(
        "--parse",
        default="auto",
        choices=["auto", "on", "off"],
        help="face-parsing paste mask: auto = ParseNet if its weights are on disk, else faceres's own parser (weights/)",
    )
    p.set_defaults(func=cmd_restore)


def cmd_restore(args) -> int:
    from .restore_cmd import cmd_restore as run

    return run(args)


def add_weights_parser(sub):
    p = sub.add_parser("weights", help="list, download or verify model weights")
    wsub = p.add_subparsers(dest="action", required=True)
    wsub.add_parser("list", help="registry entries and where each file was found")
    d = wsub.add_parser("download", help="download a registry entry into the cache")
    d.add_argument("name")
    v = wsub.add_parser("verify", help="check size and sha256 of files found locally")
    v.add_argument("names", nargs="*")
    p.set_defaults(func=cmd_weights)


def cmd_weights(args) -> int:
    from .weights import REGISTRY, WeightsError, download, find_local, resolve

    if args.action == "list":
        for spec in REGISTRY.values():
            try:
                where = str(resolve(spec.name, allow_download=False))
            except WeightsError:
                where = "not found"
            size = f"{spec.size / 1e6:.1f} MB" if spec.size else "?"
            print(f"{spec.name:26s} {spec.kind:13s} {size:>9s}  {spec.licence}  [{where}]")
        return 0
    if args.action == "download":
        if args.name not in REGISTRY:
            return fail(f"unknown weights {args.name!r}")
        try:
            present = find_local(REGISTRY[args.name])
            print(f"{present}: already present (size and sha256 checked where registered)" if present else download(REGISTRY[args.name]))
        except WeightsError as err:
            return fail(str(err))
        return 0
    bad = 0
    for name in args.names or list(REGISTRY):
        try:
            print(f"ok       {name}: {resolve(name, allow_download=False)}")
        except WeightsError as err:
            missing = "not found" in str(err)
            bad += not missing or bool(args.names)
            print(f"{'missing' if missing else 'BAD':8s} {name}: {err}")
    return 1 if bad else 0


def add_train_parser(sub):
    p = sub.add_parser("train", help="train a model from a BasicSR-style options YAML")
    p.add_argument("-opt", "--options", required=True, type=Path, help="options file, e.g. options/train_faceres_512.yml")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", default=None, help="checkpoint path or 'auto' (overrides path.resume)")
    p.add_argument(
        "--max-iters",
        type=int,
        default=None,
        help="stop after this many more iterations, counted from where it resumes (schedule unchanged)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an option, e.g. --set train.batch_size=8 (repeatable)",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .train.options import OptionsError, load_options
    from .train.trainer import train
    from .weights import WeightsError

    try:
        overrides = list(args.overrides) + ([f"path.resume={args.resume}"] if args.resume else [])
        opts = load_options(args.options, overrides)
        train(opts, args.device, args.max_iters)
    except (OptionsError, WeightsError, FileNotFoundError) as err:
        return fail(f"{args.options}: {err}")
    return 0


def add_train_parser_parser(sub):
    p = sub.add_parser("train-parser", help="train the face parser behind --parse auto (options/train_face_parser.yml)")
    p.add_argument("-opt", "--options", required=True, type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override an option")
    p.set_defaults(func=cmd_train_parser)


def cmd_train_parser(args) -> int:
    from .train.options import OptionsError
    from .train.parser import train_from_file

    try:
        train_from_file(args.options, args.overrides)
    except (OptionsError, FileNotFoundError, ValueError) as err:
        return fail(f"{args.options}: {err}")
    return 0


def add_landmarks_parser(sub):
    p = sub.add_parser("prepare-landmarks", help="68-point landmarks (dlib) for a folder of aligned faces")
    p.add_argument("folder", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None, help="JSON file (default: FOLDER/landmarks68.json)")
    p.set_defaults(func=cmd_landmarks)


def cmd_landmarks(args) -> int:
    from .data.components import prepare_landmarks
    from .weights import WeightsError

    try:
        print(prepare_landmarks(args.folder, args.output))
    except (WeightsError, FileNotFoundError) as err:
        return fail(str(err))
    return 0


def add_testset_parser(sub):
    p = sub.add_parser("make-testset", help="deterministic LQ/HQ pairs with the training degradation")
    p.add_argument("hq_dir", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--degradation", default="paper", choices=["paper", "mild", "x4", "x8"])
    p.add_argument("--options", type=Path, help="take the degradation from this training options file's val (or train) set")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--subset", default=":", help="python slice over the sorted files, e.g. 0:50")
    p.add_argument("--center-crop", action="store_true", help="central square first (CelebA aligned 178x218)")
    p.set_defaults(func=cmd_testset)


def parse_slice(text: str) -> tuple[int | None, int | None]:
    start, _, stop = text.partition(":")
    return (int(start) if start else None, int(stop) if stop else None)


def cmd_testset(args) -> int:
    from .data.testset import make_testset

    try:
        degradation = args.degradation
        if args.options:
            from .train.options import load_options

            sets = load_options(args.options).datasets
            degradation = (sets.val or sets.train).degradation
        out = make_testset(args.hq_dir, args.output, args.seed, degradation, args.size, parse_slice(args.subset), args.center_crop)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(out)
    return 0


def restore_folder(
    model: str, lq: Path, out: Path, device: str = "auto", fidelity: float = 1.0, flip_ensemble: bool | None = None, precision: str = "auto"
) -> Path:
    """Run a model on aligned LQ faces; outputs at the LQ images' size."""
    from .files import write_atomic
    from .pipeline.images import Photo, encode_image, load_photo
    from .pipeline.options import RestoreOptions
    from .pipeline.restorer import FaceRestorer

    restorer = FaceRestorer(model, device=device, precision=precision)
    options = RestoreOptions(aligned=True, upscale=1, fidelity=fidelity, flip_ensemble=flip_ensemble)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in lq.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        result = restorer.restore(load_photo(path), options)
        write_atomic(out / (path.stem + ".png"), encode_image(Photo(result.image), "png"))
    return out


def add_evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="metric table for a model or a folder of restored faces")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registry name or checkpoint: restores --lq first")
    src.add_argument("--restored", type=Path, help="folder of restored faces")
    p.add_argument("--lq", type=Path, help="degraded inputs, scored as 'input' too (without --gt: no-reference metrics only)")
    p.add_argument("--gt", type=Path, help="ground truth (same file stems)")
    p.add_argument("--lpips", default="alex", choices=["alex", "vgg", "off"], help="LPIPS trunk (needs its torchvision file)")
    p.add_argument("--fid-ref", type=Path, help="FID reference: a folder or a `faceres fid-stats` .npz (default: the --gt folder)")
    p.add_argument("-o", "--output", type=Path, default=Path("results/evaluate"))
    p.add_argument("--no-identity", action="store_true", help="skip identity (dlib) and LMD")
    p.add_argument("--fidelity", type=float, default=1.0)
    add_network_arguments(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--plot", action="store_true", help="distributions figure and a worst/best contact sheet")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from .devices import pick_device
    from .metrics.evaluate import check_inputs, plot, score_folder, write_reports
    from .metrics.fid import FIDError
    from .metrics.suite import load_suite
    from .weights import WeightsError

    if args.model and not args.lq:
        return fail("--model needs --lq")
    try:
        check_inputs(args.restored, args.lq, args.gt)
        suite = load_suite(
            args.gt, None if args.lpips == "off" else args.lpips, args.fid_ref, not args.no_identity, pick_device(args.device)
        )
        for note in suite.notes:
            print(f"faceres: {note}", file=sys.stderr)
        restored = args.restored
        if args.model:
            restored = restore_folder(
                args.model, args.lq, args.output / "restored", args.device, args.fidelity, FLIP_CHOICES[args.flip_ensemble], args.precision
            )
        folders = ({"input": args.lq} if args.lq else {}) | {args.model or str(args.restored): restored}
        scored = {name: score_folder(folder, args.gt, suite) for name, folder in folders.items()}
        results = {name: rows for name, (rows, _) in scored.items()}
        means = write_reports(
            results, args.output, {name: totals for name, (_, totals) in scored.items()}, suite.ran(args.gt is not None), suite.notes
        )
        if args.plot:
            plot(results, restored, args.lq, args.gt, args.output)
    except (WeightsError, FIDError, FileNotFoundError, ValueError) as err:
        return fail(str(err), 1)
    print((args.output / "metrics.md").read_text())
    return 0 if means else 1


def add_fid_stats_parser(sub):
    p = sub.add_parser("fid-stats", help="FID statistics (mu, sigma, n) of a folder, for `evaluate --fid-ref`")
    p.add_argument("folder", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help=".npz file")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_fid_stats)


def cmd_fid_stats(args) -> int:
    from .devices import pick_device
    from .metrics.evaluate import folder_stats
    from .metrics.fid import FIDError, InceptionFeatures, save_stats, small_sample_note
    from .weights import WeightsError, resolve

    try:
        stats = folder_stats(args.folder, InceptionFeatures(resolve("inception-fid", allow_download=False), pick_device(args.device)))
        save_stats(args.output, stats)
    except (WeightsError, FIDError, FileNotFoundError) as err:
        return fail(str(err))
    warning = small_sample_note(stats.n, f"statistics {args.output}")
    if warning:
        print(f"faceres: warning: {warning}", file=sys.stderr)
    print(f"{args.output}: {stats.n} images, {stats.mu.shape[0]}-d features")
    return 0


def add_export_parser(sub):
    p = sub.add_parser("export", help="write a model (training export or checkpoint) as fp16 safetensors for release")
    p.add_argument("source", type=Path, help="net_g_ema_*.safetensors from a training run")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--fp32", action="store_true", help="keep float32")
    p.add_argument(
        "--perceptual",
        type=Path,
        help="the adversarial stage's export of the same architecture: write both as one network whose "
        "fidelity dial blends their weights (1 = SOURCE, 0 = this)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from .checkpoints import interpolated_release, is_safetensors, load_model, read_metadata, save_model
    from .weights import WeightsError

    try:
        model, config = load_model(args.source)
        extra = {k: v for k, v in read_metadata(args.source).items() if k != "arch"} if is_safetensors(args.source) else {}
        if args.perceptual:
            model, config = interpolated_release(model, config, args.perceptual)
            if is_safetensors(args.perceptual):
                extra["perceptual_iter"] = read_metadata(args.perceptual).get("iter")
        save_model(model, args.output, config, half=not args.fp32, extra=extra)
    except WeightsError as err:
        return fail(str(err))
    print(f"{args.output}: {args.output.stat().st_size / 1e6:.1f} MB, {config}")
    return 0


def cmd_app(app_args: list[str]) -> int:
    from .webapp import main as app_main

    app_main(app_args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceres", description="Restore faces in old and degraded photographs.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_restore_parser(sub)
    add_weights_parser(sub)
    add_train_parser(sub)
    add_train_parser_parser(sub)
    add_landmarks_parser(sub)
    add_testset_parser(sub)
    add_evaluate_parser(sub)
    add_fid_stats_parser(sub)
    add_export_parser(sub)
    sub.add_parser("app", help="start the web demo (needs the app extra); options as `python app.py --help`", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:  # every later argument is the app's (argparse.REMAINDER in a subparser drops options)
        return cmd_app(argv[1:])  # the app tunes the allocator itself (also when started as app.py)
    tune_allocator()  # before torch allocates: 1.3-1.4x on network passes (bench/README.md)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
