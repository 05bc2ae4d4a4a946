"""Extract foundation-model feature maps with timm and write loffdata shards.

Examples::

    loffdata-shard                             # embedded "shapes" demo -> out/demo/{train,val}
    loffdata-shard --input data/imagenet --out s3://bucket/in1k-dinov2 \\
        --model vit_base_patch14_dinov2.lvd142m --pretrained --img_size 518 --pool 2
    loffdata-shard --config extract.yaml --out /data/feats   # a YAML or JSON file of flags
    torchrun --nproc_per_node 8 tools/shard.py --input data.csv --out /data/feats

``loffdata-shard`` and ``python tools/shard.py`` are the same command. Every flag is a field
of ``loffdata.extract.extractconfig.ExtractConfig`` (same name, default and doc); all of them are
checked before any work starts (the model name against the installed timm too).
Re-running the same command resumes; see docs/extract.md.
"""

from __future__ import annotations

import os

from loffdata.cli import parse as cliutil
from loffdata.extract.extractconfig import ExtractConfig, check_paths

__all__ = ["check_model", "console", "main"]

OPTIONS = cliutil.options_from_dataclass(ExtractConfig)


def check_model(name: str) -> None:
    """Refuses a model name the installed timm does not know, naming the closest ones.

    Hub references (``hf-hub:org/repo``) are left to timm. Without timm, nothing is checked
    here (extraction then says that timm is needed).
    """
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        return
    try:
        import timm
    except ImportError:
        return
    if timm.is_model(name.split(".", 1)[0]):
        return
    import difflib

    close = difflib.get_close_matches(name.split(".", 1)[0], timm.list_models(), n=3, cutoff=0.6)
    hint = (
        f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models('*pattern*'))"
    )
    raise cliutil.CliError(
        f"--model {name!r}: not a model of the installed timm {timm.__version__}{hint}"
    )


def main(argv: list[str] | None = None) -> None:
    """Checks every flag, then extracts each split of the input into ``<out>/<split>``."""
    config = cliutil.parse_config(ExtractConfig, OPTIONS, argv, prog="loffdata-shard", doc=__doc__)
    if config is None:
        return
    check_paths(config)
    check_model(config.model)
    from loffdata.extract.pipeline import extract  # heavy (torch): only after the checks

    manifests = extract(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for split, m in manifests.items():
        print(
            f"{split}: {m.num_samples} samples, {len(m.shards)} shards, features "
            f"{list(m.features.shape)} "
            f"{m.features.dtype}, skipped {len(m.skipped)} -> {config.out.rstrip('/')}/{split}"
        )


def console() -> None:
    """The ``loffdata-shard`` console script."""
    cliutil.run(main)
