"""Default values of every configuration key GLIP knows (the reference's yacs schema).

Key names, nesting and default values are those of the original GLIP code base
(maskrcnn_benchmark style) so that official yaml files, command-line overrides and
checkpoint-side configs merge unchanged. Only the values here are defaults; experiment
files under ``configs/`` override them. ``_C`` is built once at import and exposed as
``glip.config.cfg``; clone it (``cfg.clone()``) before merging per-run settings.

Nodes created with ``new_allowed=True`` (``MODEL.MULTITASK``, ``MODEL.BACKBONE.LAYER_SEARCH``,
``MODEL.SPEC``, ``DATASETS.REGISTER``) accept arbitrary keys, as in the reference.
"""
import os

from glip.config.model_defaults import model_defaults
from glip.config.node import CfgNode as CN

_C = CN()

# ----------------------------------------------------------------------------- MODEL (see model_defaults.py)
_C.MODEL = model_defaults()

# ----------------------------------------------------------------------------- INPUT
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = 800
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# Per-channel normalisation in the order of INPUT.TO_BGR255 (BGR, 0-255 by default).
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]
_C.INPUT.TO_BGR255 = True
_C.INPUT.FORMAT = ""
_C.INPUT.FIX_RES = False

# ----------------------------------------------------------------------------- AUGMENT
_C.AUGMENT = CN()
_C.AUGMENT.USE_RA = 0
_C.AUGMENT.FLIP_PROB_TRAIN = 0.5
# Not in the reference: on a horizontal flip, also exchange the whole words "left"/"right" in the caption (the
# character spans follow; token targets stay on their phrases). Off: the caption is kept, as the reference.
_C.AUGMENT.FLIP_SWAP_LEFT_RIGHT = False
_C.AUGMENT.VERTICAL_FLIP_PROB_TRAIN = 0.0
# Non-empty: the training short side is drawn from these sizes.
_C.AUGMENT.MULT_MIN_SIZE_TRAIN = ()
_C.AUGMENT.BRIGHTNESS = 0.0
_C.AUGMENT.CONTRAST = 0.0
_C.AUGMENT.SATURATION = 0.0
_C.AUGMENT.HUE = 0.0
_C.AUGMENT.CROP_PROB = 0.5
_C.AUGMENT.CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)
_C.AUGMENT.CROP_MIN_SIZE = 0.3

# ----------------------------------------------------------------------------- DATASETS
_C.DATASETS = CN()
# Dataset names as known to glip.config.paths_catalog.DatasetCatalog.
_C.DATASETS.TRAIN = ()
_C.DATASETS.TEST = ()
_C.DATASETS.USE_CROWD = False
_C.DATASETS.CLASS_AGNOSTIC = False
_C.DATASETS.CLASS_CONCAT = False
_C.DATASETS.MAX_BOX = -1
_C.DATASETS.SAMPLE_RATIO = 0.0
_C.DATASETS.FEW_SHOT = 0
# Non-zero: shuffle the dataset before few-shot sampling.
_C.DATASETS.SHUFFLE_SEED = 0
_C.DATASETS.ALTERNATIVE_TRAINING = False
_C.DATASETS.MULTISTAGE_TRAINING = False
# name -> {[factory,] img_dir, ann_file, ...}: datasets added to the catalog at run time
# (glip.config.paths_catalog.register_datasets).
_C.DATASETS.REGISTER = CN(new_allowed=True)
_C.DATASETS.BOX_THRESHOLD = 0.1
# Repetition factors of the pre-training sources (-1: no repetition wrapper).
_C.DATASETS.COCO_COPY = 1
_C.DATASETS.LVIS_COPY = 1
_C.DATASETS.FLICKR_COPY = 1
_C.DATASETS.MIXED_COPY = 1
_C.DATASETS.OBJECT365_COPY = 1
_C.DATASETS.VG_COPY = 1
_C.DATASETS.OI_COPY = 1
_C.DATASETS.IN_COPY = 1
_C.DATASETS.GENERAL_COPY = -1
_C.DATASETS.GENERAL_COPY_TEST = -1
# Detection data turned into grounding captions.
_C.DATASETS.RANDOM_SAMPLE_NEG = -1
_C.DATASETS.ADD_DET_PROMPT = False
_C.DATASETS.ADD_DET_PROMPT_ADVANCED = False
_C.DATASETS.USE_OD_AUG = False
_C.DATASETS.USE_COCO_FORMAT = False
_C.DATASETS.CONTROL_PROB = ()
_C.DATASETS.DISABLE_SHUFFLE = False
_C.DATASETS.PROMPT_VERSION = ""
_C.DATASETS.PROMPT_LIMIT_NEG = -1
_C.DATASETS.POS_QUESTION_PROB = 0.6
_C.DATASETS.NEG_QUESTION_PROB = 0.8
_C.DATASETS.FULL_QUESTION_PROB = 0.5
_C.DATASETS.ONE_HOT = False
_C.DATASETS.NO_MINUS_ONE_FOR_ONE_HOT = False
_C.DATASETS.DISABLE_CLIP_TO_IMAGE = False
_C.DATASETS.SEPARATION_TOKENS = " "
# LVIS
_C.DATASETS.LVIS_USE_NORMAL_AP = False
_C.DATASETS.SPECIAL_SAFEGUARD_FOR_COCO_GROUNDING = False
# Caption (pseudo-labelled) data
_C.DATASETS.BING_INDEX_LIST = []
_C.DATASETS.CAPTION_MIN_BOX = 1
_C.DATASETS.REPLACE_CLEAN_LABEL = False
_C.DATASETS.FURTHER_SCREEN = False
_C.DATASETS.CAPTION_CONF = 0.9
_C.DATASETS.CAPTION_NMS = 0.9
_C.DATASETS.PACK_RANDOM_CAPTION_NUMBER = 0
_C.DATASETS.INFERENCE_CAPTION = False
_C.DATASETS.SAMPLE_NEGATIVE_FOR_GROUNDING_DATA = -1.0
_C.DATASETS.RANDOM_PACK_PROB = -1.0
_C.DATASETS.NO_RANDOM_PACK_PROBABILITY = 0.0
_C.DATASETS.SAFEGUARD_POSITIVE_CAPTION = True
_C.DATASETS.CAPTION_FORMAT_VERSION = "v1"
_C.DATASETS.LOCAL_DEBUG = False
# Object detection in the wild (task configs override categories and prompts).
_C.DATASETS.PREDEFINED_TEXT = None
_C.DATASETS.TRAIN_DATASETNAME_SUFFIX = ""
_C.DATASETS.TEST_DATASETNAME_SUFFIX = ""
# A JSON-like list of COCO category dicts (yacs turns the yaml string into the list).
_C.DATASETS.OVERRIDE_CATEGORY = None
_C.DATASETS.USE_OVERRIDE_CATEGORY = False
_C.DATASETS.SUPRESS_QUERY = None
_C.DATASETS.USE_SUPRESS_QUERY = False
_C.DATASETS.USE_CAPTION_PROMPT = False
_C.DATASETS.CAPTION_PROMPT = None
_C.DATASETS.FLICKR_GT_TYPE = "separate"
_C.DATASETS.DIVER_BOX_FOR_VQA = False

# ----------------------------------------------------------------------------- DATALOADER
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# > 0: pad batched images to a multiple of this.
_C.DATALOADER.SIZE_DIVISIBILITY = 0
# Batch portrait and landscape images separately.
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
_C.DATALOADER.MIN_KPS_PER_IMS = 0
_C.DATALOADER.USE_RANDOM_SEED = False
_C.DATALOADER.DISTRIBUTE_CHUNK_AMONG_NODE = False

# ----------------------------------------------------------------------------- SEARCH (schema only)
_C.SEARCH = CN()
_C.SEARCH.MAX_EPOCH = 20
_C.SEARCH.SELECT_NUM = 20
_C.SEARCH.POPULATION_NUM = 64
_C.SEARCH.MUTATION_NUM = 24
_C.SEARCH.CROSSOVER_NUM = 24
_C.SEARCH.MUTATION_PROB = 0.1

# ----------------------------------------------------------------------------- SOLVER
_C.SOLVER = CN()
_C.SOLVER.USE_AMP = False
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.MULTI_MAX_ITER = ()
# > 0: overrides MAX_ITER with MAX_EPOCH * len(dataset) // IMS_PER_BATCH.
_C.SOLVER.MAX_EPOCH = 0
_C.SOLVER.MULTI_MAX_EPOCH = ()
_C.SOLVER.OPTIMIZER = "SGD"
_C.SOLVER.BASE_LR = 0.001
_C.SOLVER.LANG_LR = 0.00001
_C.SOLVER.BACKBONE_BODY_LR_FACTOR = 1.0
_C.SOLVER.BIAS_LR_FACTOR = 2
_C.SOLVER.GRAD_CLIP = 0.0
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.0
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.MODEL_EMA = 0.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0005
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
_C.SOLVER.WEIGHT_DECAY_NORM_FACTOR = 1.0
_C.SOLVER.USE_COSINE = False
_C.SOLVER.MIN_LR = 0.000001
_C.SOLVER.GAMMA = 0.1
# Values < 1 are fractions of MAX_ITER.
_C.SOLVER.STEPS = (30000,)
_C.SOLVER.USE_AUTOSTEP = False
_C.SOLVER.STEP_PATIENCE = 5
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3
_C.SOLVER.WARMUP_ITERS = 500
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 2500
_C.SOLVER.CHECKPOINT_PER_EPOCH = -1.0
_C.SOLVER.TEST_WITH_INFERENCE = False
_C.SOLVER.AUTO_TERMINATE_PATIENCE = -1
# Global batch size (split over processes).
_C.SOLVER.IMS_PER_BATCH = 16
_C.SOLVER.MAX_NEG_PER_BATCH = 0.1
_C.SOLVER.SEED = 0
_C.SOLVER.DISABLE_OUTPUT_DISTRIBUTED = False
# -1: tune everything; 1: language model only; 1.5: language model and box head.
_C.SOLVER.PROMPT_PROBING_LEVEL = -1.0
_C.SOLVER.FIND_UNUSED_PARAMETERS = True
# Schema only: the reference's loader writes the training set's length here; this package computes the
# schedule from it without writing the config (glip.data.build.train_iterations) and logs both.
_C.SOLVER.DATASET_LENGTH = -1
# One of None, "full", "linear_prob", "language_prompt_v1" .. "language_prompt_v4".
_C.SOLVER.TUNING_HIGHLEVEL_OVERRIDE = None
_C.SOLVER.USE_EMA_FOR_MONITOR = False
_C.SOLVER.WEIGHT_DECAY_SCHEDULE = False
_C.SOLVER.WEIGHT_DECAY_SCHEDULE_RATIO = 0.667
# Not in the reference: skip (True) instead of stopping on a NaN/inf loss.
_C.SOLVER.SKIP_NONFINITE = False
# Not in the reference: autocast dtype with USE_AMP: "" = float16 on GPU, float32 on CPU; or "float16"/"bfloat16".
_C.SOLVER.AMP_DTYPE = ""

# ----------------------------------------------------------------------------- TEST
_C.TEST = CN()
_C.TEST.EXPECTED_RESULTS = []
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4
_C.TEST.DURING_TRAINING = False
# Global batch size (split over processes).
_C.TEST.IMS_PER_BATCH = 16
_C.TEST.USE_MULTISCALE = False
_C.TEST.SCALES = (400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800)
_C.TEST.RANGES = (
    (96, 10000), (96, 10000), (64, 10000), (64, 10000), (64, 10000), (0, 10000),
    (0, 10000), (0, 256), (0, 256), (0, 192), (0, 192), (0, 96),
)
_C.TEST.MAX_SIZE = 2500
_C.TEST.FLIP = True
# "none", "soft-nms", "vote" or "soft-vote".
_C.TEST.SPECIAL_NMS = "none"
_C.TEST.TH = 0.6
_C.TEST.PRE_NMS_TOP_N = 1000
_C.TEST.NUM_CLASSES = 81
_C.TEST.SELECT_CLASSES = ()
# "detection" or "grounding"; empty lets the evaluator decide from the dataset.
_C.TEST.EVAL_TASK = ""
_C.TEST.SUBSET = -1
_C.TEST.CHUNKED_EVALUATION = -1
_C.TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM = -1

# ----------------------------------------------------------------------------- misc
_C.OUTPUT_DIR = "OUTPUT"
_C.PATHS_CATALOG = os.path.join(os.path.dirname(__file__), "paths_catalog.py")
_C.TENSORBOARD_EXP = "OUTPUT"

# ----------------------------------------------------------------------------- GLIPKNOW (knowledge-augmented prompts)
_C.GLIPKNOW = CN()
_C.GLIPKNOW.KNOWLEDGE_FILE = ""
_C.GLIPKNOW.KNOWLEDGE_TYPE = ""
_C.GLIPKNOW.MAX_NUM_CLASSES_PER_BATCH_TRAIN = -1
_C.GLIPKNOW.PARALLEL_LANGUAGE_INPUT = False
_C.GLIPKNOW.LAN_FEATURE_AGG_TYPE = "first"
_C.GLIPKNOW.GPT3_NUM = 5
_C.GLIPKNOW.WIKI_AND_GPT3 = False
