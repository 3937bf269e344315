"""The settings dialog's model field: the known models to pick from, or any other spec typed in."""

from __future__ import annotations


def test_model_field_lists_the_known_models_and_keeps_free_text(qgis_app):
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import MODEL_ALIASES, SettingsDialog

    dialog = SettingsDialog(None, EngineSettings(command="segearth-geo", model="/data/ckpt/my-r1", device="cpu"))
    combo = dialog.model_combo
    assert combo.isEditable()
    assert [combo.itemText(i) for i in range(combo.count())] == list(MODEL_ALIASES)
    assert dialog.engine_settings().model == "/data/ckpt/my-r1"  # the stored spec is shown, not replaced
    combo.setCurrentIndex(MODEL_ALIASES.index("sam3"))
    assert dialog.engine_settings().model == "sam3"
    dialog.model_edit.setText("  org/some-checkpoint ")
    assert dialog.engine_settings().model == "org/some-checkpoint"
    assert combo.count() == len(MODEL_ALIASES)  # typed text is not added to the list
    dialog.model_edit.setText("")
    assert dialog.engine_settings().model == EngineSettings().model


def test_load_options_round_trip_through_the_dialog_and_reach_the_worker(qgis_app):
    """Each load option shows "default" until set; set ones become the worker's own options, and a real worker
    started with them loads the model (or refuses an option the model does not take, in one line)."""
    from conftest import engine_command
    from engine_models import COLOUR_MODEL
    from segearth_qgis.core.engine_client import EngineClient, EngineError, EngineSettings
    from segearth_qgis.settings_dialog import SettingsDialog, load_engine_settings, save_engine_settings

    plain = SettingsDialog(None, EngineSettings(command="segearth-geo"))
    assert plain.engine_settings() == EngineSettings(command="segearth-geo")  # untouched: every option unset
    assert plain.score_spin.text() == "default" and plain.cache_spin.text() == "default"
    chosen = EngineSettings(command="segearth-geo", model="sam3", device="cpu", dtype="bfloat16", batch_size=4,
                            score_threshold=0.3, cache_mb=0.0, template=None)
    assert SettingsDialog(None, chosen).engine_settings() == chosen
    save_engine_settings(chosen)
    assert load_engine_settings() == chosen
    argv = chosen.load_flags()
    assert argv == ["--dtype", "bfloat16", "--batch-size", "4", "--score-threshold", "0.3", "--cache-mb", "0.0"]
    save_engine_settings(EngineSettings())

    good = EngineClient(EngineSettings(command=engine_command(), model=COLOUR_MODEL, device="cpu", batch_size=2))
    try:
        assert good.start(timeout=120)["type"] == "ready"
    finally:
        good.stop()
    refused = EngineClient(EngineSettings(command=engine_command(), model="demo", device="cpu", score_threshold=0.3))
    try:
        refused.start(timeout=120)
        raise AssertionError("the demo model must refuse a score threshold")
    except EngineError as exc:
        assert "does not take" in str(exc) and "score_threshold" in str(exc).replace("-", "_")
    finally:
        refused.stop()


def _answer_file_dialog(path: str) -> None:
    """Once a file dialog is open, choose ``path`` in it (a real QFileDialog: Qt's own under offscreen)."""
    from qgis.PyQt.QtCore import QMetaObject, QTimer
    from qgis.PyQt.QtWidgets import QApplication, QFileDialog

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            QTimer.singleShot(20, answer)
            return
        if dialog.fileMode() == QFileDialog.FileMode.Directory:
            dialog.setDirectory(path)
        else:
            dialog.selectFile(path)
        QMetaObject.invokeMethod(dialog, "accept")  # the dialog's own accept: it checks and keeps the choice

    QTimer.singleShot(0, answer)


def test_browse_chooses_the_engine_program_and_a_checkpoint_folder(qgis_app, tmp_path):
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import SettingsDialog

    program = tmp_path / "my env" / "bin" / "segearth-geo"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    dialog = SettingsDialog(None, EngineSettings(command="segearth-geo", model="demo"))
    _answer_file_dialog(str(program))
    dialog.command_browse.click()
    assert dialog.command_edit.text() == f"'{program}'"  # quoted: the path has a space; the command is split
    assert dialog.engine_settings().program() == [str(program)]
    _answer_file_dialog(str(checkpoint))
    dialog.model_browse.click()
    assert dialog.engine_settings().model == str(checkpoint)
    assert dialog.model_hint.text() == "a checkpoint folder: the engine picks the backend from its config.json"


def test_the_model_field_says_what_each_model_is_for_and_the_demos_notice(qgis_app):
    from qgis.PyQt.QtCore import Qt
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import MODEL_ALIASES, SettingsDialog

    dialog = SettingsDialog(None, EngineSettings(command="segearth-geo", model="demo"))
    assert dialog.model_hint.text().startswith("synthetic demo — not for real imagery")
    assert "b35900" in dialog.model_hint.styleSheet()
    uses = {"segearth-r1-rrsisd": "one described object", "segearth-r1-earthreason": "questions",
            "sam3": "every instance of a class"}
    for alias, use in uses.items():
        dialog.model_combo.setCurrentIndex(MODEL_ALIASES.index(alias))
        assert dialog.model_hint.text().startswith(use) and dialog.model_hint.styleSheet() == ""
        tooltip = dialog.model_combo.itemData(MODEL_ALIASES.index(alias), Qt.ItemDataRole.ToolTipRole)
        assert use in tooltip and "trained on" in tooltip
    assert "trained on 0.1–2 m/px" in dialog.model_hint.text()  # sam3, the last one
    dialog.model_edit.setText("https://gpu-box:8765")
    assert dialog.model_hint.text().startswith("a model server")


def _tested(dialog) -> str:
    from test_plugin import wait_for

    dialog.test_button.click()
    assert not dialog.test_button.isEnabled()  # QGIS goes on; the engine runs in a background task
    wait_for(lambda: dialog.probe_task is None, 180)
    assert dialog.test_button.isEnabled()
    return dialog.probe_label.text()


def test_test_engine_shows_the_version_the_device_and_the_downloaded_models(qgis_app):
    import re
    from pathlib import Path

    from conftest import REPO, engine_command
    from qgis.PyQt.QtCore import Qt
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import MODEL_ALIASES, SettingsDialog

    version = re.search(r'__version__ = "([^"]+)"', Path(REPO, "segearth_geo", "_version.py").read_text())[1]
    dialog = SettingsDialog(None, EngineSettings(command=engine_command(), model="demo", device="cpu"))
    text = _tested(dialog)
    assert text.startswith(f"✓ segearth-geo {version} · device: cpu")
    assert "downloaded: demo" in text
    assert dialog.model_hint.text().endswith("· downloaded: yes")  # the demo is bundled
    tooltip = dialog.model_combo.itemData(MODEL_ALIASES.index("sam3"), Qt.ItemDataRole.ToolTipRole)
    assert "hub id: facebook/sam3" in tooltip and "downloaded: " in tooltip


def test_test_engine_says_in_one_line_why_the_engine_cannot_run(qgis_app, tmp_path):
    import sys

    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import SettingsDialog

    dialog = SettingsDialog(None, EngineSettings(command=str(tmp_path / "nowhere" / "segearth-geo")))
    text = _tested(dialog)
    assert text.startswith("✗ Engine program ") and "not found" in text and "\n" not in text
    assert "b35900" in dialog.probe_label.styleSheet()
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    dialog.command_edit.setText(f"{sys.executable} {slow}")
    dialog.probe_timeout = 1
    assert _tested(dialog).endswith("did not answer within 1 s; check the engine command")
