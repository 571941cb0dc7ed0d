"""BatchCollator: padding to /32 and binary concatenated positive maps."""
import torch

from glip.data.collate import BatchCollator
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
    images, targets, ids, positive_map, positive_map_eval, greenlight = BatchCollator(32)(batch)
    assert images.tensors.shape == (2, 3, 800, 1216)
    assert images.image_sizes == [(800, 1202), (320, 481)]
    assert images.tensors[1, :, 320:].abs().sum() == 0 and images.tensors[1, :, :, 481:].abs().sum() == 0
    assert ids == (7, 9) and len(targets) == 2
    expected = torch.zeros(3, 256)
    expected[0, 1] = expected[1, 3] = expected[1, 4] = 1
    expected[2, 5:8] = 1
    assert torch.equal(positive_map, expected)
    assert positive_map_eval is None
    assert greenlight.shape == (2, 256)
