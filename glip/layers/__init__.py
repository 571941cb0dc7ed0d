"""Low-level ops: modulated deformable convolution, multi-label NMS, focal losses, Scale.

The deformable convolution and NMS run the compiled `glip._C` kernels when they are built (see
`glip/layers/extension.py`; `GLIP_DISABLE_EXT=1` turns them off) and exact PyTorch fallbacks otherwise. The
functional names and argument orders are the reference's.
"""
from glip.layers.deform_conv import ModulatedDeformConv, modulated_deform_conv
from glip.layers.nms import ml_nms
from glip.layers.scale import Scale
from glip.layers.sigmoid_focal_loss import SigmoidFocalLoss, TokenSigmoidFocalLoss, sigmoid_focal_loss

__all__ = ["ModulatedDeformConv", "modulated_deform_conv", "ml_nms", "Scale", "SigmoidFocalLoss",
           "TokenSigmoidFocalLoss", "sigmoid_focal_loss"]
