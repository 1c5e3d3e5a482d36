"""Parameter counts of faceres's network next to GPEN-512 (71.0 M) and the paper configs.

python bench/params.py
"""

import json

from faceres.archs import CodecPriorNet, GPENGenerator, SFMNet


def millions(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def main():
    rows = {}
    for name, net in [
        ("faceres codec_prior 512 (cm2, narrow1)", CodecPriorNet(512)),
        ("GPEN-BFR-512 (cm2, narrow1)", GPENGenerator(512)),
        ("faceres codec_prior 256 (cm1, narrow0.5)", CodecPriorNet(256, channel_multiplier=1, narrow=0.5)),
        ("GPEN-BFR-256 (cm1, narrow0.5)", GPENGenerator(256, channel_multiplier=1, narrow=0.5)),
        ("faceres shipped 128 (cm1, narrow0.125)", CodecPriorNet(128, style_dim=256, channel_multiplier=1, narrow=0.125)),
        ("SFMNet (96 ch, 9 SFMLMs; poster: 8.1 M)", SFMNet()),
    ]:
        parts = {"total": millions(net)}
        if isinstance(net, CodecPriorNet):
            parts.update(codec=millions(net.codec), generator=millions(net.generator))
        rows[name] = parts
        print(f"{name:45s} " + "  ".join(f"{k} {v:7.2f} M" for k, v in parts.items()))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
