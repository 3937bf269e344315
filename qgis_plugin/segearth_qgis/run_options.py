"""The dock's run options: one form row per :class:`~.core.parameters.RunOption` of ``RUN_OPTIONS``.

The request's run fields come from :meth:`RunOptionsWidget.request_fields` only; a new engine run parameter is one
line in ``core/parameters.py::RUN_OPTIONS`` and appears here (and in Processing) without other code: advanced options
in a collapsed "Advanced" group, an option ``beside`` another in that one's row, an option that acts only with
another's value disabled otherwise (and left out of the request), excluding flags cleared when one is checked.
"""

from __future__ import annotations

from typing import Any

from qgis.gui import QgsCollapsibleGroupBox, QgsDoubleSpinBox, QgsSpinBox
from qgis.PyQt.QtCore import QCoreApplication, pyqtSignal
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from .core.parameters import RUN_OPTIONS, RunOption, request_options


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def _editor(option: RunOption) -> QWidget:
    """The widget of one option, showing its default."""
    if option.kind in ("float", "int"):
        number = float if option.kind == "float" else int
        spin = QgsDoubleSpinBox() if option.kind == "float" else QgsSpinBox()
        if option.kind == "float":
            spin.setDecimals(option.decimals)
        spin.setRange(number(option.minimum), number(option.maximum))
        spin.setSingleStep(number(option.step))
        if option.unset is not None:
            spin.setSpecialValueText(tr(option.unset_text))
            spin.setClearValue(number(option.unset))
        spin.setSuffix(option.suffix)
        spin.setValue(number(option.default or 0))
        return spin
    if option.kind == "choice":
        combo = QComboBox()
        combo.addItems(list(option.choices))
        combo.setCurrentText(str(option.default or option.choices[0]))
        return combo
    if option.kind == "flag":
        box = QCheckBox()
        box.setChecked(bool(option.default))
        return box
    edit = QLineEdit(str(option.default or ""))
    edit.setPlaceholderText(tr(option.unset_text))
    return edit


class RunOptionsWidget(QWidget):
    """A form of the run options; ``changed`` is emitted whenever one of them is edited."""

    changed = pyqtSignal()

    def __init__(self, options: tuple[RunOption, ...] = RUN_OPTIONS, parent=None) -> None:
        super().__init__(parent)
        self.options = options
        self.editors: dict[str, QWidget] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        outer.addLayout(form)
        self.advanced = QgsCollapsibleGroupBox(tr("Advanced"))
        self.advanced.setObjectName("segearth_advanced_run_options")
        advanced_form = QFormLayout(self.advanced)
        outer.addWidget(self.advanced)
        self.rows: dict[str, QHBoxLayout] = {}  # option name → its form row (options `beside` it share the row)
        rows = self.rows
        for option in options:
            editor = _editor(option)
            editor.setObjectName(f"run_option_{option.name}")
            editor.setToolTip(tr(option.tooltip))
            signal = {"choice": "currentTextChanged", "flag": "toggled", "text": "textChanged"}.get(option.kind,
                                                                                                "valueChanged")
            if option.excludes:  # before `changed`, so listeners see the other flags already cleared
                editor.toggled.connect(lambda on, o=option: self._exclude(o, on))
            getattr(editor, signal).connect(lambda *_: self.changed.emit())
            self.editors[option.name] = editor
            if option.beside in rows:  # e.g. the strategy in the GSD's row
                label = QLabel(tr(option.label))
                label.setToolTip(tr(option.tooltip))
                rows[option.beside].addWidget(label)
                rows[option.beside].addWidget(editor, 1)
                continue
            rows[option.name] = QHBoxLayout()
            rows[option.name].addWidget(editor, 1)
            (advanced_form if option.advanced else form).addRow(tr(option.label), rows[option.name])
        self.advanced.setCollapsed(True)
        self.advanced.setVisible(any(option.advanced for option in options))
        self.changed.connect(self._enable)
        self._enable()

    def _exclude(self, option: RunOption, on: bool) -> None:
        """Checking ``option`` clears the flags it excludes (regularize and smooth)."""
        if on:
            for name in option.excludes:
                if name in self.editors:
                    self.editors[name].setChecked(False)

    def _enable(self) -> None:
        """An option that acts only with another's value is enabled only then (``RunOption.only_with``)."""
        values = self.values()
        for option in self.options:
            self.editors[option.name].setEnabled(option.active(values))

    def values(self) -> dict[str, Any]:
        """``{name: widget value}`` of every option."""
        return {name: self.value(name) for name in self.editors}

    def value(self, name: str) -> Any:
        """The widget value of option ``name`` (the unset value included)."""
        editor = self.editors[name]
        if isinstance(editor, QComboBox):
            return editor.currentText()
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QLineEdit):
            return editor.text()
        return editor.value()

    def set_value(self, name: str, value: Any) -> None:
        editor = self.editors[name]
        if isinstance(editor, QComboBox):
            editor.setCurrentText(str(value))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QLineEdit):
            editor.setText(str(value))
        else:
            editor.setValue(value)

    def request_fields(self) -> dict[str, Any]:
        """The ``segment`` request's run fields: every option that is set, under its engine name."""
        return request_options(self.values(), self.options)
