#!/usr/bin/env python3
"""The vision tower of an OpenAI CLIP checkpoint, as safetensors for `deno task pretrain --teacher`.

OpenAI's checkpoints (ViT-B-16.pt, which the CAE v2 README downloads, ViT-L-14.pt, ...) are TorchScript
archives that Deno cannot read. This writes their `visual.*` tensors under OpenAI's own names
(`visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`, `visual.proj`, ...), which
lib/models/clip_load.ts reads as they are, in float32 (the archives hold most weights in float16). The text
tower is left out. A Hugging Face `pytorch_model.bin` of CLIP works too (`vision_model.*` and
`visual_projection.weight` are kept). Needs `pip install torch safetensors` (not the `clip` package).
See docs/clip.md.

    python3 tools/convert_openai_clip.py ViT-B-16.pt clip-vit-b16.safetensors
"""
import sys

import torch
from safetensors.torch import save_file


def main(src: str, dst: str) -> None:
    try:  # as clip.load: a TorchScript archive, else a state_dict saved with torch.save
        state = torch.jit.load(src, map_location="cpu").state_dict()
    except RuntimeError:
        state = torch.load(src, map_location="cpu")
    if "visual.proj" in state:  # OpenAI's names
        keep = lambda k: k.startswith("visual.")
    elif "visual_projection.weight" in state:  # a Hugging Face pytorch_model.bin: its names load too
        keep = lambda k: k.startswith("vision_model.") or k == "visual_projection.weight"
    else:
        sys.exit(f"{src}: neither visual.proj nor visual_projection.weight: not a CLIP ViT (RN50 & co.)")
    # Float tensors only (a Hugging Face file's int64 position_ids buffer is not a weight).
    vision = {k: v.float().contiguous() for k, v in state.items() if keep(k) and v.is_floating_point()}
    save_file(vision, dst, metadata={"converted_from": src})
    print(f"{dst}: {len(vision)} tensors; `deno task pretrain --teacher {dst}` prints the tower's shape")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
