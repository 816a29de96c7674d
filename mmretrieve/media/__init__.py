"""Media decoding: images, video frame sampling, audio windows, and writers for tests and benchmarks."""
from .audio import AudioClip, audio_from_array, audio_windows, load_audio
from .image import MAX_IMAGE_PIXELS, as_rgb_array, load_image
from .video import (
    VideoClip,
    VideoInfo,
    VideoSampling,
    decode_all_frames,
    iter_video_clips,
    probe_video,
    sample_video,
    video_from_array,
)
from .windows import fixed_windows, uniform_times
from .write import write_audio, write_image, write_video

__all__ = [
    "AudioClip",
    "audio_from_array",
    "audio_windows",
    "load_audio",
    "MAX_IMAGE_PIXELS",
    "as_rgb_array",
    "load_image",
    "VideoClip",
    "VideoInfo",
    "VideoSampling",
    "decode_all_frames",
    "iter_video_clips",
    "probe_video",
    "sample_video",
    "video_from_array",
    "fixed_windows",
    "uniform_times",
    "write_audio",
    "write_image",
    "write_video",
]
