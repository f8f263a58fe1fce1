from .flashi2v import FlashI2VTransformer, LearnableProjection
from .io import load_state_dict_strict

__all__ = ["FlashI2VTransformer", "LearnableProjection", "load_state_dict_strict"]
