"""Clients for the AI backends: an OpenAI-compatible LLM server and a WhisperX service."""
