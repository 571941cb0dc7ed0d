"""ImageList / to_image_list: zero padding at bottom/right, size divisibility, unpadded sizes."""
import torch

from glip.structures.image_list import ImageList, to_image_list


def test_list_of_images_is_padded_to_divisible_size():
    a = torch.full((3, 320, 481), 2.0)
    b = torch.full((3, 300, 200), 3.0)
    batch = to_image_list([a, b], size_divisible=32)
    assert batch.tensors.shape == (2, 3, 320, 512)
    assert [tuple(s) for s in batch.image_sizes] == [(320, 481), (300, 200)]
    assert torch.equal(batch.tensors[0, :, :, :481], a)
    assert batch.tensors[0, :, :, 481:].abs().sum() == 0
    assert torch.equal(batch.tensors[1, :, :300, :200], b)
    assert batch.tensors[1, :, 300:].abs().sum() == 0 and batch.tensors[1, :, :, 200:].abs().sum() == 0


def test_no_divisibility_pads_to_max():
    batch = to_image_list([torch.ones(3, 5, 7), torch.ones(3, 6, 4)])
    assert batch.tensors.shape == (2, 3, 6, 7)


def test_tensor_and_imagelist_inputs():
    x = torch.randn(2, 3, 8, 8)
    batch = to_image_list(x)
    assert batch.tensors is x and [tuple(s) for s in batch.image_sizes] == [(8, 8), (8, 8)]
    assert to_image_list(batch) is batch
    single = to_image_list(torch.ones(3, 10, 20), size_divisible=32)
    assert single.tensors.shape == (1, 3, 32, 32) and tuple(single.image_sizes[0]) == (10, 20)
    padded = to_image_list(torch.ones(2, 3, 10, 20), size_divisible=16)
    assert padded.tensors.shape == (2, 3, 16, 32)
    moved = ImageList(x, [(8, 8)] * 2).to(torch.float64)
    assert moved.tensors.dtype == torch.float64
