"""The plugin's run options (``qgis_plugin/.../core/parameters.py::RUN_OPTIONS``) against the engine's rules: every
option is a ``SegmentParams`` field of the same kind and range, the plugin's "acts only with" and "exclude each other"
are the engine's own rules, and what the plugin sends is accepted by the engine (issues 19 and 22). Also the SAM3
load options of the settings (``EngineSettings``). Pure Python: the plugin's ``core`` needs no QGIS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segearth_geo.errors import UsageError
from segearth_geo.params import BACKEND_OPTIONS, SAM3_OUTPUTS, LoadOptions, SegmentParams, rule_of
from segearth_geo.postprocess import DEFAULT_REGULARIZE_IOU

PLUGIN = Path(__file__).resolve().parents[1] / "qgis_plugin"
CLI = [sys.executable, "-m", "segearth_geo_cli.main"]
RULE_KINDS = {"float": "number", "int": "count", "flag": "flag", "choice": "choice", "text": "text"}


@pytest.fixture(scope="module")
def core():
    sys.path.insert(0, str(PLUGIN))
    try:
        from segearth_qgis.core import engine_client, parameters

        yield parameters, engine_client
    finally:
        sys.path.remove(str(PLUGIN))


def _defaults(parameters) -> dict:
    return {o.name: o.default for o in parameters.RUN_OPTIONS}


def test_every_run_option_is_an_engine_field_of_the_same_kind_and_range(core):
    parameters, _ = core
    names = [o.name for o in parameters.RUN_OPTIONS]
    assert len(set(names)) == len(names) and set(names) <= set(SegmentParams.names())
    assert {"regularize", "regularize_iou", "smooth", "strategy", "zoom_model", "min_coverage"} <= set(names)
    for option in parameters.RUN_OPTIONS:
        rule = rule_of(SegmentParams, option.name)
        assert rule.kind == RULE_KINDS[option.kind], option.name
        if option.kind == "choice":
            assert option.choices == rule.choices, option.name
        if option.kind in ("float", "int"):  # the spin box's range lies within the rule's
            assert rule.low is None or option.minimum >= rule.low, option.name
            assert rule.high is None or option.maximum <= rule.high, option.name
        value = option.request_value(option.default)
        if value is not None:  # a default that is sent is one the engine takes
            assert rule.coerce(value) == value, option.name
    by_name = {o.name: o for o in parameters.RUN_OPTIONS}
    assert by_name["threshold"].default == SegmentParams().threshold
    assert by_name["regularize_iou"].default == DEFAULT_REGULARIZE_IOU  # the widget shows what the engine applies
    assert by_name["strategy"].beside == "gsd"  # the choice next to the GSD
    assert {o.name for o in parameters.RUN_OPTIONS if o.advanced} == {"regularize_iou", "zoom_model", "min_coverage"}


def test_the_default_form_sends_only_the_threshold_and_the_engine_takes_every_form(core):
    parameters, _ = core
    defaults = _defaults(parameters)
    assert parameters.request_options(defaults) == {"threshold": 0.5}  # the rest: the engine's defaults
    forms = [
        {"strategy": "zoom", "zoom_model": "zoomearth", "min_coverage": 0.25},
        {"strategy": "auto", "min_coverage": 0.1},
        {"regularize": True, "regularize_iou": 0.6, "min_area": 20.0},
        {"smooth": True, "simplify": 0.5, "gsd": 0.3},
    ]
    for changes in forms:
        fields = parameters.request_options({**defaults, **changes})
        assert parameters.run_option_problems({**defaults, **changes}) == []
        assert fields == {"threshold": 0.5, **changes}
        assert SegmentParams.from_request(fields).to_dict() == {**SegmentParams().to_dict(), **fields}


@pytest.mark.parametrize("changes, words", [
    ({"min_coverage": 0.3}, "Min coverage acts only with Strategy zoom or auto: choose one of them or reset Min "
                            "coverage."),
    ({"zoom_model": "zoomearth"}, "Zoom model acts only with Strategy zoom or auto"),
    ({"regularize_iou": 0.5}, "Regularize IoU bound acts only with Regularize: turn it on or reset Regularize IoU "
                              "bound."),
])
def test_an_option_that_acts_only_with_another_is_left_out_and_changed_it_is_a_problem(core, changes, words):
    parameters, _ = core
    values = {**_defaults(parameters), **changes}
    [name] = changes
    with pytest.raises(UsageError, match="acts only with"):  # the engine's own rule, which the plugin mirrors
        SegmentParams.from_request({name: changes[name]})
    assert name not in parameters.request_options(values)  # the dock (its editor disabled) leaves it out
    problems = parameters.run_option_problems(values)  # Processing refuses a changed value in one line
    assert len(problems) == 1 and problems[0].startswith(words), problems
    # Left at its default while inactive it is no problem (Processing's IoU bound shows 0.75 without Regularize).
    assert parameters.run_option_problems(_defaults(parameters)) == []


def test_regularize_and_smooth_exclude_each_other_in_the_plugin_as_in_the_engine(core):
    parameters, _ = core
    with pytest.raises(UsageError, match="exclude each other"):
        SegmentParams(regularize=True, smooth=True).check()
    by_name = {o.name: o for o in parameters.RUN_OPTIONS}
    assert by_name["regularize"].excludes == ("smooth",) and by_name["smooth"].excludes == ("regularize",)
    both = {**_defaults(parameters), "regularize": True, "smooth": True}
    assert parameters.run_option_problems(both) == ["Regularize and Smooth exclude each other; choose one."]
    with pytest.raises(ValueError, match="only a flag"):
        parameters.RunOption("threshold", "Threshold", excludes=("smooth",))


def test_raster_outputs_are_named_next_to_the_geopackage_and_sent(core, tmp_path):
    parameters, _ = core
    params = parameters.SegmentParameters(raster="s.tif", prompt="p", output=str(tmp_path / "run_1.gpkg"))
    assert "raster_out" not in params.to_request() and "overwrite" not in params.to_request()
    params.write_rasters_beside()
    request = params.to_request()
    assert request["raster_out"] == str(tmp_path / "run_1_probability.tif")
    assert request["labels_out"] == str(tmp_path / "run_1_labels.tif")
    checked = SegmentParams.from_request(request)
    assert (checked.raster_out, checked.labels_out) == (request["raster_out"], request["labels_out"])


def test_the_sam3_load_options_are_the_engines_and_reach_the_worker_as_its_flags(core):
    _, engine_client = core
    settings = engine_client.EngineSettings(model="demo", device="cpu", sam3_output="semantic", presence_threshold=0.3)
    assert set(engine_client.EngineSettings.LOAD_OPTIONS) <= set(LoadOptions.names())
    assert {"sam3_output", "presence_threshold"} <= set(BACKEND_OPTIONS) & set(engine_client.EngineSettings.LOAD_OPTIONS)
    assert engine_client.SAM3_OUTPUTS == SAM3_OUTPUTS
    flags = settings.load_flags()
    assert flags == ["--sam3-output", "semantic", "--presence-threshold", "0.3"]
    # The demo model refuses them in one line (the worker's start-up error), before any request.
    run = subprocess.run([*CLI, "worker", "--model", "demo", "--device", "cpu", *flags], input="", capture_output=True,
                         text=True, timeout=300)
    [startup] = [json.loads(line) for line in run.stdout.splitlines()][:1]
    assert startup["type"] == "error" and "does not take" in startup["message"], startup
    assert "sam3_output" in startup["message"].replace("-", "_") and "\n" not in startup["message"]
