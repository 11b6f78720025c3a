"""The zero-shot anomaly localizer: learned or hand-crafted prompts on a frozen CLIP."""

from .checkpoint import PromptCheckpoint, import_reference, load_prompts, read_checkpoint, save_prompts
from .config import LocalizerConfig, PromptConfig
from .factory import build_localizer, prompt_mode
from .model import Localizer, LocalizerOutput, Prediction, smooth
from .prompt_learner import PromptEnsemble, PromptLearner
from .train import TrainConfig, train_prompts

__all__ = [
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
