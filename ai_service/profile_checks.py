"""A new job checked at create against the model profiles the web knows, so that a job no
worker of this service would run well is a 422 now, not a failure (or a wait) later.

What the web knows is what the worker reads: MODEL_PROFILES_FILE, else the profiles the
`LLM_*` and `WHISPERX_*` settings define. The rules:
- a built-in task type must fit its profile's kind (`transcribe` a transcription profile,
  `llm_chat` and `chat_completion` a chat one): the worker would fail it as invalid_input;
- a chat job must fit its profile's `context_tokens` (ai_service/context_window.py): the worker
  would fail it as context_length_exceeded;
- with the file, a built-in task type naming a profile the file lacks is refused: the file is
  the registry of the profiles this service's workers serve, so no worker would claim the job.
  Without the file an unknown name is accepted: a worker configured otherwise, or a remote
  worker on the claim API, may serve it.
Any other task type is a remote worker's, with profiles of its own: it is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ai_service.context_window import overflow
from ai_service.profiles import CHAT, KIND_OF_TASK_TYPE, Profile


@dataclass(frozen=True)
class ProfileCheck:
    profiles: Mapping[str, Profile]
    # True with MODEL_PROFILES_FILE: then a name outside it is no profile of this service.
    complete: bool

    def errors(self, job: Mapping[str, Any]) -> dict[str, list[str]]:
        """A new job's errors by field, as the schemas word them; empty when it may run."""
        task_type, name = job["task_type"], job["model_profile"]
        kind = KIND_OF_TASK_TYPE.get(task_type)
        if kind is None:
            return {}
        profile = self.profiles.get(name)
        if profile is None:
            if not self.complete:
                return {}
            known = ", ".join(sorted(self.profiles))
            return {"model_profile": [f"no such model profile (configured: {known})"]}
        if profile.kind != kind:
            return {"model_profile": [f"{name} is a {profile.kind} profile, which takes no "
                                      f"{task_type} jobs"]}
        if kind == CHAT:
            too_long = overflow(job["input"], profile.context_tokens)
            if too_long:
                return {"input": [too_long]}
        return {}
