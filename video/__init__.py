"""extradim.video: text-to-clip diffusion (time as an extra dimension). Imports only shared_core.

Data layer: ``world`` (the procedural Shapes world and its captions), ``checker`` (the hand-coded
attribute checker) and ``data`` (users' own captioned videos). Video decoders (decord, PyAV,
imageio) are imported only when a file is read.
"""

from video.checker import CheckerConfig, CheckResult, attribute_accuracy, check_clips
from video.data import FolderVideoDataset, VideoReadError, VideoSkipWarning, read_captions
from video.world import (
    COLOURS,
    MOTIONS,
    SHAPES,
    Attributes,
    ClipParams,
    ShapesBatch,
    ShapesWorld,
    all_combinations,
    canonical_caption,
    default_held_out,
    paraphrases,
    parse_caption,
    render_clip,
    render_clips,
)

__all__ = [
    "COLOURS",
    "MOTIONS",
    "SHAPES",
    "Attributes",
    "CheckResult",
    "CheckerConfig",
    "ClipParams",
    "FolderVideoDataset",
    "ShapesBatch",
    "ShapesWorld",
    "VideoReadError",
    "VideoSkipWarning",
    "all_combinations",
    "attribute_accuracy",
    "canonical_caption",
    "check_clips",
    "default_held_out",
    "paraphrases",
    "parse_caption",
    "read_captions",
    "render_clip",
    "render_clips",
]
