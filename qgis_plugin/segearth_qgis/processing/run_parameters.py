"""The run options (``core/parameters.py::RUN_OPTIONS``) as Processing parameters, named ``option.name.upper()``
(``GSD``, ``STRATEGY``, ``THRESHOLD``, ``MIN_AREA``, …; advanced options among the advanced parameters), and their
values as request fields — for both algorithms. Values that do not go together (Regularize and Smooth; Min coverage
with strategy grid) are refused in one line before any work."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..core.parameters import RUN_OPTIONS, RunOption, request_options, run_option_problems


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def _description(option: RunOption) -> str:
    """``"GSD (m/px, 0 = native)"``: the label, its unit and what the unset value means."""
    notes = [option.suffix.strip()] if option.suffix.strip() else []
    if option.unset is not None and option.kind in ("float", "int"):
        notes.append(f"{option.unset:g} = {tr(option.unset_text)}")
    return tr(option.label) + (f" ({', '.join(notes)})" if notes else "")


def run_parameter(option: RunOption) -> QgsProcessingParameterDefinition:
    """The Processing parameter of one run option."""
    name, text = option.name.upper(), _description(option)
    if option.kind in ("float", "int"):
        kind = (QgsProcessingParameterNumber.Type.Double if option.kind == "float"
                else QgsProcessingParameterNumber.Type.Integer)
        parameter = QgsProcessingParameterNumber(name, text, kind, option.default, False, option.minimum,
                                                 option.maximum)
    elif option.kind == "choice":
        parameter = QgsProcessingParameterEnum(name, text, list(option.choices), False,
                                               option.choices.index(option.default) if option.default else 0)
    elif option.kind == "flag":
        parameter = QgsProcessingParameterBoolean(name, text, bool(option.default))
    else:
        parameter = QgsProcessingParameterString(name, text, option.default, optional=True)
    parameter.setHelp(tr(option.tooltip))
    if option.advanced:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return parameter


def add_run_parameters(algorithm: QgsProcessingAlgorithm, options: tuple[RunOption, ...] = RUN_OPTIONS) -> None:
    for option in options:
        algorithm.addParameter(run_parameter(option))


def check_run_values(algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any], context,
                     options: tuple[RunOption, ...] = RUN_OPTIONS) -> tuple[bool, str]:
    """``(ok, message)`` for ``checkParameterValues``: values that do not go together, in one line (the Processing
    dialog shows it before the run; ``processing.run`` raises it)."""
    problems = run_option_problems(run_values(algorithm, parameters, context, options), options)
    return not problems, " ".join(problems)


def run_fields(algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any], context,
               options: tuple[RunOption, ...] = RUN_OPTIONS) -> dict[str, Any]:
    """The request's run fields from the algorithm's ``parameters``: unset and inactive options left out.

    Raises:
        QgsProcessingException: values that do not go together (:func:`run_option_problems`), in one line.
    """
    values = run_values(algorithm, parameters, context, options)
    problems = run_option_problems(values, options)
    if problems:
        raise QgsProcessingException(" ".join(problems))
    return request_options(values, options)


def run_values(algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any], context,
               options: tuple[RunOption, ...] = RUN_OPTIONS) -> dict[str, Any]:
    """``{name: value}`` of the run options in the algorithm's ``parameters`` (as the dock's widget values)."""
    values: dict[str, Any] = {}
    for option in options:
        name = option.name.upper()
        if option.kind == "float":
            values[option.name] = algorithm.parameterAsDouble(parameters, name, context)
        elif option.kind == "int":
            values[option.name] = algorithm.parameterAsInt(parameters, name, context)
        elif option.kind == "choice":
            values[option.name] = option.choices[algorithm.parameterAsEnum(parameters, name, context)]
        elif option.kind == "flag":
            values[option.name] = algorithm.parameterAsBoolean(parameters, name, context)
        else:
            values[option.name] = algorithm.parameterAsString(parameters, name, context)
    return values
