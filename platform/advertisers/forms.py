"""The admin's upload form: the same three optional files and options as `manage.py ingest`."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.core.validators import FileExtensionValidator
from django.utils.text import get_valid_filename

FILE_FIELDS = ("scenarios", "advertisers", "stats")


def _file_field(label: str, example: str) -> forms.FileField:
    return forms.FileField(
        label=label,
        required=False,
        validators=[FileExtensionValidator(["csv", "parquet"])],
        help_text=f"{example}.csv or {example}.parquet",
    )


class DataUploadForm(forms.Form):
    scenarios = _file_field("Scenarios", "scenarios")
    advertisers = _file_field("Advertisers", "advertisers")
    stats = _file_field("Daily stats", "daily_stats")
    ignore_unknown_columns = forms.BooleanField(
        required=False,
        help_text="Skip columns the data contract does not define instead of rejecting the file.",
    )
    allow_implausible = forms.BooleanField(
        required=False,
        help_text=(
            "Load implausible values (clicks above impressions, a date after today, stats before "
            "a launch or a registration) and list them as warnings instead of rejecting the file."
        ),
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        if not any(cleaned.get(name) for name in FILE_FIELDS):
            raise forms.ValidationError("Choose at least one file to load.")
        return cleaned

    def save_files(self, folder: Path) -> dict[str, Path]:
        """Write the uploaded files under `folder`, keeping their names (problems cite them)."""
        saved: dict[str, Path] = {}
        for name in FILE_FIELDS:
            upload = self.cleaned_data.get(name)
            if not upload:
                continue
            target = folder / name / get_valid_filename(Path(upload.name).name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                for chunk in upload.chunks():
                    out.write(chunk)
            saved[name] = target
        return saved
