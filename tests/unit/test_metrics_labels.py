"""Which label values a process keeps: those its configuration names; the rest are `other`."""

from __future__ import annotations

from ai_service.config import load_settings
from ai_service.metrics import BUILTIN_TASK_TYPES, KnownLabels, category_label
from worker.runners import llm, whisperx

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/ai"}


def test_the_built_in_task_types_are_those_the_built_in_runners_take() -> None:
    assert BUILTIN_TASK_TYPES == llm.TASK_TYPES | whisperx.TASK_TYPES


def test_configured_task_types_and_profiles_keep_their_labels_the_rest_are_other() -> None:
    known = KnownLabels.of(load_settings({
        **BASE, "LLM_MODEL": "qwen3-32b", "MODEL_CONCURRENCY": "vision=2",
        "METRICS_TASK_TYPES": "call_analysis", "METRICS_MODEL_PROFILES": "embed",
    }))
    assert known.job("llm_chat", "qwen3-32b") == ("llm_chat", "qwen3-32b")
    assert known.job("transcribe", "whisperx") == ("transcribe", "whisperx")
    assert known.job("call_analysis", "vision") == ("call_analysis", "vision")
    assert known.job("chat_completion", "embed") == ("chat_completion", "embed")
    assert known.job("x7f3a", "qwen2.5-14b") == ("other", "other")


def test_documented_failure_categories_keep_their_label_the_rest_are_other() -> None:
    assert category_label("rate_limited") == "rate_limited"
    assert category_label("made-up-by-a-caller") == "other"
