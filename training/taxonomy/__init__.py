"""LLM intent taxonomy: an LLM names the intents of clickstream sessions and labels sessions.

Importing this package is cheap: no model is loaded and no LLM runtime is imported until a call is made.
"""
