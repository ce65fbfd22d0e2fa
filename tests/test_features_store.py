"""Feature extraction and the store: format, loading, verification, refusal, views, import."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import Demo, make_demo, write_png16
from tuner.data import build_index
from tuner.errors import DataError, StoreError
from tuner.features import (
    ExtractOptions,
    FeatureStore,
    WeightsSpec,
    build_backbone,
    extract_features,
    import_embeddings,
)

FAST = ExtractOptions(weights="random", device="cpu", batch_size=16, progress=False)


def test_store_rows_are_contiguous_per_case_and_match_the_index(
    store: FeatureStore, demo: Demo
) -> None:
    index = build_index(demo.patches, demo.labels)
    assert store.rows == index.patches  # one row type: the index's patches are the store's rows
    assert store.features.shape == (len(index.patches), 2, 1024)
    assert store.features.dtype == np.float16
    assert [c.case for c in store.cases] == index.cases
    for case in store.cases:
        assert {r.case for r in store.rows[case.rows]} == {case.case}
    # every slice and stain group is one run of rows
    for ids in (store.slice_of_row, store.stain_group_of_row, store.case_of_row):
        assert np.all(np.diff(ids) >= 0)
    manifest = store.manifest
    assert manifest["backbone"] == "densenet121"
    assert manifest["weights"] == {"kind": "random", "seed": 0}
    assert manifest["image_size"] == 32
    assert manifest["counts"]["patches"] == len(index.patches)
    assert manifest["classes"] == ["benign", "high_grade"]
    assert manifest["checksum"].startswith("sha256:")


def test_features_are_the_backbone_of_each_patch(store: FeatureStore, demo: Demo) -> None:
    from tuner.features import PatchImages

    images = PatchImages(demo.patches, [store.rows[0].path, store.rows[5].path], 32, 1, 0)
    batch = torch.stack([images[0][0], images[1][0]]).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = build_backbone(WeightsSpec("random", seed=0))((batch - mean) / std)
    got = torch.from_numpy(store.features[[0, 5], 0].astype(np.float32))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)


def test_augmented_views_differ_from_the_patch(store: FeatureStore) -> None:
    plain = store.features[:, 0].astype(np.float32)
    view = store.features[:, 1].astype(np.float32)
    assert not np.allclose(plain, view)
    assert np.corrcoef(plain.ravel(), view.ravel())[0, 1] > 0.5


def test_per_case_tensors(store: FeatureStore) -> None:
    case = store.cases[1]
    one = store.case_features(case.case)
    assert one.shape == (case.stop - case.start, 1024)
    assert one.dtype == torch.float16
    both = store.case_features(case.case, view=None)
    assert both.shape == (case.stop - case.start, 2, 1024)
    assert torch.equal(both[:, 0], one)
    with pytest.raises(StoreError, match="not in feature store"):
        store.case_features("nope")


def test_checksum_mismatch_is_detected_on_load(store: FeatureStore, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    FeatureStore.open(copy)
    features = np.load(copy / "features.npy", mmap_mode="r+")
    features[3, 0, 7] += 1
    features.flush()
    del features
    with pytest.raises(StoreError, match="does not match its checksum"):
        FeatureStore.open(copy)


def test_a_store_of_another_checksum_is_refused_on_open(store: FeatureStore) -> None:
    assert FeatureStore.open(store.path, checksum=store.checksum).checksum == store.checksum
    with pytest.raises(StoreError) as raised:
        FeatureStore.open(
            store.path, checksum="sha256:0000", expected_by="study 'mil' was created with"
        )
    assert f"has checksum {store.checksum[:19]}... but study 'mil' was created with" in str(
        raised.value
    )
    assert "sha256:0000..." in str(raised.value)


def test_existing_store_is_reused_or_refused(
    store: FeatureStore, demo: Demo, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    shutil.copytree(store.path, out)
    before = (out / "manifest.json").read_text()
    again = extract_features(
        demo.patches, demo.labels, out, ExtractOptions(**{**FAST.__dict__, "views": 2})
    )
    assert again.checksum == store.checksum
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(StoreError, match=r"different manifest \(differs in views"):
        extract_features(demo.patches, demo.labels, out, FAST)
    assert (out / "manifest.json").read_text() == before
    replaced = extract_features(
        demo.patches, demo.labels, out, ExtractOptions(**{**FAST.__dict__, "overwrite": True})
    )
    assert replaced.n_views == 1
    assert not list(tmp_path.glob("store.*"))


def test_a_store_written_before_encoders_is_still_complete(
    store: FeatureStore, demo: Demo, tmp_path: Path
) -> None:
    out = tmp_path / "old"
    shutil.copytree(store.path, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest.pop("encoder") == {"library": "torchvision", "model": "densenet121",
                                       "pooling": "avg"}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))  # what version 0.1 wrote
    before = (out / "manifest.json").read_text()
    again = extract_features(
        demo.patches, demo.labels, out, ExtractOptions(**{**FAST.__dict__, "views": 2})
    )
    assert again.checksum == store.checksum
    assert (out / "manifest.json").read_text() == before


def test_missing_weights_file_writes_nothing(demo: Demo, tmp_path: Path) -> None:
    options = ExtractOptions(**{**FAST.__dict__, "weights": str(tmp_path / "w.pth")})
    with pytest.raises(StoreError, match="'imagenet', 'random' nor an existing file"):
        extract_features(demo.patches, demo.labels, tmp_path / "out", options)
    assert list(tmp_path.iterdir()) == []


def test_weights_from_a_file(demo: Demo, tmp_path: Path) -> None:
    from torchvision.models import densenet121

    torch.manual_seed(1)
    state = densenet121(weights=None).state_dict()
    torch.save(state, tmp_path / "full.pth")
    torch.save({k.removeprefix("features."): v for k, v in state.items()}, tmp_path / "trunk.pth")
    first = build_backbone(WeightsSpec.parse(str(tmp_path / "full.pth")))
    second = build_backbone(WeightsSpec.parse(str(tmp_path / "trunk.pth")))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(first(x), second(x))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(StoreError, match="does not fit densenet121"):
        build_backbone(WeightsSpec.parse(str(tmp_path / "other.pth")))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(StoreError, match="not a PyTorch state dict"):
        build_backbone(WeightsSpec.parse(str(tmp_path / "junk.pth")))


def test_unreadable_image_stops_extraction_without_a_store(
    fresh_demo: Demo, tmp_path: Path
) -> None:
    victim = sorted(fresh_demo.patches.rglob("*.png"))[5]
    victim.write_bytes(victim.read_bytes()[:60])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"cannot be read .*run the same command again"):
        extract_features(fresh_demo.patches, fresh_demo.labels, out, FAST)
    assert not out.exists()


def test_store_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        FeatureStore.open(tmp_path / "none")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="is not a feature store"):
        FeatureStore.open(tmp_path / "plain")


def test_import_embeddings_from_other_encoders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for case in ["a", "b", "c", "d"]:
        for stain in ["he", "sox10"]:
            array = rng.normal(size=(int(rng.integers(2, 6)), 48)).astype(np.float32)
            name = f"{case}_{stain}.npy" if stain == "he" else f"{case}_{stain}.pt"
            if name.endswith(".npy"):
                np.save(tmp_path / name, array)
            else:
                torch.save(torch.from_numpy(array), tmp_path / name)
            rows.append(f"{case},{stain},1,{name}")
    (tmp_path / "slides.csv").write_text("case,stain,slice,path\n" + "\n".join(rows) + "\n")
    (tmp_path / "labels.csv").write_text("case,label\na,0\nb,1\nc,0\nd,1\n")
    store = import_embeddings(
        tmp_path / "slides.csv", tmp_path / "labels.csv", tmp_path / "store", encoder="uni"
    )
    assert store.dim == 48
    assert store.manifest["backbone"] == "uni"
    expected = np.load(tmp_path / "b_he.npy").astype(np.float16)
    got = store.case_features("b").numpy()[: len(expected)]
    np.testing.assert_array_equal(got, expected)
    reopened = FeatureStore.open(tmp_path / "store")
    assert reopened.checksum == store.checksum
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["counts"]["slices"] == 8


def test_import_refuses_mixed_widths(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 8), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((3, 9), np.float32))
    (tmp_path / "slides.csv").write_text("case,stain,slice,path\na,he,1,a.npy\nb,he,1,b.npy\n")
    (tmp_path / "labels.csv").write_text("case,label\na,0\nb,1\n")
    with pytest.raises(DataError, match="differ in width"):
        import_embeddings(tmp_path / "slides.csv", tmp_path / "labels.csv", tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_features_of_deep_copies_match_their_eight_bit_originals(tmp_path: Path) -> None:
    """A 16-bit copy (x * 257) of every patch, grey or RGB, gives the features of the 8-bit
    patch: deep images are scaled, not clipped to white."""
    demo = make_demo(tmp_path / "rgb", cases=6)
    copies = {name: tmp_path / name for name in ("grey8", "grey16", "rgb48")}
    for path in demo.patches.rglob("*.png"):
        rel = path.relative_to(demo.patches)
        for folder in copies.values():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            rgb, grey = np.asarray(image.convert("RGB")), np.asarray(image.convert("L"))
        Image.fromarray(grey).save(copies["grey8"] / rel)
        Image.fromarray(grey.astype(np.uint16) * 257).save(copies["grey16"] / rel)
        write_png16(copies["rgb48"] / rel, rgb.astype(np.uint16) * 257)

    def features(patches: Path) -> np.ndarray:
        out = tmp_path / "stores" / patches.name
        return np.asarray(extract_features(patches, demo.labels, out, FAST).features, np.float32)

    grey8, grey16 = features(copies["grey8"]), features(copies["grey16"])
    assert np.abs(grey8 - features(demo.patches)).max() > 0.01  # grey differs from colour
    np.testing.assert_allclose(grey16, grey8, rtol=1e-3, atol=1e-3)  # float16 resolution
    np.testing.assert_allclose(
        features(copies["rgb48"]), features(demo.patches), rtol=1e-3, atol=1e-3
    )
