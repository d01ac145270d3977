"""The two HTTP APIs a WhisperX service speaks, as the upload each wants for a job's options.

- `asr-webservice` (whisper-asr-webservice, engine whisperx): `POST {url}/asr` with the audio
  as multipart `audio_file` and everything else in the query: `task`, `language`, `diarize`,
  `min_speakers`, `max_speakers`, `output=json`.
- `openai` (the OpenAI audio API, as OpenAI, speaches and whisperx-api-server serve it):
  `POST {url}/v1/audio/transcriptions`, multipart `file`, `model`, `language`,
  `response_format=verbose_json` and `timestamp_granularities[]` segment and word, so that
  words come with their times. A translation goes to `/v1/audio/translations`, which takes
  neither a language nor timestamp granularities.

Both answers become one shape (transcripts.normalise). Which API a service speaks is a value
given to the client, so that each model profile can have its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

ASR_WEBSERVICE = "asr-webservice"
OPENAI = "openai"
APIS = (ASR_WEBSERVICE, OPENAI)


@dataclass(frozen=True)
class Upload:
    """Where and how to send the audio: `file_field` names the multipart part holding it."""

    url: str
    file_field: str
    params: dict[str, str] = field(default_factory=dict)
    form: dict[str, str | list[str]] = field(default_factory=dict)


class TranscriptionApi(Protocol):
    name: str

    def upload(self, options: dict[str, Any]) -> Upload: ...


def _wire(value: Any) -> str:
    """A query or form value as FastAPI reads a boolean: `true`, not Python's `True`."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class AsrWebservice:
    name = ASR_WEBSERVICE
    OPTIONS = ("language", "diarize", "min_speakers", "max_speakers")

    def __init__(self, base_url: str, asr_path: str) -> None:
        self.url = base_url.rstrip("/") + "/" + asr_path.lstrip("/")

    def upload(self, options: dict[str, Any]) -> Upload:
        params = {"task": options.get("task") or "transcribe", "output": "json"}
        params.update({key: _wire(options[key]) for key in self.OPTIONS
                       if options.get(key) is not None})
        return Upload(self.url, "audio_file", params=params)


class OpenAIAudio:
    name = OPENAI

    def __init__(self, base_url: str, model: str) -> None:
        # OpenAI-compatible base URLs are written with or without /v1 (LLM_BASE_URL has it).
        root = base_url.rstrip("/")
        self.root = root if root.endswith("/v1") else root + "/v1"
        self.model = model

    def upload(self, options: dict[str, Any]) -> Upload:
        form: dict[str, str | list[str]] = {"model": self.model,
                                            "response_format": "verbose_json"}
        if options.get("task") == "translate":
            return Upload(self.root + "/audio/translations", "file", form=form)
        form["timestamp_granularities[]"] = ["segment", "word"]
        if options.get("language"):
            form["language"] = options["language"]
        if options.get("diarize"):
            # Not OpenAI's own field: whisperx-api-server's, sent only when asked for.
            form["diarize"] = "true"
        return Upload(self.root + "/audio/transcriptions", "file", form=form)


def transcription_api(name: str, base_url: str, asr_path: str, model: str) -> TranscriptionApi:
    if name == OPENAI:
        return OpenAIAudio(base_url, model)
    if name == ASR_WEBSERVICE:
        return AsrWebservice(base_url, asr_path)
    raise ValueError(f"unknown transcription API {name!r}; use one of {', '.join(APIS)}")
