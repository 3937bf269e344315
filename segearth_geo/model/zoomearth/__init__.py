"""ZoomEarth (Qwen2.5-VL-3B fine-tune): the zoom strategy's localizer backend (spec: /work/shared/spec/zoomearth_model.md)."""
