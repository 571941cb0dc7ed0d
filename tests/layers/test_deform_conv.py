"""DCNv2 (`glip.layers.deform_conv`) against the reference goldens, torchvision and finite differences."""
import pytest
import torch
from torchvision.ops import deform_conv2d

from glip.layers import deform_conv as dc
from glip.layers import extension
from glip.layers.deform_conv import ModulatedDeformConv, modulated_deform_conv, reinterpret_as_output_size
from helpers import load_golden
from helpers.weights import fill_

GOLDEN = "modules/modulated_deform_conv.pt"
CASES = ["stride1_same_size", "stride2_from_finer_level", "stride1_from_coarser_level_reinterpreted"]


@pytest.fixture(scope="module")
def golden():
    return load_golden(GOLDEN)


def _golden_module(golden, case_name):
    key = "stride2" if "stride2" in case_name else "stride1"
    stride = 2 if key == "stride2" else 1
    module = ModulatedDeformConv(256, 256, kernel_size=3, stride=stride, padding=1)
    # the layer lives at `...DyConv.N.conv` in the full model: its keys are `...conv.weight` / `...conv.bias`
    return fill_(module, prefix=golden["weight_prefixes"][key] + ".")


@pytest.fixture
def no_extension(monkeypatch):
    """Force the pure-PyTorch fallback."""
    monkeypatch.setattr(dc, "_extension_op", lambda input: None)


def test_golden_cases_are_all_covered(golden):
    assert sorted(golden["cases"]) == sorted(CASES)


@pytest.mark.parametrize("case_name", CASES)
def test_fallback_matches_reference_golden(golden, case_name, no_extension):
    case = golden["cases"][case_name]
    module = _golden_module(golden, case_name)
    with torch.no_grad():
        out = module(case["input"], case["offset"], case["mask"])
    assert out.shape == case["output"].shape
    assert (out - case["output"]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case_name", CASES)
def test_dispatching_function_matches_reference_golden(golden, case_name):
    case = golden["cases"][case_name]
    module = _golden_module(golden, case_name)
    with torch.no_grad():
        out = modulated_deform_conv(
            case["input"], case["offset"], case["mask"], module.weight, module.bias, module.stride, 1, 1, 1, 1
        )
    assert (out - case["output"]).abs().max().item() <= 1e-5


def test_module_state_dict_keys_and_shapes():
    module = ModulatedDeformConv(256, 256, 3, stride=2, padding=1)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        "weight": (256, 256, 3, 3),
        "bias": (256,),
    }
    assert "bias" not in ModulatedDeformConv(8, 4, 3, bias=False).state_dict()


def test_reinterpretation_reads_each_image_block_as_raw_memory():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = reinterpret_as_output_size(t, (2, 3))
    assert out.shape == (2, 3, 2, 3)
    # image 1's block starts at 60; the first 3*2*3 = 18 values in memory order
    assert out[1].flatten().tolist() == list(range(60, 78))
    assert out[0, 2].flatten().tolist() == list(range(12, 18))
    assert reinterpret_as_output_size(t, (4, 5)) is t
    with pytest.raises(ValueError):
        reinterpret_as_output_size(t, (5, 5))


def test_reinterpretation_equals_same_size_call_on_truncated_maps(no_extension):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 4, generator=g)
    offset = torch.randn(2, 18, 5, 7, generator=g)
    mask = torch.rand(2, 9, 5, 7, generator=g)
    w = torch.randn(6, 4, 3, 3, generator=g)
    out = modulated_deform_conv(x, offset, mask, w, None, 1, 1, 1, 1, 1)
    raw_off = offset.reshape(2, -1)[:, : 18 * 12].reshape(2, 18, 3, 4)
    raw_mask = mask.reshape(2, -1)[:, : 9 * 12].reshape(2, 9, 3, 4)
    expected = deform_conv2d(x, raw_off, w, None, stride=1, padding=1, mask=raw_mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_zero_offsets_and_unit_mask_give_a_plain_convolution(no_extension):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 7, 9, generator=g)
    w = torch.randn(4, 3, 3, 3, generator=g)
    b = torch.randn(4, generator=g)
    offset = torch.zeros(2, 18, 4, 5)
    mask = torch.ones(2, 9, 4, 5)
    out = modulated_deform_conv(x, offset, mask, w, b, stride=2, padding=1, dilation=1, groups=2)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, w, b, 2, 1, 1, 2), atol=1e-5, rtol=1e-5)


def _random_case(dtype, b, cin, cout, hw, kernel, stride, padding, dilation, groups, dg, offset_scale, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    kh, kw = kernel
    ho = (h + 2 * padding - (dilation * (kh - 1) + 1)) // stride + 1
    wo = (w + 2 * padding - (dilation * (kw - 1) + 1)) // stride + 1
    x = torch.randn(b, cin, h, w, generator=g, dtype=dtype)
    offset = offset_scale * torch.randn(b, 2 * dg * kh * kw, ho, wo, generator=g, dtype=dtype)
    mask = torch.rand(b, dg * kh * kw, ho, wo, generator=g, dtype=dtype)
    weight = torch.randn(cout, cin // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias


# (b, cin, cout, (h, w), kernel, stride, padding, dilation, groups, deformable_groups, offset_scale)
CONFIGS = {
    "stride2_pad1": (2, 4, 6, (6, 7), (3, 3), 2, 1, 1, 1, 1, 1.5),
    "groups2_dg2": (1, 4, 6, (5, 6), (3, 3), 1, 1, 1, 2, 2, 1.5),
    "dilation2_nonsquare_kernel": (2, 3, 2, (7, 6), (3, 2), 1, 2, 2, 1, 3, 1.0),
    "offsets_outside_image": (1, 2, 3, (3, 4), (3, 3), 1, 0, 1, 1, 1, 4.0),
    "single_pixel_input": (2, 2, 3, (1, 1), (3, 3), 2, 1, 1, 1, 1, 0.7),
}
# smaller versions for the float64 finite-difference check
GRADCHECK_CONFIGS = {
    "stride2_pad1": (2, 2, 2, (4, 5), (3, 3), 2, 1, 1, 1, 1, 1.5),
    "groups2_dg2": (1, 4, 2, (3, 4), (3, 3), 1, 1, 1, 2, 2, 1.5),
    "dilation2_nonsquare_kernel": (1, 3, 2, (5, 4), (3, 2), 1, 2, 2, 1, 3, 1.0),
    "offsets_outside_image": (1, 2, 2, (3, 4), (3, 3), 1, 0, 1, 1, 1, 4.0),
    "single_pixel_input": (2, 2, 2, (1, 1), (3, 3), 2, 1, 1, 1, 1, 0.7),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fallback_matches_torchvision_forward_and_gradients(name, no_extension):
    b, cin, cout, hw, kernel, stride, padding, dilation, groups, dg, scale = CONFIGS[name]
    tensors = _random_case(torch.float32, b, cin, cout, hw, kernel, stride, padding, dilation, groups, dg, scale, 3)
    ours_in = [t.clone().requires_grad_() for t in tensors]
    ref_in = [t.clone().requires_grad_() for t in tensors]
    x, offset, mask, weight, bias = ours_in
    out = modulated_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation, groups, dg)
    rx, roff, rmask, rw, rb = ref_in
    ref = deform_conv2d(rx, roff, rw, rb, stride=stride, padding=padding, dilation=dilation, mask=rmask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    ours = torch.autograd.grad(out, ours_in, grad)
    theirs = torch.autograd.grad(ref, ref_in, grad)
    for a, r in zip(ours, theirs):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(GRADCHECK_CONFIGS))
def test_fallback_gradcheck_float64(name, no_extension):
    b, cin, cout, hw, kernel, stride, padding, dilation, groups, dg, scale = GRADCHECK_CONFIGS[name]
    tensors = _random_case(torch.float64, b, cin, cout, hw, kernel, stride, padding, dilation, groups, dg, scale, 5)
    inputs = tuple(t.requires_grad_() for t in tensors)

    def fn(x, offset, mask, weight, bias):
        return modulated_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation, groups, dg)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GRADCHECK_CONFIGS))
def test_fallback_full_gradcheck_float64(name, no_extension):
    b, cin, cout, hw, kernel, stride, padding, dilation, groups, dg, scale = GRADCHECK_CONFIGS[name]
    tensors = _random_case(torch.float64, b, cin, cout, hw, kernel, stride, padding, dilation, groups, dg, scale, 6)
    inputs = tuple(t.requires_grad_() for t in tensors)

    def fn(x, offset, mask, weight, bias):
        return modulated_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation, groups, dg)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_offsets_far_outside_give_only_the_bias(no_extension):
    x = torch.randn(1, 3, 4, 4)
    offset = torch.full((1, 18, 4, 4), 10.0)
    out = modulated_deform_conv(x, offset, torch.ones(1, 9, 4, 4), torch.randn(2, 3, 3, 3), torch.tensor([1.0, -2.0]),
                                1, 1, 1, 1, 1)
    torch.testing.assert_close(out, torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 4, 4))


def test_bilinear_sample_by_hand(no_extension):
    # 1x1 kernel, one channel: output = mask * bilinear(x, y + dy, x + dx), zero outside (-1, H) x (-1, W)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = torch.ones(1, 1, 1, 1)
    offset = torch.tensor([[0.5, 0.25], [-0.5, 0.0], [0.0, 0.75], [0.5, -1.5]]).t().reshape(1, 2, 2, 2)
    mask = torch.tensor([1.0, 0.5, 2.0, 1.0]).view(1, 1, 2, 2)
    out = modulated_deform_conv(x, offset, mask, w)
    # (0,0)+(0.5,0.25): rows 1,3 / 2,4 -> 0.5*(1.25)+0.5*(3.25) = 2.25
    # (0,1)+(-0.5,0): y=-0.5 -> 0.5 * 2 = 1.0, times mask 0.5 -> 0.5
    # (1,0)+(0,0.75): 3*0.25 + 4*0.75 = 3.75, times 2 -> 7.5
    # (1,1)+(0.5,-1.5): y=1.5 -> 0.5*row1; x=-0.5 -> 0.5*col0 -> 0.25*3 = 0.75
    torch.testing.assert_close(out.flatten(), torch.tensor([2.25, 0.5, 7.5, 0.75]))


def test_dispatches_to_the_extension_with_output_sized_maps(monkeypatch):
    calls = []

    def fake(*args):
        calls.append(args)
        return torch.zeros(1)

    monkeypatch.setattr(extension, "load", lambda: object())
    monkeypatch.setattr(extension, "modulated_deform_conv", fake, raising=False)
    x = torch.randn(2, 4, 3, 4)
    offset, mask = torch.randn(2, 18, 5, 7), torch.rand(2, 9, 5, 7)
    modulated_deform_conv(x, offset, mask, torch.randn(4, 4, 3, 3), None, 1, 1, 1, 1, 1)
    (args,) = calls
    assert args[1].shape == (2, 18, 3, 4) and args[2].shape == (2, 9, 3, 4)
    assert args[4] is None and list(args[5:]) == [1, 1, 1, 1, 1]


@pytest.mark.ext
def test_extension_matches_golden(golden):
    if extension.load() is None or not hasattr(extension, "modulated_deform_conv"):
        pytest.skip("compiled extension not built")
    for name in CASES:
        case = golden["cases"][name]
        module = _golden_module(golden, name)
        with torch.no_grad():
            out = module(case["input"], case["offset"], case["mask"])
        assert (out - case["output"]).abs().max().item() <= 1e-5
