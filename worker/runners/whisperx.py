"""The WhisperX runner: transcribe jobs for the model profile whisperx."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from ai_service.inputs import BUILT_IN, as_text
from ai_service.providers.http import Aborted, AbortSignal, ProviderError
from ai_service.providers.whisperx import WhisperXClient
from ai_service.states import ErrorCategory
from worker.runners import Completed, Failed, Outcome, outcome_of_error

TASK_TYPES = frozenset({"transcribe"})
MODEL_PROFILE = "whisperx"


class WhisperXRunner:
    def __init__(self, client: WhisperXClient) -> None:
        self.client = client
        self.task_types = TASK_TYPES
        self.model_profiles = frozenset({MODEL_PROFILE})

    def run(self, job: dict[str, Any], signal: AbortSignal) -> Outcome:
        try:
            options = BUILT_IN["transcribe"].load(job.input)
        except ValidationError as exc:
            return Failed(ErrorCategory.INVALID_INPUT, as_text(exc.normalized_messages(), "input"))
        audio_url = options.pop("audio_url")
        try:
            return Completed(self.client.transcribe(audio_url, options, signal))
        except (ProviderError, Aborted) as exc:
            return outcome_of_error(exc)
