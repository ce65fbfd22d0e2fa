"""Encoders of the field: torchvision and timm models, the pathology presets, hub weights with
their revision, and the failures of a hub download (one line, never the token)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.helpers import Demo, make_demo
from tuner.data import build_index
from tuner.errors import DataError, StoreError
from tuner.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESET_NAMES,
    Encoder,
    ExtractOptions,
    FeatureStore,
    PatchImages,
    WeightsSpec,
    build_backbone,
    extract_features,
    presets,
    resolve_encoder,
)
from tuner.features._backbone import Backbone, _probe, _skeleton

TOKEN = "hf_FAKEtokenThatMustNeverShow0123456789"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FAST = ExtractOptions(weights="random", device="cpu", batch_size=32, progress=False)


def options(**changes: object) -> ExtractOptions:
    return ExtractOptions(**{**FAST.__dict__, **changes})


def store_backbone_matches(store: FeatureStore, demo: Demo, backbone: Backbone) -> None:
    """The store's rows 0 and 5 are the backbone's features of those patches."""
    size = store.manifest["image_size"]
    images = PatchImages(demo.patches, [store.rows[0].path, store.rows[5].path], size, 1, 0)
    batch = torch.stack([images[0][0], images[1][0]]).float() / 255
    mean = torch.tensor(store.manifest["normalisation"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(store.manifest["normalisation"]["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = backbone((batch - mean) / std)
    got = torch.from_numpy(store.features[[0, 5], 0].astype(np.float32))
    torch.testing.assert_close(got, expected, atol=3e-3, rtol=3e-3)


def fake_hub_repo(cache: Path, repo: str, files: dict[str, object], commit: str = COMMIT) -> None:
    """A repository in the layout of the Hugging Face cache, at ``commit`` on main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        if name.endswith(".safetensors"):
            assert isinstance(content, dict)
            save_file({k: v.contiguous() for k, v in content.items()}, snapshot / name)
        else:
            (snapshot / name).write_text(json.dumps(content))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub whose cache is this test's own; a fake token in the environment."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return cache


def assert_token_absent(folder: Path, *texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# -- presets -------------------------------------------------------------------------------

# From the model cards: parameters, feature width, register tokens, normalisation.
CARDS = {
    "uni": (303e6, 1024, 0, IMAGENET_MEAN, IMAGENET_STD),
    "uni2-h": (681e6, 1536, 8, IMAGENET_MEAN, IMAGENET_STD),
    "virchow2": (632e6, 2560, 4, IMAGENET_MEAN, IMAGENET_STD),
    "h-optimus-0": (
        1.1e9,
        1536,
        4,
        (0.707223, 0.578729, 0.703617),
        (0.211883, 0.230117, 0.177517),
    ),
}


@pytest.mark.parametrize("name", list(CARDS))
def test_presets_build_the_published_architectures(name: str) -> None:
    params, dim, registers, mean, std = CARDS[name]
    encoder = resolve_encoder(name)
    assert (encoder.library, encoder.input_size, encoder.mean, encoder.std) == (
        "timm",
        224,
        mean,
        std,
    )
    skeleton = _skeleton(encoder)  # the architecture without memory: no weights, no download
    assert skeleton is not None
    assert sum(p.numel() for p in skeleton.parameters()) == pytest.approx(params, rel=0.04)
    assert skeleton.num_prefix_tokens == 1 + registers
    assert _probe(Backbone(skeleton, encoder, {}), 224) == dim
    described = json.loads(json.dumps(Backbone(skeleton, encoder, {}).describe()))
    assert described["model"] == encoder.model
    assert described["arguments"]["init_values"] == 1e-5
    swiglu = isinstance(skeleton.blocks[0].mlp, timm.layers.mlp.GluMlp)
    assert swiglu == (name != "uni")  # UNI2-h, Virchow2 and H-optimus-0 use SwiGLU


def test_every_preset_has_a_name() -> None:
    assert tuple(presets()) == PRESET_NAMES
    assert all(e.name == n for n, e in presets().items())
    assert resolve_encoder("uni@abc123").revision == "abc123"


def test_cls_plus_mean_pooling_is_the_class_token_and_the_mean_of_patch_tokens() -> None:
    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
            "reg_tokens": 4, "num_classes": 0, "fc_norm": False}  # fmt: skip
    encoder = Encoder("tiny", "timm", "vit_tiny_patch16_224", {**args, "global_pool": ""},
                      input_size=32, pooling="cls+mean")  # fmt: skip
    backbone = build_backbone(WeightsSpec("random", seed=3), encoder)
    assert backbone.dim == 64
    token = timm.create_model("vit_tiny_patch16_224", **args, global_pool="token").eval()
    average = timm.create_model("vit_tiny_patch16_224", **args, global_pool="avg").eval()
    token.load_state_dict(backbone.model.state_dict())
    average.load_state_dict(backbone.model.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():  # timm's own poolings: its "avg" leaves the registers out
        torch.testing.assert_close(backbone(x), torch.cat([token(x), average(x)], dim=1))


def test_a_weights_file_that_does_not_fit_a_preset_is_refused_before_building(
    tmp_path: Path,
) -> None:
    resnet = timm.create_model("resnet18", num_classes=0)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    spec = WeightsSpec.parse(str(tmp_path / "resnet18.pth"), encoder=resolve_encoder("uni"))
    with pytest.raises(StoreError, match=r"does not fit uni \(vit_large_patch16_224\): \d+ of"):
        build_backbone(spec, resolve_encoder("uni"))


# -- timm and torchvision models with random weights ----------------------------------------


@pytest.mark.parametrize(
    ("backbone", "size", "dim", "mean", "pooling"),
    [
        ("timm:resnet18", 32, 512, IMAGENET_MEAN, "avg"),
        ("timm:vit_tiny_patch16_224", 32, 192, (0.5, 0.5, 0.5), "token"),
        ("resnet18", None, 512, IMAGENET_MEAN, "model"),
    ],
)
def test_other_encoders_fill_a_store(
    backbone: str,
    size: int | None,
    dim: int,
    mean: tuple[float, ...],
    pooling: str,
    demo: Demo,
    tmp_path: Path,
) -> None:
    store = extract_features(
        demo.patches, demo.labels, tmp_path / "s", options(backbone=backbone, image_size=size)
    )
    manifest = store.manifest
    assert (store.dim, manifest["backbone"], manifest["image_size"]) == (dim, backbone, 32)
    assert manifest["weights"] == {"kind": "random", "seed": 0}
    assert manifest["normalisation"]["mean"] == list(mean)
    assert manifest["encoder"]["pooling"] == pooling
    encoder = resolve_encoder(backbone)
    store_backbone_matches(
        store, demo, build_backbone(WeightsSpec("random", seed=0), encoder, image_size=32)
    )
    if backbone == "timm:vit_tiny_patch16_224":  # a fixed-size ViT is built for 32 px images
        assert manifest["encoder"]["arguments"] == {"num_classes": 0, "img_size": 32}


def test_timm_weights_from_a_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    full = timm.create_model("resnet18")  # with its classifier, as timm saves it
    torch.save({"state_dict": full.state_dict()}, tmp_path / "r18.pth")
    save_file(full.state_dict(), tmp_path / "r18.safetensors")
    encoder = resolve_encoder("timm:resnet18")
    x = torch.randn(2, 3, 32, 32)
    full.reset_classifier(0)
    with torch.inference_mode():
        expected = full.eval()(x)
        for name in ("r18.pth", "r18.safetensors"):
            spec = WeightsSpec.parse(str(tmp_path / name), encoder=encoder)
            torch.testing.assert_close(build_backbone(spec, encoder, image_size=32)(x), expected)


def test_a_fixed_size_vit_takes_its_checkpoint_at_another_size(tmp_path: Path) -> None:
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), tmp_path / "vit.pth")
    encoder = resolve_encoder("timm:vit_tiny_patch16_224")
    spec = WeightsSpec.parse(str(tmp_path / "vit.pth"), encoder=encoder)
    backbone = build_backbone(spec, encoder, image_size=32)
    reference = timm.create_model(  # timm's own loading, position embeddings resampled
        "vit_tiny_patch16_224", img_size=32, num_classes=0, pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "vit.pth")},
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(backbone(x), reference(x))


# -- the hub --------------------------------------------------------------------------------


def test_hub_weights_come_with_their_revision(hub_cache: Path, demo: Demo, tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = timm.create_model("resnet18")
    fake_hub_repo(hub_cache, "timm/resnet18.a1_in1k", {"model.safetensors": source.state_dict()})
    out = tmp_path / "s"
    store = extract_features(
        demo.patches, demo.labels, out,
        options(backbone="timm:resnet18", weights="pretrained", image_size=32),
    )  # fmt: skip
    assert store.manifest["weights"] == {"kind": "pretrained"}
    assert store.manifest["encoder"]["hub"] == {
        "repo": "timm/resnet18.a1_in1k",
        "revision": COMMIT,
        "file": "model.safetensors",
    }
    source.reset_classifier(0)
    store_backbone_matches(
        store, demo, Backbone(source.eval(), resolve_encoder("timm:resnet18"), {})
    )
    assert_token_absent(out)


def test_a_resume_that_would_load_another_hub_revision_starts_over(
    hub_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_demo = make_demo(tmp_path / "demo", cases=6)
    repo = "timm/resnet18.a1_in1k"
    first, second = timm.create_model("resnet18"), timm.create_model("resnet18")
    fake_hub_repo(hub_cache, repo, {"model.safetensors": first.state_dict()})
    rows = build_index(fresh_demo.patches, fresh_demo.labels).patches
    victim = fresh_demo.patches / rows[-1].path  # unreadable: the first run stops near the end
    intact = victim.read_bytes()
    victim.write_bytes(intact[:60])
    out = tmp_path / "s"
    asked = options(backbone="timm:resnet18", weights="pretrained", image_size=32, batch_size=8)
    with pytest.raises(DataError, match="cannot be read"):
        extract_features(fresh_demo.patches, fresh_demo.labels, out, asked)
    state = json.loads((tmp_path / "s.partial" / "state.json").read_text())
    assert state["done_rows"] > 0
    victim.write_bytes(intact)
    other = "f" * 40  # the hub's main moves on to other weights
    fake_hub_repo(hub_cache, repo, {"model.safetensors": second.state_dict()}, commit=other)
    caplog.set_level(logging.INFO, logger="tuner")
    store = extract_features(fresh_demo.patches, fresh_demo.labels, out, asked)
    assert "discarding an unfinished extraction made with other settings" in caplog.text
    assert store.manifest["encoder"]["hub"]["revision"] == other
    second.reset_classifier(0)
    encoder = resolve_encoder("timm:resnet18")
    store_backbone_matches(store, fresh_demo, Backbone(second.eval(), encoder, {}))


def test_a_hub_model_takes_its_architecture_and_input_from_its_config(
    hub_cache: Path, demo: Demo, tmp_path: Path
) -> None:
    args = {"img_size": 48, "patch_size": 16, "embed_dim": 48, "depth": 1, "num_heads": 2}
    torch.manual_seed(4)
    source = timm.create_model("vit_tiny_patch16_224", **args, num_classes=0)
    config = {
        "architecture": "vit_tiny_patch16_224", "num_classes": 0, "model_args": args,
        "pretrained_cfg": {"input_size": [3, 48, 48], "fixed_input_size": True,
                           "mean": [0.6, 0.5, 0.4], "std": [0.2, 0.25, 0.3]},
    }  # fmt: skip
    files = {"config.json": config, "model.safetensors": source.state_dict()}
    fake_hub_repo(hub_cache, "lab/tiny-path", files)
    backbone = f"timm:hf-hub:lab/tiny-path@{COMMIT}"
    store = extract_features(
        demo.patches, demo.labels, tmp_path / "s", options(backbone=backbone, weights="pretrained")
    )
    manifest = store.manifest
    assert (store.dim, manifest["image_size"]) == (48, 48)
    assert manifest["normalisation"] == {"mean": [0.6, 0.5, 0.4], "std": [0.2, 0.25, 0.3]}
    assert manifest["encoder"]["config"] == {"repo": "lab/tiny-path", "revision": COMMIT}
    assert manifest["encoder"]["hub"]["revision"] == COMMIT
    store_backbone_matches(store, demo, Backbone(source.eval(), resolve_encoder(backbone), {}))
    with pytest.raises(StoreError, match="offline and not in the local cache"):
        resolve_encoder("timm:hf-hub:lab/tiny-path@" + "f" * 40)


@pytest.mark.parametrize(
    ("backbone", "what"),
    [
        ("uni", "the weights of uni"),
        ("timm:hf-hub:lab/none", "the config of timm:hf-hub:lab/none"),
    ],
)
def test_an_offline_hub_download_is_one_line_that_never_shows_the_token(
    backbone: str, what: str, hub_cache: Path, demo: Demo, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "s"
    result = run_cli(
        "features", "extract", demo.patches, "--labels", demo.labels, "--out", out,
        "--backbone", backbone, "--weights", "pretrained", "--device", "cpu",
    )  # fmt: skip
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"tuner: error: could not download {what} from the Hugging Face")
    assert "connect to the internet" in lines[0]
    assert "HF_TOKEN" in lines[0]
    assert not out.exists()
    assert_token_absent(tmp_path, result.out, result.err)
