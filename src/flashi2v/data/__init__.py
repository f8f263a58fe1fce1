"""Training data: clip index, probing and filtering, clip decoding, the dataset and a resumable sampler.

Typical use by the trainer::

    records = load_clip_index("clips.jsonl")
    records, counts = filter_clips(records, FilterConfig(num_frames=49, fps=16))
    dataset = VideoClipDataset(records, DataConfig())
    sampler = ResumableSampler(len(dataset), rank, world_size, seed)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, collate_fn=collate_clips, num_workers=4)
"""

from flashi2v.data.dataset import DataConfig, SkipLog, TensorClips, VideoClipDataset, collate_clips
from flashi2v.data.decode import decode_clip
from flashi2v.data.index import ClipRecord, load_clip_index, save_clip_index
from flashi2v.data.media import ClipError, frames_needed, source_indices
from flashi2v.data.probe import FilterConfig, VideoInfo, filter_clips, probe_video
from flashi2v.data.sampler import ResumableSampler

__all__ = [
    "ClipError",
    "ClipRecord",
    "DataConfig",
    "FilterConfig",
    "ResumableSampler",
    "SkipLog",
    "TensorClips",
    "VideoClipDataset",
    "VideoInfo",
    "collate_clips",
    "decode_clip",
    "filter_clips",
    "frames_needed",
    "load_clip_index",
    "probe_video",
    "save_clip_index",
    "source_indices",
]
