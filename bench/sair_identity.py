"""Does SAIR's reference raise identity? CelebA identities, three photos each: photo 0 degraded is
the input, photo 1 the reference, photo 2 the judge. For each identity: the model's plain
restoration, SAIR with the same person's reference, and SAIR with another person's reference
(the control: the identity term, not the optimisation itself, should make the difference).
Score: cosine between dlib descriptors of the restored face and photo 2, by the fixed-template
chip that SAIR optimises and by dlib's own landmarks chip (`DlibFaces`, dlib's C++ numbers).

    python bench/sair_identity.py [--identities 20] [--steps 50] [--model faceres-v0]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--identities", type=int, default=20)
    ap.add_argument("--first", type=int, default=1000, help="start after the identities drift_roc.py uses")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default="faceres-v0")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/sair_identity.json")
    args = ap.parse_args()
    os.environ.setdefault("FACERES_WEIGHTS_DIR", str(SHARED / "weights"))
    from drift_roc import cosines, crops

    from faceres.checkpoints import load_model
    from faceres.data.degradations import degrade, sample_params
    from faceres.metrics.identity import DlibFaces, face_u8
    from faceres.pipeline.detect import build_detector
    from faceres.pipeline.reference import SAIR, SAIRConfig, default_recognizer
    from faceres.train.options import load_options

    torch.manual_seed(0)
    net, _ = load_model(args.model)
    net = net.float().eval()
    size = net.spec.size
    deg = load_options(ROOT / "options/train_faceres_128_cpu.yml").datasets.val.degradation
    by_id: dict[str, list[Path]] = {}
    for f in sorted((SHARED / "data/celeba-aligned/images").iterdir()):
        by_id.setdefault(f.name.split("_")[0], []).append(f)
    ids = sorted(by_id)[args.first : args.first + args.identities]
    detector = build_detector("retinaface_mobile0.25")
    inputs, refs, judges = (
        [f.astype(np.float32) / 255 for f in crops([by_id[i][k] for i in ids], "ffhq", detector, size)] for k in range(3)
    )
    inputs = [
        np.clip(degrade(a, sample_params(np.random.default_rng([11, n]), deg), deg.blur_kernel_size), 0, 1) for n, a in enumerate(inputs)
    ]

    def tensor(img):
        return torch.from_numpy(img.transpose(2, 0, 1))[None].float() * 2 - 1

    sair = SAIR(net, default_recognizer(), SAIRConfig(steps=args.steps))
    outputs = {"input": inputs, "restored": [], "sair_same_person": [], "sair_other_person": []}
    t0 = time.perf_counter()
    for n, lq in enumerate(inputs):
        with torch.no_grad():
            outputs["restored"].append(net.restore(tensor(lq)))
        for key, ref in (("sair_same_person", refs[n]), ("sair_other_person", refs[(n + 1) % len(ids)])):
            outputs[key].append(sair.restore(tensor(lq), tensor(ref))[0])
        print(f"{n + 1}/{len(ids)} {time.perf_counter() - t0:.0f} s", flush=True)
    for key in ("restored", "sair_same_person", "sair_other_person"):
        outputs[key] = [((t[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1) for t in outputs[key]]

    template, chips = sair.embed.recognizer, DlibFaces()

    def scores(faces):
        with torch.no_grad():
            t = template(torch.cat([tensor(f) for f in faces])).double().numpy()
        c = chips.embeddings([face_u8(f) for f in faces])
        return t, c

    judge_t, judge_c = scores(judges)
    table = {}
    for key, faces in outputs.items():
        t, c = scores(faces)
        st, sc = cosines(t, judge_t), cosines(c, judge_c)
        table[key] = {
            "template_chip": round(float(st.mean()), 4),
            "template_chip_sem": round(float(st.std() / np.sqrt(len(st))), 4),
            "dlib_chip": round(float(sc.mean()), 4),
            "dlib_chip_sem": round(float(sc.std() / np.sqrt(len(sc))), 4),
            "per_identity_template": np.round(st, 4).tolist(),
        }
    same, plain = np.array(table["sair_same_person"]["per_identity_template"]), np.array(table["restored"]["per_identity_template"])
    result = {
        "model": args.model,
        "size": size,
        "identities": len(ids),
        "sair_steps": args.steps,
        "seconds_per_sair_face": round((time.perf_counter() - t0) / (2 * len(ids)), 2),
        "raised_over_plain": int((same > plain).sum()),
        "scores_vs_third_photo": table,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "scores_vs_third_photo"}))
    for key, row in table.items():
        print(
            f"{key:20s} template {row['template_chip']:.4f} ± {row['template_chip_sem']:.4f}   "
            f"dlib chip {row['dlib_chip']:.4f} ± {row['dlib_chip_sem']:.4f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
