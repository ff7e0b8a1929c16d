"""model-gateway: an OpenAI-compatible LLM gateway that routes by policy."""

__version__ = "0.1.0"
