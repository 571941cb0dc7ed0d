"""The option audit table: every key of the default config, classified (data only; `glip.config.audit` checks it).

* IMPLEMENTED: the key does here what it does in the reference. `supported(value, cfg)`, where given, says which
  values are; others are refused (`supported_text` names the accepted ones; `enforced_by` names the builder that
  refuses them too, which tests/config/test_audit.py checks agrees with this table).
* NO_EFFECT: the reference never acts on the key for GLIP either (its reason says why, e.g. a head GLIP does not
  build); any value is accepted.
* REFUSED: not implemented; only the default value is accepted.

Combinations of several keys that the reference cannot run (e.g. two of the head's optional losses) are refused,
naming the keys, by `glip.modeling.head.head_options` (called by the tools' audit in `glip.utils.cli` and by the
head's builder).

An entry names one key, or a whole node with a trailing "." for the subtrees of components GLIP does not have
(e.g. "MODEL.RESNETS."): keys of GLIP's own components are listed one by one, so that a key added to the defaults
without an entry here fails tests/config/test_audit.py. The most specific entry applies. Entries marked
`training_refused` are also refused, at a non-default value, by the training tools.
"""
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

IMPLEMENTED, NO_EFFECT, REFUSED = "implemented", "no effect", "refused"


@dataclass(frozen=True)
class Option:
    key: str
    status: str
    note: str = ""
    supported: Optional[Callable[[Any, Any], bool]] = None
    supported_text: str = ""
    enforced_by: str = ""
    training_refused: bool = False
    warn: Optional[Callable[[Any, Any], bool]] = None


def impl(key, note="", supported=None, supported_text="", enforced_by="", training_refused=False, warn=None):
    return Option(key, IMPLEMENTED, note, supported, supported_text, enforced_by, training_refused, warn)


def none(key, why):
    return Option(key, NO_EFFECT, why)


def refused(key, why):
    return Option(key, REFUSED, why)


def impls(prefix, names, note=""):
    """IMPLEMENTED entries for `prefix + name` of each name."""
    return tuple(impl(prefix + name, note) for name in names.split())


def nones(prefix, names, why):
    return tuple(none(prefix + name, why) for name in names.split())


def refuseds(prefix, names, why):
    return tuple(refused(prefix + name, why) for name in names.split())


def _text_cache_applies(cfg) -> bool:
    """LANGUAGE_BACKBONE.CACHE_FROZEN has an effect: the encoder is frozen, sees every caption with its padding,
    and captions go through the detector's encode_text (not the parallel class-text encoder)."""
    return bool(cfg.MODEL.LANGUAGE_BACKBONE.FREEZE and cfg.MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS
                and not cfg.GLIPKNOW.PARALLEL_LANGUAGE_INPUT)


def _one_of(*values):
    return lambda value, cfg: value in values


DETECTOR = "glip.modeling.detector.build_detection_model"
ROI = "read only by the reference's ROI box/mask/keypoint heads, which GLIP does not build (MODEL.RPN_ONLY True; " \
      "MASK_ON and KEYPOINT_ON are refused)"
OTHER_BACKBONES = "read only by the reference's ResNet / EfficientDet / FBNet backbones; GLIP's is Swin " \
                  "(MODEL.BACKBONE.CONV_BODY)"
OTHER_HEADS = "read only by the reference's {} head; GLIP's is the VLDyHead (MODEL.RPN_ARCHITECTURE VLDYHEAD), whose " \
              "anchors read MODEL.RPN.ANCHOR_*, loss and post-processing MODEL.ATSS.* and MODEL.DYHEAD.*"
OTHER_LANGUAGE = "read only by the reference's RNN / CLIP language backbones (MODEL.LANGUAGE_BACKBONE.MODEL_TYPE: " \
                 "only BERT is implemented)"
NEVER_READ = "declared in the reference's defaults, never read by its code"
NOT_IMPLEMENTED = "not implemented"
CAPTION_DATA = "read by the caption TSV datasets (CaptionTSV, PseudoData: glip.data.datasets.caption), as in " \
               "the reference; no other dataset takes it (GLIP-L's official config sets it but trains on " \
               "mixed_train_no_coco, where the reference ignores it too)"
TRANSFORM_UNUSED = "read by the reference's build_transforms but never applied"
_FUSE = "MODEL.DYHEAD.FUSE_CONFIG."
_DEFAULT_CATALOG = os.path.join(os.path.dirname(__file__), "paths_catalog.py")
_REFERENCE_CATALOG = "maskrcnn_benchmark/config/paths_catalog.py"

OPTIONS: Tuple[Option, ...] = (
    # ------------------------------------------------------------------------------------------------ MODEL
    impl("MODEL.RPN_ONLY", "True: no ROI heads, as every official config",
         supported=lambda value, cfg: bool(value) or not cfg.MODEL.BOX_ON,
         supported_text="True (False with MODEL.BOX_ON adds the reference's ROI box head, not implemented)"),
    impl("MODEL.BOX_ON", "only acts with MODEL.RPN_ONLY False (refused there)"),
    refused("MODEL.MASK_ON", "no mask head: this re-implementation detects boxes only"),
    refused("MODEL.KEYPOINT_ON", "no keypoint head"),
    impl("MODEL.DEVICE"),
    impl("MODEL.META_ARCHITECTURE", supported=_one_of("GeneralizedVLRCNN"), supported_text="'GeneralizedVLRCNN'",
         enforced_by=DETECTOR),
    impl("MODEL.RPN_ARCHITECTURE", supported=_one_of("VLDYHEAD"), supported_text="'VLDYHEAD'", enforced_by=DETECTOR),
    none("MODEL.DEBUG", "stored by the reference's detector, never used"),
    none("MODEL.ONNX", "read only by the reference's GeneralizedRCNN (MODEL.META_ARCHITECTURE)"),
    impl("MODEL.WEIGHT"),
    refused("MODEL.PRETRAIN_NAME", NOT_IMPLEMENTED),
    impl("MODEL.LINEAR_PROB"),
    refused("MODEL.MULTITASK", NOT_IMPLEMENTED + " (multi-task heads)"),
    refused("MODEL.SPEC", NOT_IMPLEMENTED + " (backbone spec of the reference's other backbones)"),
    # backbone / FPN
    impl("MODEL.BACKBONE.CONV_BODY", supported=_one_of("SWINT-FPN-RETINANET", "SWINT-FPN"),
         supported_text="'SWINT-FPN-RETINANET' or 'SWINT-FPN'", enforced_by=DETECTOR),
    *impls("MODEL.BACKBONE.", "FREEZE_CONV_BODY_AT FREEZE OUT_CHANNELS RESET_BN OUT_FEATURES USE_CHECKPOINT"),
    impl("MODEL.BACKBONE.USE_BN", "the distributed wrapper's broadcast_buffers, as the reference"),
    *nones("MODEL.BACKBONE.", "GROUP NORM_LEVEL USE_SYNCBN USE_NSYNCBN USE_GN USE_EN USE_DFCONV USE_DYRELU USE_SE "
                              "LAYER_SETUP LAYER_SEARCH FPN_LAYER EFFICIENT_DET_START_FROM EFFICIENT_DET_COMPOUND "
                              "EFFICIENT_DET_BIFPN_VERSION", OTHER_BACKBONES),
    none("MODEL.RESNETS.", OTHER_BACKBONES),
    none("MODEL.BIFPN.", OTHER_BACKBONES),
    none("MODEL.EVO_NORM.", OTHER_BACKBONES),
    *impls("MODEL.GROUP_NORM.", "DIM_PER_GP NUM_GROUPS EPSILON"),
    *impls("MODEL.FPN.", "FREEZE USE_GN USE_RELU DROP_BLOCK DROP_PROB DROP_SIZE"),
    refused("MODEL.FPN.USE_DYRELU", NOT_IMPLEMENTED),
    *(impl("MODEL.FPN." + key, supported=_one_of(False), supported_text="False", enforced_by=DETECTOR)
      for key in ("USE_SPP", "USE_PAN", "USE_DYHEAD", "RETURN_SWINT_FEATURE_BEFORE_FUSION")),
    *impls("MODEL.SWINT.", "EMBED_DIM OUT_CHANNELS DEPTHS NUM_HEADS WINDOW_SIZE MLP_RATIO DROP_PATH_RATE APE"),
    impl("MODEL.SWINT.VERSION", supported=_one_of("v1"), supported_text="'v1'", enforced_by=DETECTOR),
    *refuseds("MODEL.SWINT.", "OUT_NORM LAYER_SCALE", NOT_IMPLEMENTED),
    # language backbone
    *impls("MODEL.LANGUAGE_BACKBONE.", "FREEZE USE_CHECKPOINT LANG_DIM MAX_QUERY_LEN N_LAYERS MASK_SPECIAL PAD_MAX"),
    impl("MODEL.LANGUAGE_BACKBONE.CACHE_FROZEN", "project key (not in the reference; default 0, off): the frozen "
         "encoder's outputs kept per caption (glip/modeling/language/frozen_cache.py)",
         supported=lambda value, cfg: value == 0 or (value > 0 and _text_cache_applies(cfg)),
         supported_text="0, or a positive number of captions with FREEZE True, USE_DOT_PRODUCT_TOKEN_LOSS True "
                        "(the encoder keeps its padding) and no GLIPKNOW.PARALLEL_LANGUAGE_INPUT"),
    impl("MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE", "a BERT tokenizer (hub id or local folder)",
         supported=lambda value, cfg: value != "clip", supported_text="a BERT tokenizer (not 'clip')"),
    impl("MODEL.LANGUAGE_BACKBONE.MODEL_TYPE", "BERT (hub id or local BERT folder)",
         supported=lambda value, cfg: _is_bert(value), supported_text="a BERT model", enforced_by=DETECTOR),
    *refuseds("MODEL.LANGUAGE_BACKBONE.", "WEIGHT UNUSED_TOKEN", NOT_IMPLEMENTED),
    *nones("MODEL.LANGUAGE_BACKBONE.", "RNN_TYPE VARIABLE_LENGTH WORD_EMBEDDING_SIZE WORD_VEC_SIZE HIDDEN_SIZE "
                                       "BIDIRECTIONAL INPUT_DROPOUT_P DROPOUT_P CORPUS_PATH VOCAB_SIZE",
           OTHER_LANGUAGE),
    none("MODEL.CLIP.", OTHER_LANGUAGE),
    # heads
    none("MODEL.RETINANET.", OTHER_HEADS.format("RetinaNet")),
    impl("MODEL.RETINANET.INFERENCE_TH", "the minimum score of TEST.SPECIAL_NMS 'soft-vote' (the reference reads it "
                                         "there); the RetinaNet head it also configures is not GLIP's"),
    none("MODEL.FOCAL.", OTHER_HEADS.format("RetinaNet")),
    *impls("MODEL.FOCAL.", "LOSS_ALPHA LOSS_GAMMA", "focal loss of the classic cls_logits (USE_CLASSIFICATION_LOSS)"),
    none("MODEL.FCOS.", OTHER_HEADS.format("FCOS")),
    *impls("MODEL.ATSS.", "NUM_CLASSES INFERENCE_TH NMS_TH PRE_NMS_TOP_N TOPK REG_LOSS_WEIGHT DETECTIONS_PER_IMG "
                          "INFERENCE_TH_TRAIN PRE_NMS_TOP_N_TRAIN POST_NMS_TOP_N_TRAIN"),
    *nones("MODEL.ATSS.", "PRIOR_PROB NUM_CONVS CHANNELS USE_DFCONV USE_GN USE_BN USE_DYRELU USE_SE",
           OTHER_HEADS.format("classic ATSS")),
    *impls("MODEL.RPN.", "USE_FPN ANCHOR_SIZES ANCHOR_STRIDE ASPECT_RATIOS STRADDLE_THRESH OCTAVE SCALES_PER_OCTAVE "
                         "FREEZE"),
    *nones("MODEL.RPN.", "FG_IOU_THRESHOLD BG_IOU_THRESHOLD BATCH_SIZE_PER_IMAGE POSITIVE_FRACTION PRE_NMS_TOP_N_TRAIN "
                         "PRE_NMS_TOP_N_TEST POST_NMS_TOP_N_TRAIN POST_NMS_TOP_N_TEST NMS_THRESH MIN_SIZE "
                         "FPN_POST_NMS_TOP_N_TRAIN FPN_POST_NMS_TOP_N_TEST RPN_HEAD",
           OTHER_HEADS.format("classic RPN")),
    *refuseds("MODEL.RPN.", "ANCHOR_SHIFT USE_RELATIVE_SIZE RETURN_FUSED_FEATURES", NOT_IMPLEMENTED),
    refused("MODEL.RPN.FORCE_BOXES", NOT_IMPLEMENTED + " (the reference's detector then uses the gt boxes as "
                                                       "proposals)"),
    none("MODEL.ROI_HEADS.", ROI),
    none("MODEL.ROI_BOX_HEAD.", ROI),
    none("MODEL.ROI_MASK_HEAD.", ROI),
    none("MODEL.ROI_KEYPOINT_HEAD.", ROI),
    *impls("MODEL.DYHEAD.", "NUM_CLASSES PRIOR_PROB NUM_CONVS CHANNELS USE_DFCONV LOG_SCALE USE_GN USE_NSYNCBN "
                            "USE_SYNCBN USE_DYFUSE USE_DYRELU USE_CHECKPOINT"),
    impl("MODEL.DYHEAD.CONV_FUNC", supported=_one_of(""), supported_text="'' (the default convolution)",
         enforced_by=DETECTOR),
    impl("MODEL.DYHEAD.SCORE_AGG", supported=_one_of("MEAN", "MAX", "POWER", "ONEHOT"),
         supported_text="'MEAN', 'MAX', 'POWER' or 'ONEHOT'"),
    none("MODEL.DYHEAD.TOPK", NEVER_READ + " (the VLDyHead's assigner reads MODEL.ATSS.TOPK)"),
    *refuseds("MODEL.DYHEAD.", "GROUPS COSINE_SCALE", NOT_IMPLEMENTED),
    impl("MODEL.DYHEAD.SHALLOW_LOG_SCALE", "temperature of the shallow contrastive loss"),
    *impls(_FUSE, "EARLY_FUSE_ON JOINT_EMB_SIZE ATTN_EMBED_DIM USE_CLASSIFICATION_LOSS USE_TOKEN_LOSS "
                  "TOKEN_LOSS_WEIGHT TOKEN_GAMMA TOKEN_ALPHA USE_DOT_PRODUCT_TOKEN_LOSS DOT_PRODUCT_TOKEN_LOSS_WEIGHT "
                  "STABLE_SOFTMAX_2D USE_FUSED_FEATURES_DOT_PRODUCT CLAMP_MIN_FOR_UNDERFLOW CLAMP_MAX_FOR_OVERFLOW "
                  "CLAMP_BERTATTN_MIN_FOR_UNDERFLOW CLAMP_BERTATTN_MAX_FOR_OVERFLOW CLAMP_DOT_PRODUCT NO_MASK_FOR_OD "
                  "NO_MASK_FOR_GOLD ADD_LINEAR_LAYER"),
    *impls(_FUSE, "USE_CONTRASTIVE_ALIGN_LOSS CONTRASTIVE_HIDDEN_DIM CONTRASTIVE_ALIGN_LOSS_WEIGHT JOINT_EMB_DROPOUT "
                  "MLM_LOSS MLM_LOSS_FOR_ONLY_POSITIVES MLM_LOSS_COEF "
                  "USE_SHALLOW_CONTRASTIVE_LOSS SHALLOW_MAX_POSITIVE_ANCHORS USE_SHALLOW_ZERO_PADS "
                  "SHALLOW_CONTRASTIVE_HIDDEN_DIM SHALLOW_CONTRASTIVE_LOSS_WEIGHT",
           "combinations the reference cannot run are refused by glip.modeling.head.head_options"),
    impl(_FUSE + "TYPE",
         supported=lambda value, cfg: value == "MHA-B" or not cfg.MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON,
         supported_text="'MHA-B' (with EARLY_FUSE_ON)", enforced_by=DETECTOR),
    impl(_FUSE + "SEPARATE_BIDIRECTIONAL",
         supported=lambda value, cfg: not value or not cfg.MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON,
         supported_text="False (with EARLY_FUSE_ON)", enforced_by=DETECTOR),
    impl(_FUSE + "MLM_OBJ_FOR_ONLY_POSITIVE", "shapes the greenlight map (which tokens the MLM loss may mask) of "
                                              "the caption datasets only: " + CAPTION_DATA),
    none(_FUSE + "USE_LAYER_SCALE", "read only by the reference's MHA-S fusion; GLIP fuses with MHA-B or not at all"),
    *refuseds(_FUSE, "JOINT_OUT_SIZE JOINT_MLP_LAYERS DO_LANG_PROJ_OUTSIDE_CHECKPOINT", NOT_IMPLEMENTED),
    refused(_FUSE + "USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS",
            "needs the C4 features of the reference's VL Swin backbone (MODEL.SWINT.VERSION 'vl'), absent here; "
            "with any other backbone the reference's own head fails"),
    # ------------------------------------------------------------------------------------------------ INPUT / AUGMENT
    *impls("INPUT.", "MIN_SIZE_TRAIN MAX_SIZE_TRAIN MIN_SIZE_TEST MAX_SIZE_TEST PIXEL_MEAN PIXEL_STD FORMAT FIX_RES"),
    impl("INPUT.TO_BGR255", "False with INPUT.FORMAT '' normalises RGB here (the reference fails)"),
    impl("AUGMENT.FLIP_PROB_TRAIN", "mirrors image and boxes; the caption is left unchanged, as the reference"),
    impl("AUGMENT.MULT_MIN_SIZE_TRAIN"),
    impl("AUGMENT.FLIP_SWAP_LEFT_RIGHT", "project key (not in the reference; default False): on a flip, the whole "
                                         "words 'left'/'right' are exchanged, token targets kept on their phrases"),
    *nones("AUGMENT.", "VERTICAL_FLIP_PROB_TRAIN BRIGHTNESS CONTRAST SATURATION HUE CROP_PROB CROP_MIN_IOUS "
                       "CROP_MIN_SIZE", TRANSFORM_UNUSED),
    refused("AUGMENT.USE_RA", NOT_IMPLEMENTED),
    # ------------------------------------------------------------------------------------------------ DATASETS
    *impls("DATASETS.", "TRAIN TEST USE_CROWD CLASS_AGNOSTIC MAX_BOX SAMPLE_RATIO FEW_SHOT SHUFFLE_SEED REGISTER "
                        "COCO_COPY LVIS_COPY FLICKR_COPY MIXED_COPY OBJECT365_COPY VG_COPY OI_COPY IN_COPY "
                        "GENERAL_COPY "
                        "GENERAL_COPY_TEST RANDOM_SAMPLE_NEG ADD_DET_PROMPT CONTROL_PROB DISABLE_SHUFFLE ONE_HOT "
                        "NO_MINUS_ONE_FOR_ONE_HOT DISABLE_CLIP_TO_IMAGE SEPARATION_TOKENS LVIS_USE_NORMAL_AP "
                        "SPECIAL_SAFEGUARD_FOR_COCO_GROUNDING TRAIN_DATASETNAME_SUFFIX TEST_DATASETNAME_SUFFIX "
                        "OVERRIDE_CATEGORY USE_OVERRIDE_CATEGORY SUPRESS_QUERY USE_SUPRESS_QUERY USE_CAPTION_PROMPT "
                        "CAPTION_PROMPT FLICKR_GT_TYPE"),
    *refuseds("DATASETS.", "BOX_THRESHOLD ADD_DET_PROMPT_ADVANCED USE_OD_AUG USE_COCO_FORMAT PROMPT_VERSION "
                           "PROMPT_LIMIT_NEG POS_QUESTION_PROB NEG_QUESTION_PROB FULL_QUESTION_PROB LOCAL_DEBUG "
                           "DIVER_BOX_FOR_VQA", NOT_IMPLEMENTED),
    refused("DATASETS.CLASS_CONCAT", NOT_IMPLEMENTED + " (category ids renumbered across the training datasets)"),
    refused("DATASETS.ALTERNATIVE_TRAINING", NOT_IMPLEMENTED + " (the reference's alternating trainer)"),
    refused("DATASETS.MULTISTAGE_TRAINING", NOT_IMPLEMENTED + " (the reference's stage trainer)"),
    *impls("DATASETS.", "CAPTION_MIN_BOX REPLACE_CLEAN_LABEL FURTHER_SCREEN CAPTION_CONF CAPTION_NMS "
                        "PACK_RANDOM_CAPTION_NUMBER INFERENCE_CAPTION SAMPLE_NEGATIVE_FOR_GROUNDING_DATA "
                        "RANDOM_PACK_PROB NO_RANDOM_PACK_PROBABILITY SAFEGUARD_POSITIVE_CAPTION CAPTION_FORMAT_VERSION",
           CAPTION_DATA),
    none("DATASETS.BING_INDEX_LIST", "expands the catalog name bing_caption_train, which this catalog does not "
                                     "have (an unknown dataset name is an error)"),
    none("DATASETS.PREDEFINED_TEXT", NEVER_READ),
    # ------------------------------------------------------------------------------------------------ DATALOADER
    *impls("DATALOADER.", "NUM_WORKERS SIZE_DIVISIBILITY ASPECT_RATIO_GROUPING USE_RANDOM_SEED"),
    none("DATALOADER.MIN_KPS_PER_IMS", "keypoint datasets only (MODEL.KEYPOINT_ON is refused)"),
    refused("DATALOADER.DISTRIBUTE_CHUNK_AMONG_NODE", NOT_IMPLEMENTED + " (the reference's chunk-by-node sampler of "
                                                      "TSV training data)"),
    # ------------------------------------------------------------------------------------------------ SOLVER
    *impls("SOLVER.", "USE_AMP MAX_ITER MULTI_MAX_ITER MAX_EPOCH MULTI_MAX_EPOCH BASE_LR LANG_LR "
                      "BACKBONE_BODY_LR_FACTOR BIAS_LR_FACTOR CLIP_GRADIENTS.ENABLED CLIP_GRADIENTS.CLIP_VALUE "
                      "CLIP_GRADIENTS.CLIP_TYPE CLIP_GRADIENTS.NORM_TYPE MODEL_EMA MOMENTUM WEIGHT_DECAY "
                      "WEIGHT_DECAY_BIAS WEIGHT_DECAY_NORM_FACTOR USE_COSINE MIN_LR GAMMA STEPS USE_AUTOSTEP "
                      "STEP_PATIENCE WARMUP_FACTOR WARMUP_ITERS CHECKPOINT_PERIOD CHECKPOINT_PER_EPOCH "
                      "AUTO_TERMINATE_PATIENCE IMS_PER_BATCH MAX_NEG_PER_BATCH SEED FIND_UNUSED_PARAMETERS "
                      "TUNING_HIGHLEVEL_OVERRIDE USE_EMA_FOR_MONITOR WEIGHT_DECAY_SCHEDULE "
                      "WEIGHT_DECAY_SCHEDULE_RATIO"),
    *impls("SOLVER.", "SKIP_NONFINITE AMP_DTYPE", "project key (not in the reference)"),
    impl("SOLVER.OPTIMIZER", supported=_one_of("SGD", "ADAMW"), supported_text="'SGD' or 'ADAMW'",
         enforced_by="glip.solver.build.make_optimizer"),
    impl("SOLVER.WARMUP_METHOD", supported=_one_of("constant", "linear"), supported_text="'constant' or 'linear'",
         enforced_by="glip.solver.build.make_lr_scheduler"),
    none("SOLVER.GRAD_CLIP", NEVER_READ + " (gradient clipping is SOLVER.CLIP_GRADIENTS)"),
    impl("SOLVER.TEST_WITH_INFERENCE", "validation during training always runs the evaluation loop (the "
         "reference's True path); its False path (training positive maps fed to the model) is not reproduced",
         warn=lambda value, cfg: not value and (cfg.TEST.DURING_TRAINING or cfg.SOLVER.USE_AUTOSTEP)),
    refused("SOLVER.DISABLE_OUTPUT_DISTRIBUTED", NOT_IMPLEMENTED + " (train_net's --disable_output_distributed flag "
                                                 "is)"),
    *refuseds("SOLVER.", "PROMPT_PROBING_LEVEL DATASET_LENGTH", NOT_IMPLEMENTED),
    none("SEARCH.", "read only by the reference's architecture-search tools"),
    # ------------------------------------------------------------------------------------------------ TEST
    *impls("TEST.", "EXPECTED_RESULTS EXPECTED_RESULTS_SIGMA_TOL DURING_TRAINING IMS_PER_BATCH SUBSET "
                    "CHUNKED_EVALUATION MDETR_STYLE_AGGREGATE_CLASS_NUM"),
    *impls("TEST.", "USE_MULTISCALE SCALES RANGES MAX_SIZE FLIP TH PRE_NMS_TOP_N NUM_CLASSES SELECT_CLASSES",
           "test-time augmentation (glip.engine.tta)"),
    impl("TEST.EVAL_TASK", supported=_one_of("", "detection", "grounding"),
         supported_text="'', 'detection' or 'grounding'", enforced_by="glip.engine.inference.check_options"),
    impl("TEST.SPECIAL_NMS", supported=_one_of("none", "nms", "vote", "soft-vote", "soft-nms"),
         supported_text="'none', 'nms', 'vote', 'soft-vote' or 'soft-nms' (the reference takes any other string "
                        "for 'nms')", enforced_by="glip.engine.tta.build_tta"),
    # ------------------------------------------------------------------------------------------------ GLIPKNOW
    *impls("GLIPKNOW.", "KNOWLEDGE_FILE KNOWLEDGE_TYPE GPT3_NUM WIKI_AND_GPT3",
           "knowledge texts (glip.data.knowledge); used with PARALLEL_LANGUAGE_INPUT only, as in the reference"),
    impl("GLIPKNOW.PARALLEL_LANGUAGE_INPUT", "inference (one text position per class); training with it is refused",
         training_refused=True),
    impl("GLIPKNOW.LAN_FEATURE_AGG_TYPE", supported=_one_of("first", "mean"), supported_text="'first' or 'mean'",
         enforced_by="glip.modeling.language.parallel.build_parallel_text_encoder"),
    none("GLIPKNOW.MAX_NUM_CLASSES_PER_BATCH_TRAIN", "read only when training with PARALLEL_LANGUAGE_INPUT, which is "
                                                     "refused"),
    # ------------------------------------------------------------------------------------------------ misc
    impl("OUTPUT_DIR"),
    impl("PATHS_CATALOG", "the dataset catalog module: this package's (glip/config/paths_catalog.py, the default) "
                          "mirrors the reference's maskrcnn_benchmark/config/paths_catalog.py, the value the "
                          "reference's saved configs hold",
         supported=lambda value, cfg: value == _DEFAULT_CATALOG or value.endswith(_REFERENCE_CATALOG),
         supported_text="this package's catalog or the reference's ({}); register other datasets with "
                        "DATASETS.REGISTER".format(_REFERENCE_CATALOG)),
    refused("TENSORBOARD_EXP", NOT_IMPLEMENTED + " (train_net --use-tensorboard writes to OUTPUT_DIR)"),
)


def _is_bert(model_type) -> bool:
    """bert-base-uncased, or a model whose config.json is a BERT config: a local folder, a model shipped in an
    installed package (all-MiniLM-L6-v2) or in the local hub cache (the language builder's rule). A hub id that only
    the online hub could resolve is left to the builder."""
    if model_type == "bert-base-uncased":
        return True
    from glip.text.pretrained import CONFIG_FILES, resolve_pretrained

    try:
        source = resolve_pretrained(str(model_type), CONFIG_FILES, what="language model config")
    except FileNotFoundError:
        return False
    path = os.path.join(source, "config.json")
    if not os.path.isfile(path):
        return not os.path.isdir(source)
    with open(path) as f:
        return json.load(f).get("model_type") == "bert"
