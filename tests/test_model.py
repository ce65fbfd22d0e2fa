"""The batched model equals the users' nested-loop model, in outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from tuner.model import Bags, Case, HierarchicalMIL, loop_forward, segment_softmax


def random_case(generator: torch.Generator, in_dim: int, layout: dict[str, list[int]]) -> Case:
    return {
        stain: [torch.randn(n, in_dim, generator=generator, dtype=torch.float64) for n in sizes]
        for stain, sizes in layout.items()
    }


LAYOUTS = [
    {"HE": [5, 3], "MelanA": [7], "SOX10": [2, 9, 4]},
    {"HE": [1]},  # one stain, one slice, one patch
    {"MelanA": [6, 1], "SOX10": [1, 1]},  # H&E missing, single-patch slices
    {"HE": [12], "SOX10": [3, 3, 3, 3]},
]


def make_model(
    pooling: str = "attention", gated: bool = False, patch_chunk: int | None = None
) -> HierarchicalMIL:
    model = HierarchicalMIL(
        16, 3, embed_dim=8, attn_dim=4, dropout=0.0, gated=gated, pooling=pooling,
        patch_chunk=patch_chunk, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return model.double().eval()


@pytest.mark.parametrize(
    ("pooling", "gated", "patch_chunk"),
    [
        ("attention", False, None),
        ("attention", True, None),
        ("mean", False, None),
        ("attention", False, 4),  # the patch level in chunks of whole slices
        ("attention", True, 1),
        ("mean", False, 10),
    ],
)
def test_batched_forward_equals_nested_loops(
    pooling: str, gated: bool, patch_chunk: int | None
) -> None:
    generator = torch.Generator().manual_seed(1)
    cases = [random_case(generator, 16, layout) for layout in LAYOUTS]
    model = make_model(pooling, gated, patch_chunk)

    batched = model(Bags.from_cases(cases)).logits
    batched.square().sum().backward()
    batched_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    looped = torch.stack([loop_forward(model, case) for case in cases])
    looped.square().sum().backward()

    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(batched_grads[name], param.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_patch_chunks_hold_whole_slices() -> None:
    generator = torch.Generator().manual_seed(1)
    bags = Bags.from_cases([random_case(generator, 16, layout) for layout in LAYOUTS])
    model = make_model(patch_chunk=8)
    chunks = model._chunks(bags)
    assert len(chunks) > 2
    assert chunks[0][0].start == 0
    assert chunks[-1][0].stop == len(bags.features)
    assert sum(n for _, _, n in chunks) == len(bags.stain_of_slice)
    for rows, first, n_slices in chunks:
        slices = bags.slice_of_patch[rows]
        assert int(slices[0]) == first
        assert int(slices[-1]) == first + n_slices - 1
        assert rows.stop - rows.start <= 8 + 12  # the window plus the rest of its last slice


def test_shuffled_patches_give_the_same_output() -> None:
    generator = torch.Generator().manual_seed(1)
    bags = Bags.from_cases([random_case(generator, 16, layout) for layout in LAYOUTS])
    order = torch.randperm(len(bags.features), generator=generator)
    shuffled = Bags(
        bags.features[order], bags.slice_of_patch[order], bags.stain_of_slice,
        bags.case_of_stain, bags.n_cases,
    )  # fmt: skip
    model = make_model(patch_chunk=4)
    assert len(model._chunks(shuffled)) == 1  # not in row order: one piece
    output, expected = model(shuffled), model(bags)
    torch.testing.assert_close(output.logits, expected.logits)
    torch.testing.assert_close(
        output.attention["patch"].weights, expected.attention["patch"].weights[order]
    )


def test_float16_features_are_computed_in_the_model_dtype() -> None:
    generator = torch.Generator().manual_seed(1)
    bags = Bags.from_cases([random_case(generator, 16, layout) for layout in LAYOUTS])
    half = Bags(
        bags.features.half(), bags.slice_of_patch, bags.stain_of_slice, bags.case_of_stain,
        bags.n_cases,
    )  # fmt: skip
    model = make_model(patch_chunk=4)
    logits = model(half).logits
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits, model(bags).logits, atol=1e-2, rtol=1e-2)


def test_attention_weights_sum_to_one_per_group() -> None:
    generator = torch.Generator().manual_seed(2)
    bags = Bags.from_cases([random_case(generator, 16, layout) for layout in LAYOUTS])
    output = make_model()(bags)
    assert output.logits.shape == (4, 3)
    for level, att in output.attention.items():
        sums = torch.zeros(att.n_groups, dtype=att.weights.dtype).index_add_(
            0, att.group, att.weights
        )
        torch.testing.assert_close(sums, torch.ones_like(sums), msg=level)
    assert output.attention["patch"].weights.shape == (len(bags.features),)
    assert output.attention["stain"].n_groups == 4


def test_no_nan_with_extreme_logits_and_tiny_groups() -> None:
    logits = torch.tensor([1e4, -1e4, 3.0, 800.0, 799.0], requires_grad=True)
    group = torch.tensor([0, 0, 1, 2, 2])
    weights = segment_softmax(logits, group, 3)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(
        weights, torch.tensor([1.0, 0.0, 1.0, 0.7311, 0.2689]), atol=1e-4, rtol=0
    )
    weights.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_single_patch_case_in_float32_has_no_nan() -> None:
    model = HierarchicalMIL(16, embed_dim=8, attn_dim=4).train()
    bags = Bags.from_cases([{"HE": [torch.randn(1, 16)]}])
    output = model(bags)
    output.logits.sum().backward()
    assert torch.isfinite(output.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_patch_chunk_is_a_setting_of_each_model() -> None:
    assert make_model(patch_chunk=4).patch_chunk == 4
    assert HierarchicalMIL(16).patch_chunk == 2048
    assert make_model(patch_chunk=None).patch_chunk is None


def test_weights_and_dropout_come_from_the_given_generator() -> None:
    """A seeded generator gives the weights of ``torch.manual_seed`` and a plain construction,
    and, in training, the same dropout masks each time; the global generator is not read."""
    torch.manual_seed(0)
    plain = HierarchicalMIL(16, 3, embed_dim=8, attn_dim=4, dropout=0.5)
    torch.manual_seed(99)
    model = HierarchicalMIL(
        16, 3, embed_dim=8, attn_dim=4, dropout=0.5, generator=torch.Generator().manual_seed(0)
    ).train()
    got = model.state_dict()
    assert list(got) == list(plain.state_dict())
    for name, expected in plain.state_dict().items():
        assert torch.equal(got[name], expected), name
    bags = Bags.from_cases([random_case(torch.Generator().manual_seed(1), 16, LAYOUTS[0])])
    bags.features = bags.features.float()
    first = model(bags, torch.Generator().manual_seed(5)).logits
    torch.manual_seed(1)
    again = model(bags, torch.Generator().manual_seed(5)).logits
    other = model(bags, torch.Generator().manual_seed(6)).logits
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
