"""The WhisperX runner: transcribe jobs for the model profile whisperx."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from ai_service.providers.http import Aborted, AbortSignal, ProviderError
from ai_service.providers.whisperx import WhisperXClient
from worker.runners import Completed, Failed, Outcome, outcome_of_error

TASK_TYPES = frozenset({"transcribe"})
MODEL_PROFILE = "whisperx"


class TranscribeInputSchema(Schema):

    class Meta:
        unknown = EXCLUDE  # callers may keep their own keys in input; they are not sent
    audio_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    language = fields.String(validate=validate.Length(min=2, max=16))
    diarize = fields.Boolean()
    min_speakers = fields.Integer(validate=validate.Range(1, 50))
    max_speakers = fields.Integer(validate=validate.Range(1, 50))

    @validates_schema
    def _speakers(self, data: dict[str, Any], **_: Any) -> None:
        low, high = data.get("min_speakers"), data.get("max_speakers")
        if low is not None and high is not None and low > high:
            raise ValidationError("min_speakers is above max_speakers")


class WhisperXRunner:
    def __init__(self, client: WhisperXClient) -> None:
        self.client = client
        self.task_types = TASK_TYPES
        self.model_profiles = frozenset({MODEL_PROFILE})

    def run(self, job: dict[str, Any], signal: AbortSignal) -> Outcome:
        try:
            options = TranscribeInputSchema().load(job["input"])
        except ValidationError as exc:
            return Failed("invalid_input", f"input: {exc.messages}")
        audio_url = options.pop("audio_url")
        try:
            return Completed(self.client.transcribe(audio_url, options, signal))
        except (ProviderError, Aborted) as exc:
            return outcome_of_error(exc)
