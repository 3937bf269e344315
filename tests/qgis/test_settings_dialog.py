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
