"""BatchCollator: padding to /32 and binary concatenated positive maps."""
import torch

from glip.data.collate import Batch, BatchCollator, BBoxAugCollator
from glip.structures.bounding_box import BoxList


def _target(n, w, h, rows):
    t = BoxList(torch.zeros(n, 4), (w, h))
    pm = torch.zeros(n, 256)
    for i, cols in enumerate(rows):
        pm[i, cols] = 1.0 / len(cols)
    t.add_field("positive_map", pm)
    t.add_field("greenlight_map", torch.ones(256))
    return t


def test_collate_pads_and_binarises():
    batch = [
        (torch.ones(3, 800, 1202), _target(2, 1202, 800, [[1], [3, 4]]), 7),
        (torch.ones(3, 320, 481), _target(1, 481, 320, [[5, 6, 7]]), 9),
    ]
    out = BatchCollator(32)(batch)
    assert isinstance(out, Batch)
    images = out.images
    assert images.tensors.shape == (2, 3, 800, 1216)
    assert images.image_sizes == [(800, 1202), (320, 481)]
    assert images.tensors[1, :, 320:].abs().sum() == 0 and images.tensors[1, :, :, 481:].abs().sum() == 0
    assert out.indices == (7, 9) and len(out.targets) == 2
    expected = torch.zeros(3, 256)
    expected[0, 1] = expected[1, 3] = expected[1, 4] = 1
    expected[2, 5:8] = 1
    assert torch.equal(out.positive_map, expected)
    assert out.positive_map_eval is None
    assert out.greenlight_map.shape == (2, 256)
    assert tuple(out) == (out.images, out.targets, out.indices, out.positive_map, None, out.greenlight_map)


def test_dict_targets_and_augmentation_batches_carry_no_maps():
    dict_batch = BatchCollator(32)([(torch.ones(3, 20, 30), {"boxes": []}, 4)])
    assert dict_batch.indices == (4,) and dict_batch.images.tensors.shape == (1, 3, 32, 32)
    assert dict_batch.positive_map is dict_batch.positive_map_eval is dict_batch.greenlight_map is None
    images = (torch.ones(3, 20, 30), torch.ones(3, 10, 12))
    aug = BBoxAugCollator()([(images[0], _target(1, 30, 20, [[1]]), 0), (images[1], _target(1, 12, 10, [[2]]), 1)])
    assert aug.images == images and aug.indices == (0, 1) and aug.positive_map is None


def test_training_batch_matches_reference_golden():
    """The 2-image training batch of train_losses.pt: padded input shape and the binary positive map."""
    from helpers import load_golden
    from PIL import Image

    from glip.data.positive_map import create_positive_map, load_tokenizer
    from glip.data.transforms import Compose, Normalize, ToTensor

    golden = load_golden("train_losses.pt")
    tokenizer = load_tokenizer()
    tail = Compose([ToTensor(), Normalize([103.530, 116.280, 123.675], [57.375, 57.120, 58.395], "bgr255")])
    batch = []
    for i, sample in enumerate(golden["samples"]):
        pixels = sample["resized_rgb_uint8"].numpy()
        target = BoxList(golden["targets"][i]["boxes"].clone(), (pixels.shape[1], pixels.shape[0]))
        tokenized = tokenizer(sample["caption"], return_tensors="pt", max_length=256, truncation=True)
        target.add_field("positive_map", create_positive_map(tokenized, sample["tokens_positive"]))
        batch.append((tail(Image.fromarray(pixels, "RGB")), target, i))
    out = BatchCollator(32)(batch)
    assert tuple(out.images.tensors.shape) == tuple(golden["batch_input_shape"])
    assert [tuple(s) for s in out.images.image_sizes] == [tuple(s) for s in golden["image_sizes_hw"]]
    assert torch.equal(out.positive_map, golden["positive_map"])
