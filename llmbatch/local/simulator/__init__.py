"""The OpenAI-compatible endpoint simulator (:mod:`.core`)."""
