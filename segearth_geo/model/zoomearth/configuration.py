"""ZoomEarth's protocol constants, as its official inference script runs it (``/work/shared/spec/zoomearth_model.md``).

ZoomEarth (``HappyBug/ZoomEarth-3B``, Apache-2.0) is a fine-tune of Qwen2.5-VL-3B-Instruct that looks at a
downscaled whole image, names the region an instruction is about with one ``bbox_2d`` box, and would then answer
on the crop. Here it is a **localizer**: stage 1 only (the box), the crop is segmented by the run's segmenter.

The stage-1 text is ``PREFIX + question + BODY + TAIL`` with the strings below copied verbatim from the official
``src/eval/infer.py`` (spec §2.2; their sha256 are in :data:`SHA256` and tested), tokenised as one string
without the chat template; the image is the whole area, long side :data:`OVERVIEW_SIDE` (512) px, resized with
PIL's bicubic filter; the processor's ``max_pixels``/``min_pixels`` are the official ones, so its smart resize
only rounds the image to multiples of 28 px. Decoding is greedy, at most :data:`MAX_NEW_TOKENS` tokens, stopping
at either end token (:data:`STOP_IDS`).
"""

from __future__ import annotations

import hashlib

MODEL_TYPES = ("qwen2_5_vl",)
ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)
OVERVIEW_SIDE = 512  # long side of the stage-1 image (infer.py resize_image(max_size=512))
READ_SIDE = 2048  # the engine reads the area at most this large, then resizes it (bicubic) to OVERVIEW_SIDE
CROP_SIDE = 512  # the official zoom window: boxes narrower or lower than this get a 512-px window (cut_image)
MAX_PIXELS = 128 * 128 * 28 * 28  # processor max_pixels in infer.py (= the Qwen default, 12,845,056)
MIN_PIXELS = 3136  # processor min_pixels (the Qwen default)
MIN_SIDE = 30  # the RL resizer keeps the short side at least this long (smart_resize refuses < 28 px)
MAX_NEW_TOKENS = 1024
STOP_IDS = (151645, 151643)  # <|im_end|>, <|endoftext|>: SFT targets end with the latter, the chat with the former
IMAGE_PAD = "<|image_pad|>"

PREFIX = ("\n<|im_start|>system\nYou are a helpful assistant. <|im_end|>\n<|im_start|>user\n"
          "<|vision_start|><|image_pad|><|vision_end|>")

BODY = """
You are an intelligent remote sensing analyst.
Given a natural language question about a satellite image, generate a structured reasoning answer as follows:
1. <think> ... </think>
    - Provide a neutral one-sentence description of the whole image scene.
    - Cropping task: "This question is asking about <short intent>, therefore I need to crop the image to examine the surroundings of the mentioned target."
    - Non-cropping task: "This question is asking about <short intent>, therefore I need to analyze the entire image without cropping."
    - Include:
        * Question Intent: describe the type of question (object category, spatial relation, count, etc.) and needed visual info.
        * Localization Strategy:
            - Cropping: approximate referent object location in natural language (no coordinates).
            - Non-cropping: strategy to detect all relevant objects.      * Reasoning Result:
    - Cropping: output exactly one JSON-formatted bbox for the referent:          [{"bbox_2d": [x_min,y_min,x_max,y_max], "label": "<short description>"}]
    - Non-cropping: summarize how detected objects will be used to produce the count.
2. <think> ... </think> (only when saw the cropped image)
    - Explain how to reason step by step from the referent (or detected objects) to the final answer.\x20
3. <answer> ... </answer>
    - Your final answer, use a single word or phrase.
Rules:\x20
    - Always return exactly one <answer> block, for tasks that need cropping, you can provide the bounding box of the object you are intrested, after given the cropped image, you can generate another <think> block to find the answer.\x20
    - For cropping tasks, also include a bounidng box in <stage_2_reasoning> block\x20
    - If unsure about localization, make a best guess\u2014never say uncertain.
"""  # noqa: E501 - verbatim protocol text

TAIL = "<|im_end|><|im_start|>assistant\n"  # infer.py's (no newline between the tags); RL used "<|im_end|>\n<|im..."

# sha256 of the protocol strings as the spec gives them (§2.2).
SHA256 = {
    "prefix": "b0cb73ce8835a5ac7a93411ec396722eec91ad297a381f1ff0a043fc94768232",
    "body": "2d22cd98e361b7084bb7eab76eeece9c78f1260ce11288327b123e07f4f3594e",
    "body+tail": "b6917f357e4f40b6fe5525b71fefcf0dd343adcdf77b54145fddaa097179dee7",
}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = ["ARCHITECTURES", "BODY", "CROP_SIDE", "IMAGE_PAD", "MAX_NEW_TOKENS", "MAX_PIXELS", "MIN_PIXELS", "MIN_SIDE",
           "MODEL_TYPES", "OVERVIEW_SIDE", "PREFIX", "READ_SIDE", "SHA256", "STOP_IDS", "TAIL", "digest"]
