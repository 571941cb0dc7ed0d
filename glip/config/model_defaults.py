"""Default values of the ``MODEL`` subtree (backbones, language model, heads, anchors).

Split from :mod:`glip.config.defaults` only to keep files short; names and values are the
reference's. :func:`model_defaults` builds a fresh node each call.
"""
from glip.config.node import CfgNode as CN


def model_defaults() -> CN:
    """A new ``MODEL`` node holding every model key with its default value."""
    m = CN()
    m.RPN_ONLY = False
    m.BOX_ON = True
    m.MASK_ON = False
    m.KEYPOINT_ON = False
    m.DEVICE = "cuda"
    m.META_ARCHITECTURE = "GeneralizedRCNN"
    m.RPN_ARCHITECTURE = "RPN"
    m.DEBUG = False
    m.ONNX = False
    # Checkpoint to start from; a "catalog://" prefix is resolved by the model catalog.
    m.WEIGHT = ""
    m.PRETRAIN_NAME = ""
    # Train only the last prediction layers of the heads.
    m.LINEAR_PROB = False
    m.MULTITASK = CN(new_allowed=True)

    # ----------------------------------------------------------------------------- MODEL.BACKBONE
    m.BACKBONE = CN()
    m.BACKBONE.CONV_BODY = "R-50-C4"
    # Stages up to this index get no gradient (-1: none frozen).
    m.BACKBONE.FREEZE_CONV_BODY_AT = 2
    m.BACKBONE.FREEZE = False
    m.BACKBONE.GROUP = 1
    m.BACKBONE.OUT_CHANNELS = 256 * 4
    m.BACKBONE.RESET_BN = False
    m.BACKBONE.NORM_LEVEL = 3
    m.BACKBONE.USE_BN = False
    m.BACKBONE.USE_SYNCBN = False
    m.BACKBONE.USE_NSYNCBN = False
    m.BACKBONE.USE_GN = False
    m.BACKBONE.USE_EN = False
    m.BACKBONE.USE_DFCONV = False
    m.BACKBONE.USE_DYRELU = False
    m.BACKBONE.USE_SE = False
    m.BACKBONE.LAYER_SETUP = (3, 4, 6, 3)
    m.BACKBONE.LAYER_SEARCH = CN(new_allowed=True)
    m.BACKBONE.OUT_FEATURES = ("stage2", "stage3", "stage4", "stage5")
    m.BACKBONE.FPN_LAYER = ()
    m.BACKBONE.USE_CHECKPOINT = False
    m.BACKBONE.EFFICIENT_DET_START_FROM = 3
    m.BACKBONE.EFFICIENT_DET_COMPOUND = 0
    m.BACKBONE.EFFICIENT_DET_BIFPN_VERSION = 0

    # ----------------------------------------------------------------------------- MODEL.LANGUAGE_BACKBONE
    m.LANGUAGE_BACKBONE = CN()
    m.LANGUAGE_BACKBONE.WEIGHT = ""
    m.LANGUAGE_BACKBONE.FREEZE = False
    m.LANGUAGE_BACKBONE.USE_CHECKPOINT = False
    m.LANGUAGE_BACKBONE.TOKENIZER_TYPE = "bert-base-uncased"
    m.LANGUAGE_BACKBONE.MODEL_TYPE = "bert-base-uncased"
    m.LANGUAGE_BACKBONE.LANG_DIM = 768
    m.LANGUAGE_BACKBONE.MAX_QUERY_LEN = 256
    m.LANGUAGE_BACKBONE.N_LAYERS = 1
    m.LANGUAGE_BACKBONE.UNUSED_TOKEN = 106
    m.LANGUAGE_BACKBONE.MASK_SPECIAL = False
    # RNN language encoder options (unused by the BERT models).
    m.LANGUAGE_BACKBONE.RNN_TYPE = "lstm"
    m.LANGUAGE_BACKBONE.VARIABLE_LENGTH = True
    m.LANGUAGE_BACKBONE.WORD_EMBEDDING_SIZE = 512
    m.LANGUAGE_BACKBONE.WORD_VEC_SIZE = 512
    m.LANGUAGE_BACKBONE.HIDDEN_SIZE = 512
    m.LANGUAGE_BACKBONE.BIDIRECTIONAL = True
    m.LANGUAGE_BACKBONE.INPUT_DROPOUT_P = 0.5
    m.LANGUAGE_BACKBONE.DROPOUT_P = 0.2
    m.LANGUAGE_BACKBONE.CORPUS_PATH = ""
    m.LANGUAGE_BACKBONE.VOCAB_SIZE = 0
    # Pad every caption to MAX_QUERY_LEN tokens.
    m.LANGUAGE_BACKBONE.PAD_MAX = True
    # Project key (not in the reference): with FREEZE, keep up to this many captions' encoder outputs and encode
    # each distinct caption once (glip/modeling/language/frozen_cache.py); 0: off.
    m.LANGUAGE_BACKBONE.CACHE_FROZEN = 0

    # ----------------------------------------------------------------------------- MODEL.FPN / BIFPN
    m.FPN = CN()
    m.FPN.FREEZE = False
    m.FPN.USE_GN = False
    m.FPN.USE_RELU = False
    m.FPN.USE_DYRELU = False
    m.FPN.DROP_BLOCK = True
    m.FPN.DROP_PROB = 0.3
    m.FPN.DROP_SIZE = 3
    m.FPN.USE_SPP = False
    m.FPN.USE_PAN = False
    m.FPN.USE_DYHEAD = False
    m.FPN.RETURN_SWINT_FEATURE_BEFORE_FUSION = False

    m.BIFPN = CN()
    m.BIFPN.NUM_REPEATS = 1
    m.BIFPN.USE_ATTENTION = True

    # ----------------------------------------------------------------------------- normalisation layers
    m.GROUP_NORM = CN()
    # Channels per group (-1: use NUM_GROUPS instead).
    m.GROUP_NORM.DIM_PER_GP = -1
    m.GROUP_NORM.NUM_GROUPS = 16
    m.GROUP_NORM.EPSILON = 1e-5

    m.EVO_NORM = CN()
    m.EVO_NORM.NUM_GROUPS = 8
    m.EVO_NORM.EPSILON = 1e-5

    # ----------------------------------------------------------------------------- one-stage heads
    m.RETINANET = CN()
    m.RETINANET.NUM_CLASSES = 81
    m.RETINANET.NUM_CONVS = 4
    m.RETINANET.PRE_NMS_TOP_N = 1000
    m.RETINANET.PRIOR_PROB = 0.01
    m.RETINANET.INFERENCE_TH = 0.05
    m.RETINANET.NMS_TH = 0.4
    m.RETINANET.DETECTIONS_PER_IMG = 100

    m.FOCAL = CN()
    m.FOCAL.BBOX_REG_WEIGHT = 4.0
    m.FOCAL.BBOX_REG_BETA = 0.11
    m.FOCAL.FG_IOU_THRESHOLD = 0.5
    m.FOCAL.BG_IOU_THRESHOLD = 0.4
    m.FOCAL.LOSS_ALPHA = 0.25
    m.FOCAL.LOSS_GAMMA = 2.0

    m.FCOS = CN()
    m.FCOS.NUM_CLASSES = 81
    m.FCOS.FPN_STRIDES = [8, 16, 32, 64, 128]
    m.FCOS.PRIOR_PROB = 0.01
    m.FCOS.INFERENCE_TH = 0.05
    m.FCOS.NMS_TH = 0.6
    m.FCOS.PRE_NMS_TOP_N = 1000
    m.FCOS.NUM_CONVS = 4
    m.FCOS.USE_DFCONV = False
    m.FCOS.CENTER_SAMPLING_RADIUS = 0.0
    m.FCOS.IOU_LOSS_TYPE = "iou"
    m.FCOS.NORM_REG_TARGETS = False
    m.FCOS.CENTERNESS_ON_REG = False
    m.FCOS.USE_GT_CENTER = False
    m.FCOS.DETECTIONS_PER_IMG = 100
    m.FCOS.USE_GN = False
    m.FCOS.USE_BN = False
    m.FCOS.INFERENCE_TH_TRAIN = 0.0
    m.FCOS.PRE_NMS_TOP_N_TRAIN = 3000
    m.FCOS.POST_NMS_TOP_N_TRAIN = 1000

    m.ATSS = CN()
    m.ATSS.NUM_CLASSES = 81
    m.ATSS.PRIOR_PROB = 0.01
    m.ATSS.INFERENCE_TH = 0.05
    m.ATSS.NMS_TH = 0.6
    m.ATSS.PRE_NMS_TOP_N = 1000
    m.ATSS.NUM_CONVS = 4
    m.ATSS.CHANNELS = 128
    m.ATSS.USE_DFCONV = False
    # Candidates per pyramid level considered by the ATSS assigner.
    m.ATSS.TOPK = 9
    m.ATSS.REG_LOSS_WEIGHT = 2.0
    m.ATSS.DETECTIONS_PER_IMG = 100
    m.ATSS.USE_GN = False
    m.ATSS.USE_BN = False
    m.ATSS.USE_DYRELU = False
    m.ATSS.USE_SE = False
    m.ATSS.INFERENCE_TH_TRAIN = 0.0
    m.ATSS.PRE_NMS_TOP_N_TRAIN = 3000
    m.ATSS.POST_NMS_TOP_N_TRAIN = 1000

    # ----------------------------------------------------------------------------- MODEL.DYHEAD (GLIP head)
    m.DYHEAD = CN()
    m.DYHEAD.NUM_CLASSES = 81
    m.DYHEAD.PRIOR_PROB = 0.01
    m.DYHEAD.NUM_CONVS = 4
    m.DYHEAD.CHANNELS = 128
    m.DYHEAD.GROUPS = 1
    m.DYHEAD.USE_DFCONV = False
    m.DYHEAD.TOPK = 9
    # How token scores of one phrase are combined: "MEAN" or "MAX".
    m.DYHEAD.SCORE_AGG = "MEAN"
    # Initial temperatures of the dot-product and shallow contrastive logits.
    m.DYHEAD.LOG_SCALE = 0.0
    m.DYHEAD.SHALLOW_LOG_SCALE = 0.0
    m.DYHEAD.USE_GN = False
    m.DYHEAD.USE_NSYNCBN = False
    m.DYHEAD.USE_SYNCBN = False
    m.DYHEAD.USE_DYFUSE = False
    m.DYHEAD.USE_DYRELU = False
    m.DYHEAD.CONV_FUNC = ""
    # > 0: cosine-similarity classifier with this scale.
    m.DYHEAD.COSINE_SCALE = -1.0

    fuse = CN()
    fuse.EARLY_FUSE_ON = False
    fuse.TYPE = ""
    fuse.JOINT_EMB_SIZE = 256
    # Not in the reference (which fixes it at 2048): width of VLFuse's image-text attention, 8 heads.
    fuse.ATTN_EMBED_DIM = 2048
    fuse.JOINT_OUT_SIZE = 256
    fuse.JOINT_EMB_DROPOUT = 0.1
    fuse.JOINT_MLP_LAYERS = 2
    fuse.USE_CLASSIFICATION_LOSS = False
    fuse.USE_TOKEN_LOSS = False
    fuse.TOKEN_LOSS_WEIGHT = 1.0
    fuse.TOKEN_GAMMA = 2.0
    fuse.TOKEN_ALPHA = 0.25
    fuse.USE_DOT_PRODUCT_TOKEN_LOSS = False
    fuse.USE_CONTRASTIVE_ALIGN_LOSS = False
    fuse.CONTRASTIVE_HIDDEN_DIM = 64
    fuse.CONTRASTIVE_ALIGN_LOSS_WEIGHT = 1.0
    fuse.DOT_PRODUCT_TOKEN_LOSS_WEIGHT = 1.0
    fuse.USE_LAYER_SCALE = True
    fuse.SEPARATE_BIDIRECTIONAL = False
    fuse.STABLE_SOFTMAX_2D = False
    fuse.DO_LANG_PROJ_OUTSIDE_CHECKPOINT = False
    fuse.USE_FUSED_FEATURES_DOT_PRODUCT = False
    # Clamp attention logits / dot products to stay finite in fp16.
    fuse.CLAMP_MIN_FOR_UNDERFLOW = False
    fuse.CLAMP_MAX_FOR_OVERFLOW = False
    fuse.CLAMP_BERTATTN_MIN_FOR_UNDERFLOW = False
    fuse.CLAMP_BERTATTN_MAX_FOR_OVERFLOW = False
    fuse.CLAMP_DOT_PRODUCT = False
    # Masked language modelling auxiliary loss.
    fuse.MLM_LOSS = False
    fuse.MLM_LOSS_FOR_ONLY_POSITIVES = True
    fuse.NO_MASK_FOR_OD = False
    fuse.NO_MASK_FOR_GOLD = False
    fuse.MLM_LOSS_COEF = 1.0
    fuse.MLM_OBJ_FOR_ONLY_POSITIVE = False
    # Shallow contrastive loss on FPN / backbone features.
    fuse.USE_SHALLOW_CONTRASTIVE_LOSS = False
    fuse.SHALLOW_MAX_POSITIVE_ANCHORS = 100
    fuse.USE_SHALLOW_ZERO_PADS = False
    fuse.SHALLOW_CONTRASTIVE_HIDDEN_DIM = 64
    fuse.SHALLOW_CONTRASTIVE_LOSS_WEIGHT = 1.0
    fuse.USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS = False
    # Prompt tuning: a trainable offset added to the language features.
    fuse.ADD_LINEAR_LAYER = False
    m.DYHEAD.FUSE_CONFIG = fuse
    # Gradient checkpointing of the head's tower.
    m.DYHEAD.USE_CHECKPOINT = False

    # ----------------------------------------------------------------------------- MODEL.RPN (anchors)
    m.RPN = CN()
    m.RPN.USE_FPN = False
    m.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)
    m.RPN.ANCHOR_STRIDE = (16,)
    m.RPN.ASPECT_RATIOS = (0.5, 1.0, 2.0)
    m.RPN.ANCHOR_SHIFT = (0.0, 0.0, 0.0, 0.0)
    m.RPN.USE_RELATIVE_SIZE = False
    m.RPN.STRADDLE_THRESH = 0
    m.RPN.OCTAVE = 2.0
    m.RPN.SCALES_PER_OCTAVE = 3
    m.RPN.FG_IOU_THRESHOLD = 0.7
    m.RPN.BG_IOU_THRESHOLD = 0.3
    m.RPN.BATCH_SIZE_PER_IMAGE = 256
    m.RPN.POSITIVE_FRACTION = 0.5
    m.RPN.PRE_NMS_TOP_N_TRAIN = 12000
    m.RPN.PRE_NMS_TOP_N_TEST = 6000
    m.RPN.POST_NMS_TOP_N_TRAIN = 2000
    m.RPN.POST_NMS_TOP_N_TEST = 1000
    m.RPN.NMS_THRESH = 0.7
    m.RPN.MIN_SIZE = 0
    m.RPN.FPN_POST_NMS_TOP_N_TRAIN = 2000
    m.RPN.FPN_POST_NMS_TOP_N_TEST = 2000
    m.RPN.RPN_HEAD = "SingleConvRPNHead"
    m.RPN.FREEZE = False
    m.RPN.FORCE_BOXES = False
    m.RPN.RETURN_FUSED_FEATURES = False

    # ----------------------------------------------------------------------------- two-stage heads (schema only)
    m.ROI_HEADS = CN()
    m.ROI_HEADS.USE_FPN = False
    m.ROI_HEADS.FG_IOU_THRESHOLD = 0.5
    m.ROI_HEADS.BG_IOU_THRESHOLD = 0.5
    m.ROI_HEADS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
    m.ROI_HEADS.POSITIVE_FRACTION = 0.25
    m.ROI_HEADS.SCORE_THRESH = 0.05
    m.ROI_HEADS.NMS = 0.5
    m.ROI_HEADS.DETECTIONS_PER_IMG = 100

    m.ROI_BOX_HEAD = CN()
    m.ROI_BOX_HEAD.FEATURE_EXTRACTOR = "ResNet50Conv5ROIFeatureExtractor"
    m.ROI_BOX_HEAD.PREDICTOR = "FastRCNNPredictor"
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
    m.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
    m.ROI_BOX_HEAD.POOLER_SCALES = (1.0 / 16,)
    m.ROI_BOX_HEAD.NUM_CLASSES = 81
    m.ROI_BOX_HEAD.MLP_HEAD_DIM = 1024
    m.ROI_BOX_HEAD.USE_GN = False
    m.ROI_BOX_HEAD.DILATION = 1
    m.ROI_BOX_HEAD.CONV_HEAD_DIM = 256
    m.ROI_BOX_HEAD.NUM_STACKED_CONVS = 4
    m.ROI_BOX_HEAD.POOLER_ALIGNED = False

    m.ROI_MASK_HEAD = CN()
    m.ROI_MASK_HEAD.FEATURE_EXTRACTOR = "ResNet50Conv5ROIFeatureExtractor"
    m.ROI_MASK_HEAD.PREDICTOR = "MaskRCNNC4Predictor"
    m.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    m.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
    m.ROI_MASK_HEAD.POOLER_SCALES = (1.0 / 16,)
    m.ROI_MASK_HEAD.MLP_HEAD_DIM = 1024
    m.ROI_MASK_HEAD.CONV_LAYERS = (256, 256, 256, 256)
    m.ROI_MASK_HEAD.RESOLUTION = 14
    m.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = True
    m.ROI_MASK_HEAD.POSTPROCESS_MASKS = False
    m.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD = 0.5
    m.ROI_MASK_HEAD.DILATION = 1
    m.ROI_MASK_HEAD.USE_GN = False
    m.ROI_MASK_HEAD.HG_SCALE = 1

    m.ROI_KEYPOINT_HEAD = CN()
    m.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR = "KeypointRCNNFeatureExtractor"
    m.ROI_KEYPOINT_HEAD.PREDICTOR = "KeypointRCNNPredictor"
    m.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
    m.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
    m.ROI_KEYPOINT_HEAD.POOLER_SCALES = (1.0 / 16,)
    m.ROI_KEYPOINT_HEAD.MLP_HEAD_DIM = 1024
    m.ROI_KEYPOINT_HEAD.CONV_LAYERS = (512,) * 8
    m.ROI_KEYPOINT_HEAD.RESOLUTION = 14
    m.ROI_KEYPOINT_HEAD.NUM_CLASSES = 17
    m.ROI_KEYPOINT_HEAD.KEYPOINT_NAME = ()
    m.ROI_KEYPOINT_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = True

    # ----------------------------------------------------------------------------- ResNet / ResNeXt (schema only)
    m.RESNETS = CN()
    m.RESNETS.USE_STEM3X3 = False
    m.RESNETS.WITH_SE = False
    m.RESNETS.USE_AVG_DOWN = False
    m.RESNETS.NUM_GROUPS = 1
    m.RESNETS.WIDTH_PER_GROUP = 64
    m.RESNETS.STRIDE_IN_1X1 = True
    m.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"
    m.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"
    m.RESNETS.RES5_DILATION = 1
    m.RESNETS.BACKBONE_OUT_CHANNELS = 256 * 4
    m.RESNETS.RES2_OUT_CHANNELS = 256
    m.RESNETS.STEM_OUT_CHANNELS = 64
    m.RESNETS.REVISION = "resnet_light"
    m.RESNETS.STAGE_WITH_DCN = (False, False, False, False)
    m.RESNETS.WITH_MODULATED_DCN = False
    m.RESNETS.DEFORMABLE_GROUPS = 1

    # ----------------------------------------------------------------------------- Swin Transformer
    m.SWINT = CN()
    m.SWINT.EMBED_DIM = 96
    m.SWINT.OUT_CHANNELS = (96, 192, 384, 768)
    m.SWINT.DEPTHS = (2, 2, 6, 2)
    m.SWINT.NUM_HEADS = (3, 6, 12, 24)
    m.SWINT.WINDOW_SIZE = 7
    m.SWINT.MLP_RATIO = 4
    m.SWINT.DROP_PATH_RATE = 0.2
    m.SWINT.APE = False
    m.SWINT.VERSION = "v1"
    m.SWINT.OUT_NORM = True
    m.SWINT.LAYER_SCALE = 0

    # Free-form CvT backbone spec.
    m.SPEC = CN(new_allowed=True)

    # CLIP text encoder options.
    m.CLIP = CN()
    m.CLIP.CONTEXT_LENGTH = 256
    m.CLIP.WIDTH = 512
    m.CLIP.LAYERS = 12
    m.CLIP.HEADS = 8
    m.CLIP.DROP_PATH = 0.0
    m.CLIP.TOKENIZER = "clip"
    m.CLIP.VOCAB_SIZE = 49408
    return m
