"""The zero-shot anomaly localizer: learned or hand-crafted prompts on a frozen CLIP."""

from .checkpoint import PromptCheckpoint, import_reference, load_prompts, read_checkpoint, save_prompts
from .config import LocalizerConfig, PromptConfig
from .factory import BuiltScorer, ScorerOptions, build_localizer, build_scorer, describe_models, prompt_mode
from .features import FEATURE_SOURCES, BuiltinFeatureConfig, BuiltinFeatures, ClipFeatures, build_feature_source, register_feature_source
from .fusion import DEFAULT_WEIGHTS, FusedScorer, FusionConfig, ModeScale, fuse
from .learned import learn_product
from .learned_config import LearnConfig
from .learned_scorer import LearnedScorer
from .model import Localizer, LocalizerOutput
from .mutual import MutualConfig, MutualScorer
from .prompt_learner import PromptEnsemble, PromptLearner
from .reference import ReferenceConfig, ReferenceScorer
from .scorer import AnomalyScorer, Prediction, smooth
from .train import TrainConfig, train_prompts

__all__ = [
    "DEFAULT_WEIGHTS",
    "FEATURE_SOURCES",
    "AnomalyScorer",
    "BuiltScorer",
    "BuiltinFeatureConfig",
    "BuiltinFeatures",
    "ClipFeatures",
    "FusedScorer",
    "FusionConfig",
    "LearnConfig",
    "LearnedScorer",
    "ModeScale",
    "MutualConfig",
    "MutualScorer",
    "ReferenceConfig",
    "ReferenceScorer",
    "ScorerOptions",
    "build_feature_source",
    "build_scorer",
    "describe_models",
    "fuse",
    "learn_product",
    "register_feature_source",
    "Localizer",
    "LocalizerConfig",
    "LocalizerOutput",
    "Prediction",
    "PromptCheckpoint",
    "PromptConfig",
    "PromptEnsemble",
    "PromptLearner",
    "TrainConfig",
    "build_localizer",
    "import_reference",
    "load_prompts",
    "prompt_mode",
    "read_checkpoint",
    "save_prompts",
    "smooth",
    "train_prompts",
]
