"""The WhisperX runner: transcribe jobs for one transcription model profile (`whisperx`
unless a profiles file names others), each call sent to one of the profile's endpoints."""

from __future__ import annotations

from marshmallow import ValidationError

from ai_service.inputs import BUILT_IN, as_text
from ai_service.profiles import TRANSCRIPTION, task_types_of
from ai_service.providers.endpoints import EndpointPicker
from ai_service.providers.http import Aborted, AbortSignal, ProviderError
from ai_service.providers.whisperx import WhisperXClient
from ai_service.rows import JobRow
from ai_service.states import ErrorCategory
from worker.runners import Completed, Failed, Outcome, outcome_of_error

TASK_TYPES = task_types_of(TRANSCRIPTION)


class WhisperXRunner:
    def __init__(self, profile: str, endpoints: EndpointPicker[WhisperXClient]) -> None:
        self.endpoints = endpoints
        self.task_types = TASK_TYPES
        self.model_profiles = frozenset({profile})

    def run(self, job: JobRow, signal: AbortSignal) -> Outcome:
        try:
            options = BUILT_IN["transcribe"].load(job.input)
        except ValidationError as exc:
            return Failed(ErrorCategory.INVALID_INPUT, as_text(exc.normalized_messages(), "input"))
        audio_url = options.pop("audio_url")
        try:
            return Completed(self.endpoints.call(
                lambda client: client.transcribe(audio_url, options, signal)))
        except (ProviderError, Aborted) as exc:
            return outcome_of_error(exc)
