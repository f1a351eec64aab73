"""The demo's transformer part: PP-OCRv4's text recogniser over text-line crops.

The recogniser's last tensor gives, per token of its 1 x 40 grid (one token per 8 input
columns), the probability of each of 6625 characters: the channel of a character is a neuron
that fires where the recogniser reads that character. Its top-k over the crops, cut at each
token's receptive field, shows that character; the montage has one row per character.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maxact.client import types as t
from maxact.client.client import Client
from maxact.client.demo.fetch import RECOGNISER
from maxact.client.montage import stack_rows
from maxact.client.patches_out import montage_of, write_patches
from maxact.common import documents

DATASET = "lines"
CTC_LAYER = "softmax_11.tmp_0"  # per token, the probability of each character
ROWS = (("e", "rf"), ("o", "rf"), ("e", "heatmap"))  # (character, render) per montage row
MONTAGE = "recogniser.png"
TILE = 128


def character_channels(model_path: Path) -> dict[str, int]:
    """Channel of each character: the model's metadata key "character" lists them one per
    line, after the CTC blank (channel 0)."""
    import onnx  # the demo runs the server in-process, so the server extra is installed

    model = onnx.load(str(model_path), load_external_data=False)
    text = next((p.value for p in model.metadata_props if p.key == "character"), "")
    return {c: k + 1 for k, c in reversed(list(enumerate(text.split("\n"))))}


def token_layers(info: t.ModelInfo) -> list[str]:
    """The tensors that are token sequences (the attention blocks and after)."""
    return [
        layer.name
        for layer in info.layers
        if layer.receptive_field is not None and layer.receptive_field.tokens is not None
    ]


def run_recogniser(client: Client, model_path: Path, out_dir: Path, k: int) -> dict[str, Any]:
    """Top-k of a few character channels over the crops: patches, one montage; the summary."""
    info = client.get_model(RECOGNISER.name)
    channels = character_channels(model_path)
    rows, docs = [], []
    for character, render in ROWS:
        channel = channels[character]
        result = client.topk(
            RECOGNISER.name, CTC_LAYER, channel, dataset=DATASET, k=k, render=render
        ).result()
        rel = Path("recogniser") / f"{character}_{render}"
        files = write_patches(result, out_dir / rel)
        rows.append(
            (
                f"{CTC_LAYER} / channel {channel}: '{character}' ({render})",
                montage_of(result, tile=TILE),
            )
        )
        doc = documents.topk_json(result, {r: str(rel / f) for r, f in files.items()})
        docs.append({"character": character, "render": render, **doc})
    stack_rows(rows).save(out_dir / MONTAGE)
    tokens = token_layers(info)
    return {
        "model": info.name,
        "dataset": DATASET,
        "token_layers": len(tokens),
        "grid": _grid(info, CTC_LAYER),
        "montage": MONTAGE,
        "channels": docs,
    }


def _grid(info: t.ModelInfo, layer: str) -> list[int]:
    rf = info.layer(layer).receptive_field
    assert rf is not None and rf.tokens is not None
    return [rf.tokens.height, rf.tokens.width]
