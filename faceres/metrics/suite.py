"""The metrics an evaluation can run, each loaded from its own file through the weights registry.
A metric whose file (or package) is absent is left out with one line naming the file and where to
get it; nothing is downloaded here (`faceres weights download NAME` does that)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..weights import REGISTRY, WeightsError, resolve, search_dirs
from .fid import FIDError, FIDStats, InceptionFeatures, load_stats, small_sample_note
from .lpips import LPIPS, TRUNKS, LPIPSError


@dataclass
class Suite:
    niqe_params: Path | None = None
    lpips: LPIPS | None = None
    inception: InceptionFeatures | None = None
    fid_ref: FIDStats | None = None
    fid_ref_label: str = ""
    ifqa: object | None = None  # callable: float RGB [0, 1] -> score
    faces: object | None = None  # DlibFaces: identity (dlib) and LMD
    notes: list[str] = field(default_factory=list)  # one line per metric left out, and sample-size warnings

    def ran(self, full_reference: bool) -> list[str]:
        names = ["PSNR", "SSIM"] if full_reference else []
        names += [f"LPIPS ({self.lpips.net_name})"] if self.lpips and full_reference else []
        names += [f"FID vs {self.fid_ref_label}"] if self.fid_ref is not None else []
        names += ["NIQE"] if self.niqe_params else []
        names += ["IFQA"] if self.ifqa else []
        names += ["identity (dlib)", "LMD"] if self.faces and full_reference else []
        return names


def weights_file(name: str, label: str, notes: list[str]) -> Path | None:
    """The registry file for `name`, or None with one line in `notes` saying what is missing and where to get it."""
    spec = REGISTRY[name]
    if not any((d / spec.filename).is_file() for d in search_dirs()):
        source = f"{spec.url} (`faceres weights download {name}`)" if spec.url else (spec.note or "see the README")
        notes.append(f"{label} left out: {spec.filename} not found; get it from {source} into $FACERES_WEIGHTS_DIR")
        return None
    try:
        return resolve(name, allow_download=False)
    except WeightsError as err:
        notes.append(f"{label} left out: {err}")
        return None


def _fid_reference(suite: Suite, fid_ref: Path | None, gt: Path | None, progress: bool) -> None:
    from .evaluate import folder_stats

    source = fid_ref or gt
    if source.is_dir():
        suite.fid_ref = folder_stats(source, suite.inception, progress)
        suite.fid_ref_label = f"{'GT folder' if fid_ref is None else 'folder'} {source} ({suite.fid_ref.n} images)"
    else:
        suite.fid_ref = load_stats(source)
        suite.fid_ref_label = f"{source} ({suite.fid_ref.n or 'unknown number of'} images)"
    warning = small_sample_note(suite.fid_ref.n, f"reference {source}")
    if warning:
        suite.notes.append(warning)


def _load_fid(suite: Suite, fid_ref: Path | None, gt: Path | None, device, progress: bool) -> None:
    if fid_ref is None and gt is None:
        suite.notes.append("FID left out: no reference (give --fid-ref DIR|FILE, or --gt)")
        return
    path = weights_file("inception-fid", "FID", suite.notes)
    if path is None:
        return
    try:
        suite.inception = InceptionFeatures(path, device)
        _fid_reference(suite, fid_ref, gt, progress)
    except FIDError as err:
        suite.inception, suite.fid_ref = None, None
        suite.notes.append(f"FID left out: {err}")


def _load_lpips(suite: Suite, net: str, device) -> None:
    path = weights_file(TRUNKS[net][0], f"LPIPS ({net})", suite.notes)
    if path is not None:
        try:
            suite.lpips = LPIPS(net, path, device)
        except LPIPSError as err:
            suite.notes.append(f"LPIPS ({net}) left out: {err}")


def _load_ifqa(suite: Suite, device) -> None:
    from .ifqa import IFQA, IFQAError

    path = weights_file("ifqa", "IFQA", suite.notes)
    if path is not None:
        try:
            suite.ifqa = IFQA(path, device)
        except IFQAError as err:
            suite.notes.append(f"IFQA left out: {err}")


def _load_identity(suite: Suite) -> None:
    from .identity import DlibFaces

    try:
        suite.faces = DlibFaces()
    except (WeightsError, ImportError, RuntimeError) as err:
        suite.notes.append(f"identity (dlib) and LMD left out: {err}")


def load_suite(
    gt: Path | None, lpips_net: str | None = "alex", fid_ref: Path | None = None, identity: bool = True, device="cpu", progress: bool = True
) -> Suite:
    """Full-reference metrics only when `gt` is given; FID against `fid_ref` (folder or statistics file), else the GT folder."""
    suite = Suite()
    suite.niqe_params = weights_file("niqe-pris", "NIQE", suite.notes)
    if gt is not None and lpips_net:
        _load_lpips(suite, lpips_net, device)
    _load_fid(suite, fid_ref, gt, device, progress)
    _load_ifqa(suite, device)
    if gt is not None and identity:
        _load_identity(suite)
    return suite
